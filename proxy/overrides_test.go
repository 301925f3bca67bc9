package proxy

import (
	"bufio"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// overrideCases are requests and the connectors/proxy verbs they need: each place a framework
// takes a method from, in the spellings it reads, and near misses that override nothing.
var overrideCases = []struct {
	name      string
	head      string // the request line's method and target, then header lines
	verbs     []string
	overrides bool // MethodOverride names one
}{
	{"plain GET", "GET /x?service=git-upload-pack", []string{"get"}, false},
	{"header", "GET /x\r\nX-HTTP-Method-Override: DELETE", []string{"get", "delete"}, true},
	{"header, lower-case method (Rack upper-cases it)", "GET /x\r\nX-Method-Override: delete", []string{"get", "delete"}, true},
	{"header with underscores", "GET /x\r\nX_HTTP_METHOD_OVERRIDE: PUT", []string{"get", "update"}, true},
	{"header mixing both", "GET /x\r\nx-http_method: patch", []string{"get", "patch"}, true},
	{"header naming a read", "POST /x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-HTTP-Method-Override: GET", []string{"create"}, true},
	{"query", "GET /x?_method=DELETE", []string{"get", "delete"}, true},
	{"query after ';'", "GET /x?a=1;_method=patch", []string{"get", "patch"}, true},
	{"query, name escaped", "GET /x?%5Fm%65thod=DELETE", []string{"get", "delete"}, true},
	{"query, value escaped", "GET /x?_method=%44ELETE", []string{"get", "delete"}, true},
	{"query, name upper-case", "GET /x?_METHOD=DELETE", []string{"get", "delete"}, true},
	{"query, PHP's leading space dropped", "GET /x?+%20_method=DELETE", []string{"get", "delete"}, true},
	{"query, PHP's '.' for '_'", "GET /x?.method=PUT", []string{"get", "update"}, true},
	{"query without a value", "GET /x?_method", []string{"get", "create"}, true},
	{"query, another name", "GET /x?x_method=DELETE&_methods=DELETE&method=DELETE&q=_method", []string{"get"}, false},
	{"a form's body is not read", "POST /x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14", []string{"create"}, false},
	{"header naming several methods (Express takes the first)", "POST /x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-HTTP-Method-Override: DELETE, GET", []string{"create", "delete"}, true},
	{"query, PHP ends a name at NUL", "GET /x?_method%00=DELETE", []string{"get", "delete"}, true},
	{"query, PHP ends a name at NUL, without a value", "GET /x?_method%00x", []string{"get", "create"}, true},
	{"query, NUL before the whole name", "GET /x?_meth%00od=DELETE", []string{"get"}, false},
	{"upgrade", "GET /x\r\nConnection: Upgrade\r\nUpgrade: websocket", []string{"create"}, false},
	{"upgrade that overrides", "POST /x?_method=DELETE\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-HTTP-Method-Override: PATCH", []string{"create", "patch", "delete"}, true},
}

func TestMethodOverridesAreReadAsFrameworksReadThem(t *testing.T) {
	for _, tc := range overrideCases {
		t.Run(tc.name, func(t *testing.T) {
			r := overrideRequest(t, tc.head)
			needed, err := useVerbs(r)
			if err != nil {
				t.Fatal(err)
			}
			var verbs []string
			for _, v := range needed {
				verbs = append(verbs, v.verb)
				if (v.why == "") != (v.verb == needed[0].verb) {
					t.Errorf("verb %s: why %q", v.verb, v.why)
				}
			}
			if !slices.Equal(verbs, tc.verbs) {
				t.Errorf("verbs %v, want %v", verbs, tc.verbs)
			}
			if overrides := MethodOverride(r); (overrides != "") != tc.overrides {
				t.Errorf("MethodOverride %q, want one: %v", overrides, tc.overrides)
			}
		})
	}
}

func TestOverridesNamingAMethodNeverProxiedAreRefused(t *testing.T) {
	for _, head := range []string{"GET /x\r\nX-HTTP-Method-Override: trace", "GET /x?_method=TRACK"} {
		_, err := useVerbs(overrideRequest(t, head))
		if rf, ok := err.(*refusal); !ok || rf.status != http.StatusMethodNotAllowed {
			t.Errorf("%q: %v, want a 405", head, err)
		}
	}
}

// TestTheFastLaneLeavesOverridesToTheFullPath: routes are remembered by the method's verb, so
// a request that may be run as another method is never read in place nor by the lane's
// parsed path, and the full path asks its verbs.
func TestTheFastLaneLeavesOverridesToTheFullPath(t *testing.T) {
	for _, tc := range overrideCases {
		if strings.Contains(tc.head, "Transfer-Encoding") || strings.Contains(tc.head, "Upgrade") {
			continue // left to the full path whatever they override
		}
		t.Run(tc.name, func(t *testing.T) {
			line, fields, _ := strings.Cut(tc.head, "\r\n")
			method, target, _ := strings.Cut(line, " ")
			head := method + " /namespaces/team/connectors/git" + target + " HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer tok\r\n"
			if fields != "" {
				head += fields + "\r\n"
			}
			head += "\r\n"
			overrides := tc.overrides
			var h laneHead
			if got := readLaneHead([]byte(head), &h, false); got == overrides {
				t.Errorf("read in place: %v, want %v", got, !overrides)
			}
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
			if err != nil {
				t.Fatal(err)
			}
			if got := laneRequest(r); got == overrides {
				t.Errorf("taken by the lane's parsed path: %v, want %v", got, !overrides)
			}
		})
	}
}

// overrideRequest reads a request of head (its request line without the protocol, then
// header lines) as net/http's server would.
func overrideRequest(t *testing.T, head string) *http.Request {
	t.Helper()
	line, fields, _ := strings.Cut(head, "\r\n")
	raw := line + " HTTP/1.1\r\nHost: tool\r\n"
	if fields != "" {
		raw += fields + "\r\n"
	}
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReadAsPrefixedBy(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Plugin-Meta": true, "X_Plugin_Meta": true, "x-plugin_secret": true, "X-PLUGIN-": true,
		"X-Plugin": false, "X-Plugins-Meta": false, "Y-Plugin-Meta": false, "": false,
	} {
		if got := ReadAsPrefixedBy(name, "X-Plugin-"); got != want {
			t.Errorf("ReadAsPrefixedBy(%q) = %v, want %v", name, got, want)
		}
	}
}
