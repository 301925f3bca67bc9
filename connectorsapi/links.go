package connectorsapi

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/kube-connectors/connectors-csi/proxy"
)

// linkTarget is the URI-reference of one link in a Link header (RFC 8288): <uri>; params.
var linkTarget = regexp.MustCompile(`<([^>]*)>`)

// linkWriter rewrites the Link header of a passthrough answer so that a client pages through the
// Connectors API: a registry's or a forge's next-page link points at the tool (a path from its
// root, or its full URL), where the client has neither route nor credential. Targets under the
// forwarded base address become references relative to the request, which also hold behind a
// platform prefix such as /clusters-rewrite/<cluster>; others pass unchanged.
type linkWriter struct {
	http.ResponseWriter
	// base is the address the request was forwarded under, target the URL it went to.
	base, target *url.URL
	// depth is how many "../" lead from the request's directory to the Connector's API path.
	depth   int
	written bool
}

func newLinkWriter(w http.ResponseWriter, base, target *url.URL, apiPath string) *linkWriter {
	return &linkWriter{ResponseWriter: w, base: base, target: target, depth: strings.Count(apiPath, "/") - 1}
}

// WriteHeader rewrites the final answer's Link header and confines it (confineAnswer); 1xx
// answers (Early Hints) pass as they are, but for the cookies they may carry.
func (l *linkWriter) WriteHeader(code int) {
	if code < http.StatusOK {
		l.Header().Del("Set-Cookie")
		l.Header().Del("Set-Cookie2")
	}
	if !l.written && code >= http.StatusOK {
		l.written = true
		confineAnswer(l.Header())
		if links := l.Header().Values("Link"); len(links) > 0 {
			l.Header().Del("Link")
			for _, v := range links {
				l.Header().Add("Link", linkTarget.ReplaceAllStringFunc(v, l.rewrite))
			}
		}
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *linkWriter) Write(b []byte) (int, error) {
	if !l.written {
		l.WriteHeader(http.StatusOK)
	}
	return l.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (ReverseProxy's flushes) reach the connection.
func (l *linkWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// rewrite maps one <target> under the base address to a reference relative to the request.
func (l *linkWriter) rewrite(bracketed string) string {
	u, err := l.target.Parse(bracketed[1 : len(bracketed)-1])
	if err != nil || !proxy.Covers(l.base, u) {
		return bracketed
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(u.EscapedPath(), strings.TrimSuffix(l.base.EscapedPath(), "/")), "/")
	ref := strings.Repeat("../", max(l.depth, 0)) + rest
	if ref == "" || strings.HasPrefix(ref, "/") || strings.Contains(strings.SplitN(ref, "/", 2)[0], ":") {
		// Not empty, not a path from the root or (a tool's ///host) a reference to another
		// host, and no first segment that reads as a scheme.
		ref = "./" + ref
	}
	if u.RawQuery != "" {
		ref += "?" + u.RawQuery
	}
	return "<" + ref + ">"
}
