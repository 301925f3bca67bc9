package driver

import (
	"strings"
	"testing"
)

func TestWebhookListenIsHostPort(t *testing.T) {
	base := Options{Role: RoleController, VolumeSizeLimit: "4Mi", ApprovalWait: 1, RequestRetention: 1, StatusRecheck: 1,
		KubeAPIQPS: 1, KubeAPIBurst: 1, TokenAudience: "a"}
	for listen, want := range map[string]string{"": "", ":9443": "", "127.0.0.1:8443": "", "9443": "not host:port", ":0": "port must be", ":http": "port must be"} {
		o := base
		o.WebhookListen = listen
		v, err := o.validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("--webhook-listen %q: %v, want %q", listen, err, want)
		}
		if want == "" && listen != "" && (v.WebhookService != defaultWebhookService || v.WebhookConfiguration != defaultWebhookConfiguration || v.WebhookCARecheck != defaultWebhookCARecheck) {
			t.Errorf("--webhook-listen %q: unset webhook options not defaulted: %+v", listen, v.Options)
		}
	}
}
