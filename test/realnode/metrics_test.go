//go:build realnode

package realnode

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// selfSignedClient reads the drivers' metrics listeners, whose certificates they make
// themselves at start (the PodMonitor's insecureSkipVerify).
var selfSignedClient = &http.Client{Timeout: 10 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed by design

// metricsReaderToken applies deploy/monitoring/metrics-reader.yaml and returns the token
// kube-controller-manager's token controller puts in its Secret, which the PodMonitor sends:
// a ServiceAccount token without exp.
func metricsReaderToken(t *testing.T) string {
	t.Helper()
	file := filepath.Join(controlplane.RepoRoot(), "deploy", "monitoring", "metrics-reader.yaml")
	if out, err := node.CP.Kubectl(nil, "apply", "-f", file); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var token string
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		sec, err := node.CP.Kube.CoreV1().Secrets(SystemNamespace).Get(context.Background(), "connectors-csi-metrics-reader-token", metav1.GetOptions{})
		if err != nil {
			return false
		}
		token = string(sec.Data["token"])
		return token != ""
	}) {
		t.Fatalf("the token controller did not fill metrics-reader.yaml's Secret\n--- controller manager ---\n%s", node.tail("controller-manager"))
	}
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[min(1, len(parts)-1)])
	var claims map[string]any
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		t.Fatalf("the Secret's token is not a JWT")
	}
	if _, ok := claims["exp"]; ok {
		t.Fatalf("the Secret's token has an exp: not the kind this reads")
	}
	return token
}
