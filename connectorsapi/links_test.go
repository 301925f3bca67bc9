package connectorsapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
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
		// elsewhere: unchanged
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects", "/v4/projects",
			`<https://cdn.example.com/x>; rel="next"`, `<https://cdn.example.com/x>; rel="next"`},
		{"https://git.example.com/api", "https://git.example.com/api/v4/projects", "/v4/projects",
			`</other/x>; rel="next"`, `</other/x>; rel="next"`},
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
