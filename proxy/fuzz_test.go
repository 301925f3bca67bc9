package proxy

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzProxyCredentials feeds Proxy-Authorization values a tenant controls to the parser: it
// must never panic, and what it accepts must name Connectors as namespace/name.
func FuzzProxyCredentials(f *testing.F) {
	f.Fuzz(func(t *testing.T, value string) {
		h := http.Header{}
		h.Set("Proxy-Authorization", value)
		connectors, _, err := proxyCredentials(h)
		if err != nil {
			return
		}
		for _, nn := range connectors {
			if nn.Namespace == "" || nn.Name == "" || strings.Contains(nn.Namespace, "/") {
				t.Fatalf("%q gave Connector %q", value, nn)
			}
		}
	})
}

// FuzzCoverage feeds request paths to the coverage decision: whatever CheckPath accepts and
// covers places under an address must stay under it however a tool decodes and cleans it.
func FuzzCoverage(f *testing.F) {
	addr, _ := url.Parse("https://git.example.com/org-a")
	f.Fuzz(func(t *testing.T, escaped string) {
		target, err := url.Parse("https://git.example.com" + escaped)
		if err != nil || target.Host != "git.example.com" {
			return
		}
		if CheckPath(target.EscapedPath()) != nil || !covers(addr, target) {
			return
		}
		p := target.EscapedPath()
		for range MaxDecodings + 2 { // a tool that decodes more than once still stays under /org-a
			cleaned := path.Clean(strings.ReplaceAll(p, `\`, "/"))
			if cleaned != "/org-a" && !strings.HasPrefix(cleaned, "/org-a/") {
				t.Fatalf("%q is covered by %s but resolves to %q", escaped, addr, cleaned)
			}
			decoded, err := url.PathUnescape(p)
			if err != nil || decoded == p {
				return
			}
			p = decoded
		}
	})
}
