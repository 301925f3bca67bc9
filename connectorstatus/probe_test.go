package connectorstatus

import (
	"strings"
	"testing"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestProbeURLErrorsQuoteNoPath: a probe path a class renders from a Secret (a token with a
// trailing newline) that is no URL path is refused without quoting it: the error becomes the
// Connector's status message.
func TestProbeURLErrorsQuoteNoPath(t *testing.T) {
	_, err := probeURL("https://tool.example.com", &v1alpha1.HTTPProbe{}, "/api/v4/user?private_token=glpat-SECRET\n&per_page=1")
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("probeURL: %v, want an error that does not quote the path", err)
	}
}
