package features

import "testing"

func TestParseDefaultsAndValues(t *testing.T) {
	if f := Parse(nil); f.ProxyPermissions || f.Approval || !f.MultiConnector {
		t.Fatalf("defaults %+v", f)
	}
	f := Parse(map[string]string{"enable-connector-proxy-permissions": "true", "enable-connectors-approval": "true",
		"enable-multi-connector": "false", "enable-connector-apis-permissions": "not-a-bool"})
	if !f.ProxyPermissions || !f.Approval || !f.ApprovalEffective() || f.MultiConnector || f.APIsPermissions {
		t.Fatalf("parsed %+v", f)
	}
	if (Flags{Approval: true}).ApprovalEffective() {
		t.Fatal("approval without proxy permissions is effective")
	}
	var s Source
	if s.Flags() != Parse(nil) {
		t.Fatal("an empty Source does not give the defaults")
	}
}
