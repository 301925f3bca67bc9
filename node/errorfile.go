package node

import (
	"encoding/json"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-connectors/connectors-csi/render"
)

// errorFileName is the only file of a volume whose AccessRequest was rejected (SPEC §3.5).
const errorFileName = ".error.json"

// errorFile is the rejected volume: a google.rpc.Status in JSON naming the AccessRequest and
// the check that rejected it.
func errorFile(adm *Admission) (render.Files, error) {
	b, err := json.MarshalIndent(map[string]any{
		"code":    int(codes.PermissionDenied),
		"message": "AccessRequest " + adm.AccessRequest + " was rejected: " + adm.Message,
		"details": []map[string]any{{
			"@type":    "type.googleapis.com/google.rpc.ErrorInfo",
			"reason":   "ACCESS_REQUEST_REJECTED",
			"domain":   "connectors.alauda.io",
			"metadata": map[string]string{"accessRequest": adm.AccessRequest, "check": adm.Message},
		}},
	}, "", "  ")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode %s: %v", errorFileName, err)
	}
	return render.Files{errorFileName: append(b, '\n')}, nil
}
