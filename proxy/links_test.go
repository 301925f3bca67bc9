package proxy

import "testing"

// TestLinksOnProxy: each link-value's <target> goes through onto, its parameters as they are; a
// value that does not start with its target (a bare URL, which Python's requests follows), or
// whose target onto refuses, drops the whole header, also when a quoted parameter holds a
// bracketed decoy, and commas within quotes or targets do not split.
func TestLinksOnProxy(t *testing.T) {
	onto := func(target string) (string, bool) {
		if len(target) >= len("https://tool/") && target[:len("https://tool/")] == "https://tool/" {
			return "http://proxy/" + target[len("https://tool/"):], true
		}
		return "", false
	}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{`<https://tool/p?page=2>; rel="next", <https://tool/p?page=9>; rel="last"`, `<http://proxy/p?page=2>; rel="next", <http://proxy/p?page=9>; rel="last"`, true},
		{`<https://tool/a,b>; title="x, <y>"`, `<http://proxy/a,b>; title="x, <y>"`, true},
		{`<https://tool/a>; title="say \"hi\", then", <https://tool/b>`, `<http://proxy/a>; title="say \"hi\", then", <http://proxy/b>`, true},
		{`https://evil.example/p2; rel="next"`, "", false},
		{`https://evil.example/p2; rel="next"; title="<https://tool/x>"`, "", false},
		{`<https://tool/p>; rel="prev", https://evil.example/p2; rel="next"`, "", false},
		{`<https://evil.example/p2>; rel="next"`, "", false},
		{`<https://tool/p`, "", false},
		{``, "", false},
	} {
		got, ok := linksOnProxy(tc.in, onto)
		if ok != tc.ok || got != tc.want {
			t.Errorf("linksOnProxy(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
