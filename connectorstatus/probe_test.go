package connectorstatus

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

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

// TestProbeTemplateErrorsQuoteNoValue: a class's probe template that fails on a Secret's value
// (text/template's own errors quote it: "range can't iterate over <value>"; a function's error
// may too) names where it failed, not what it read: the error becomes the Connector's status
// message, which whoever may get the Connector reads.
func TestProbeTemplateErrorsQuoteNoValue(t *testing.T) {
	data := templateData{Secret: &corev1.Secret{StringData: map[string]string{"token": "glpat-SECRET"},
		Data: map[string][]byte{"token": []byte("glpat-SECRET")}}}
	for _, text := range []string{
		`{{ range .Secret.StringData.token }}x{{ end }}`,
		`{{ index .Secret.StringData.token 99 }}`,
		`{{ eq .Secret.StringData.token 1 }}`,
	} {
		_, err := renderProbe("path", text, data)
		if err == nil || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "does not render") {
			t.Errorf("%s: %v, want an error naming the field, not the value", text, err)
		}
	}
}
