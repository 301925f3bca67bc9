package connectorsapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestLinkWriterKeepsPagingOnTheAPI(t *testing.T) {
	parse := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		base, target, apiPath, link, want string
	}{
		// a registry's next page, from its root
		{"http://reg:5000", "http://reg:5000/v2/team/app/tags/list?n=2", "/v2/team/app/tags/list",
			`</v2/team/app/tags/list?last=v2&n=2>; rel="next"`, `<../../../../v2/team/app/tags/list?last=v2&n=2>; rel="next"`},
		// a forge's full URLs under an address with a path, two links in one value
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects?page=1", "/v4/projects",
			`<https://git.example.com/api/v4/projects?page=2>; rel="next", <https://git.example.com/api/v4/projects?page=9>; rel="last"`,
			`<../v4/projects?page=2>; rel="next", <../v4/projects?page=9>; rel="last"`},
		// elsewhere, or not strict RFC 8288: dropped, with the links of its value
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects", "/v4/projects",
			`<https://cdn.example.com/x>; rel="next"`, ``},
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects", "/v4/projects",
			`</other/x>; rel="next"`, ``},
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects", "/v4/projects",
			`<https://git.example.com/api/v4/projects?page=2>; rel="next", <https://evil.example/x>; rel="last"`, ``},
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects", "/v4/projects",
			`https://evil.example/x; rel="next"`, ``},
		// a first segment with a colon stays a path
		{"http://reg:5000", "http://reg:5000/a:b", "/a:b", `</a:b?page=2>`, `<./a:b?page=2>`},
		// a path of the tool's that starts with empty segments stays a path, not another host
		{"https://tool.example", "https://tool.example/projects", "/projects", `<https://tool.example///attacker.example/steal?x=1>`,
			`<.///attacker.example/steal?x=1>`},
	} {
		rec := httptest.NewRecorder()
		lw := newLinkWriter(rec, parse(tc.base), parse(tc.target), tc.apiPath)
		lw.Header().Set("Link", tc.link)
		lw.WriteHeader(http.StatusOK)
		if got := rec.Header().Get("Link"); got != tc.want {
			t.Errorf("%s on %s: Link %s, want %s", tc.link, tc.target, got, tc.want)
		}
	}
}

// TestLinkWriterKeepsRedirectsOnTheAPI: a redirect within the Connector's address becomes a
// reference relative to the request; one away is answered 502, naming the host, without its
// Location or body; another answer's Location elsewhere is dropped; a tool's challenge is not
// passed on (it would have a client send the caller's credential, or prompt for one).
func TestLinkWriterKeepsRedirectsOnTheAPI(t *testing.T) {
	base, _ := url.Parse("https://git.example.com/api")
	target, _ := url.Parse("https://git.example.com/api/v4/projects")
	for _, tc := range []struct {
		code                 int
		location             string
		wantCode             int
		wantLocation, inBody string
	}{
		{http.StatusFound, "https://git.example.com/api/v4/projects?page=2", http.StatusFound, "../v4/projects?page=2", "moved"},
		{http.StatusFound, "https://attacker.example/x", http.StatusBadGateway, "", "attacker.example"},
		{http.StatusMovedPermanently, "/elsewhere", http.StatusBadGateway, "", "git.example.com"},
		{http.StatusCreated, "https://cdn.example.com/x", http.StatusCreated, "", "moved"},
	} {
		rec := httptest.NewRecorder()
		lw := newLinkWriter(rec, base, target, "/v4/projects")
		lw.Header().Set("Location", tc.location)
		lw.Header().Set("WWW-Authenticate", `Bearer realm="https://attacker.example/token"`)
		lw.WriteHeader(tc.code)
		_, _ = lw.Write([]byte("moved"))
		if rec.Code != tc.wantCode || rec.Header().Get("Location") != tc.wantLocation || !strings.Contains(rec.Body.String(), tc.inBody) {
			t.Errorf("%d to %s: %d, Location %q, body %q; want %d, Location %q, a body naming %q", tc.code, tc.location,
				rec.Code, rec.Header().Get("Location"), rec.Body.String(), tc.wantCode, tc.wantLocation, tc.inBody)
		}
		if got := rec.Header().Get("WWW-Authenticate"); got != "" {
			t.Errorf("%d: the tool's challenge was passed on: %s", tc.code, got)
		}
	}
}
