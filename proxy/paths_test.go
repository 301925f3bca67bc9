package proxy

import (
	"net/http"
	"testing"
)

func TestCheckPath(t *testing.T) {
	for _, ok := range []string{"", "/", "/org/repo.git/info/refs", "/api/v4/projects/group%2Fproject", "/a/..b/c..", "/.well-known/x", "/a/%2e%2ex"} {
		if err := CheckPath(ok); err != nil {
			t.Errorf("CheckPath(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"/..", "/a/../b", "/a/./b", "/%2e%2e/b", "/%2E%2E/b", "/..%2fb", "/a%2f..%2fb", "/%252e%252e/b",
		"/%25252e%25252e/b", `/..\b`, `/a\..\b`, "/..;/b", "/.;x/b", "/a%00b", "/a%zz", "/%2525252e"} {
		err := CheckPath(bad)
		if code, _ := Status(err); code != http.StatusBadRequest {
			t.Errorf("CheckPath(%q) = %v, want a 400 refusal", bad, err)
		}
	}
}

func TestVerbFor(t *testing.T) {
	for method, want := range map[string]string{"GET": "get", "HEAD": "get", "OPTIONS": "get", "POST": "create", "PUT": "update",
		"PATCH": "patch", "DELETE": "delete", "PROPFIND": "create", "MKCOL": "create", "LOCK": "create", "FROB": "create"} {
		if got, ok := VerbFor(method); !ok || got != want {
			t.Errorf("VerbFor(%s) = %q %v, want %q", method, got, ok, want)
		}
	}
	for _, never := range []string{"TRACE", "TRACK", "trace", "CONNECT"} {
		if _, ok := VerbFor(never); ok {
			t.Errorf("VerbFor(%s) is proxied", never)
		}
	}
}
