package connectorsapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/proxy"
)

// linkWriter confines a pass-through answer to the Connectors API (confineAnswer) and keeps
// what it points at on the API: a registry's or a forge's next-page link, or a redirect,
// points at the tool (a path from its root, or its full URL), where the client has neither
// route nor credential. Targets under the forwarded base address become references relative to
// the request, which also hold behind a platform prefix such as /clusters-rewrite/<cluster>.
// Others are the tool's to choose, and a client that pages or follows redirects with its own
// Authorization (client-go's transport, a UI's script) would take its Kubernetes token there:
// a Link header naming one, or one that is not strict RFC 8288, is dropped; a redirect to one
// is answered 502, naming the host; another answer's Location naming one is dropped.
type linkWriter struct {
	http.ResponseWriter
	// base is the address the request was forwarded under, target the URL it went to.
	base, target *url.URL
	// depth is how many "../" lead from the request's directory to the Connector's API path.
	depth   int
	written bool
	// refused: the answer was a redirect away, answered 502; its body is not written.
	refused bool
}

func newLinkWriter(w http.ResponseWriter, base, target *url.URL, apiPath string) *linkWriter {
	return &linkWriter{ResponseWriter: w, base: base, target: target, depth: strings.Count(apiPath, "/") - 1}
}

// WriteHeader rewrites the final answer's Link and Location headers and confines it
// (confineAnswer); 1xx answers (Early Hints) keep only their links on the API, and no cookie.
func (l *linkWriter) WriteHeader(code int) {
	if code < http.StatusOK {
		l.Header().Del("Set-Cookie")
		l.Header().Del("Set-Cookie2")
		proxy.KeepLinks(l.Header(), l.relative)
	}
	if !l.written && code >= http.StatusOK {
		l.written = true
		confineAnswer(l.Header())
		proxy.KeepLinks(l.Header(), l.relative)
		if location := l.Header().Get("Location"); location != "" {
			ref, ok := l.relative(location)
			switch {
			case ok:
				l.Header().Set("Location", ref)
			case code >= 300 && code < 400:
				l.refuseRedirect(location)
				return
			default: // a created resource's, elsewhere: the write is done, and is answered
				l.Header().Del("Location")
			}
		}
	}
	l.ResponseWriter.WriteHeader(code)
}

// refuseRedirect answers a redirect to location, away from the Connector's address, with a 502.
func (l *linkWriter) refuseRedirect(location string) {
	l.refused = true
	host := "an address it cannot parse"
	if u, err := l.target.Parse(location); err == nil {
		host = u.Host
	}
	h := l.Header()
	for name := range h {
		delete(h, name)
	}
	proxy.WriteStatus(l.ResponseWriter, http.StatusBadGateway, metav1.StatusReasonInternalError,
		fmt.Sprintf("the tool redirected away from the Connector's address (to %s): not followed, and not passed on", host))
}

func (l *linkWriter) Write(b []byte) (int, error) {
	if !l.written {
		l.WriteHeader(http.StatusOK)
	}
	if l.refused {
		return len(b), nil
	}
	return l.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (ReverseProxy's flushes) reach the connection.
func (l *linkWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// relative maps a target under the base address to a reference relative to the request; ok is
// false for one elsewhere.
func (l *linkWriter) relative(target string) (ref string, ok bool) {
	u, err := l.target.Parse(target)
	if err != nil || !proxy.Covers(l.base, u) {
		return "", false
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(u.EscapedPath(), strings.TrimSuffix(l.base.EscapedPath(), "/")), "/")
	ref = strings.Repeat("../", max(l.depth, 0)) + rest
	if ref == "" || strings.HasPrefix(ref, "/") || strings.Contains(strings.SplitN(ref, "/", 2)[0], ":") {
		// Not empty, not a path from the root or (a tool's ///host) a reference to another
		// host, and no first segment that reads as a scheme.
		ref = "./" + ref
	}
	if u.RawQuery != "" {
		ref += "?" + u.RawQuery
	}
	return ref, true
}
