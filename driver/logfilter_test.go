package driver

import (
	"strings"
	"testing"
)

func TestRedactBodies(t *testing.T) {
	msg, kv := redactBodies{}.FilterS("Response Body", []any{"body", `{"data":{"tls.key":"secret"}}`, "other", 1})
	if msg != "Response Body" || strings.Contains(kv[1].(string), "secret") || kv[3] != 1 {
		t.Fatalf("FilterS = %q %v", msg, kv)
	}
	if _, kv := (redactBodies{}).FilterS("CSI call", []any{"body", "kept"}); kv[1] != "kept" {
		t.Fatalf("other messages changed: %v", kv)
	}
}
