package proxy

import (
	"net/http"
	"net/url"
	"testing"
)

func TestMergeBody(t *testing.T) {
	fields := map[string]any{"password": "p", "client_id": "c"}
	for _, tc := range []struct{ contentType, in, want string }{
		{"application/json", ``, `{"client_id":"c","password":"p"}`},
		{"application/json", `{"password":"client's","n":1.50}`, `{"client_id":"c","n":1.50,"password":"p"}`},
		{"application/x-www-form-urlencoded", `password=client%27s&grant_type=password`, `client_id=c&grant_type=password&password=p`},
	} {
		got, err := mergeBody(tc.contentType, []byte(tc.in), fields)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s %q: %q %v, want %q", tc.contentType, tc.in, got, err, tc.want)
		}
	}
	if _, err := mergeBody("application/json", []byte(`["not", "an object"]`), fields); err == nil {
		t.Error("a JSON array got fields")
	}
}

// The caller's token leaves the request wherever an authExtractor found it.
func TestDropClientCredentials(t *testing.T) {
	h := http.Header{"Private-Token": {"tok"}, "X-Note": {"carries tok inside"}, "Authorization": {"Basic x"},
		"Proxy-Authorization": {"y"}, "Accept": {"*/*"}}
	dropClientCredentials(h, "tok")
	if len(h) != 1 || h.Get("Accept") != "*/*" {
		t.Errorf("left %v", h)
	}
	q := url.Values{"private_token": {"tok"}, "page": {"2"}}
	if !dropParamsWith(q, "tok") || q.Encode() != "page=2" {
		t.Errorf("query left %q", q.Encode())
	}
	if dropParamsWith(q, "") {
		t.Error("an empty token dropped a parameter")
	}
}
