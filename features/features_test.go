package features

import (
	"strconv"
	"testing"
)

func TestParseDefaultsAndValues(t *testing.T) {
	if f, invalid := Parse(nil, Flags{}); f.ProxyPermissions || f.Approval || f.MultiConnector || len(invalid) != 0 {
		t.Fatalf("defaults %+v %v", f, invalid)
	}
	f, _ := Parse(map[string]string{"enable-connector-proxy-permissions": "true", "enable-connectors-approval": "true",
		"enable-multi-connector": "true"}, defaults)
	if !f.ProxyPermissions || !f.Approval || !f.ApprovalEffective() || !f.MultiConnector || f.APIsPermissions {
		t.Fatalf("parsed %+v", f)
	}
	if (Flags{Approval: true}).ApprovalEffective() {
		t.Fatal("approval without proxy permissions is effective")
	}
	var s Source
	if s.Flags() != defaults {
		t.Fatal("an empty Source does not give the defaults")
	}
	var none *Source
	if none.Flags() != defaults {
		t.Fatal("a nil Source does not give the defaults")
	}
}

func TestInvalidValuesKeepTheLastValidOne(t *testing.T) {
	last := Flags{ProxyPermissions: true, Approval: true, MultiConnector: true}
	f, invalid := Parse(map[string]string{"enable-connector-proxy-permissions": "yes", "enable-connectors-approval": " true",
		"enable-multi-connector": "0"}, last)
	if !f.ProxyPermissions || !f.Approval || f.MultiConnector {
		t.Errorf("parsed %+v, want proxy permissions and approval kept, multi-connector off", f)
	}
	if len(invalid) != 2 || invalid[0] != (Invalid{"enable-connector-proxy-permissions", "yes"}) ||
		invalid[1] != (Invalid{"enable-connectors-approval", " true"}) {
		t.Errorf("invalid %v", invalid)
	}
	// With no valid value yet, an invalid one keeps the default.
	if f, _ := Parse(map[string]string{"enable-multi-connector": "nope"}, defaults); f.MultiConnector {
		t.Error("an invalid value replaced the default")
	}
	// A removed key returns to its default.
	if f, _ := Parse(map[string]string{}, last); f.ProxyPermissions {
		t.Error("a removed key kept its last value")
	}
}

func TestValuesAreEveryFlagAsAString(t *testing.T) {
	f, _ := Parse(nil, Flags{})
	f.APIsWritePassthrough = true
	got := f.Values()
	if len(got) != len(flags) {
		t.Fatalf("%d values for %d flags: %v", len(got), len(flags), got)
	}
	for _, fl := range flags {
		want := strconv.FormatBool(fl.def || fl.key == keyAPIsWritePassthrough)
		if got[fl.key] != want {
			t.Errorf("%s = %q, want %q", fl.key, got[fl.key], want)
		}
	}
}
