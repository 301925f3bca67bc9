package access

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"
)

// Guard serves next only to a client whose bearer token the API server accepts and whose user
// may, by RBAC, use the request's path as a non-resource URL with the request's method as the
// verb: "get" on "/metrics", as the API server guards its own /metrics (a ClusterRole rule
// nonResourceURLs: ["/metrics"], verbs: [get]). The Reviewer's caches and precheck stand
// between clients and the API server, so a scrape costs a review once per cache period and a
// made-up token none.
//
// Written here rather than with k8s.io/apiserver's delegating authentication filters: those
// send a TokenReview for every token not in their cache, made-up ones included, through the
// client they are given; the Reviewer refuses what the issuer did not sign without asking.
func Guard(r *Reviewer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !canonicalPath(req.URL) {
			// The access asked about is the path served: one that cleans to another, or
			// escapes its own characters, is refused rather than asked about as written.
			http.Error(w, "the path is not in canonical form", http.StatusBadRequest)
			return
		}
		token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			refuseGuarded(w, http.StatusUnauthorized, "no token: send a bearer token of a ServiceAccount that may get "+req.URL.Path)
			return
		}
		u, ok, err := r.AuthenticateToken(req.Context(), token)
		switch {
		case err != nil:
			klog.FromContext(req.Context()).Error(err, "Cannot review a token", "path", req.URL.Path)
			refuseGuarded(w, http.StatusServiceUnavailable, "cannot review the token now")
			return
		case !ok:
			refuseGuarded(w, http.StatusUnauthorized, "token not accepted: invalid, expired, or not a ServiceAccount's")
			return
		}
		verb := strings.ToLower(req.Method) // as the API server names a non-resource request's verb
		// Asked of the user's name and groups only: RBAC decides by those, and a token's extra
		// (its credential ID) would make each new token of one user a new question.
		who := &user.DefaultInfo{Name: u.GetName(), Groups: u.GetGroups()}
		decision, _, err := r.Authorize(req.Context(), authorizer.AttributesRecord{User: who, Verb: verb, Path: req.URL.Path})
		switch {
		case err != nil:
			klog.FromContext(req.Context()).Error(err, "Cannot review an access", "user", u.GetName(), "path", req.URL.Path)
			refuseGuarded(w, http.StatusServiceUnavailable, "cannot review the access now")
		case decision != authorizer.DecisionAllow:
			refuseGuarded(w, http.StatusForbidden, fmt.Sprintf("%s may not %s %s", u.GetName(), verb, req.URL.Path))
		default:
			next.ServeHTTP(w, req)
		}
	})
}

// canonicalPath tells whether u's path is as the API server would match it: clean (no "//",
// ".", "..": net/http's mux redirects most, not those under a subtree handler) and written
// without escapes.
func canonicalPath(u *url.URL) bool {
	clean := path.Clean(u.Path)
	if strings.HasSuffix(u.Path, "/") && clean != "/" {
		clean += "/"
	}
	return u.RawPath == "" && clean == u.Path
}

func refuseGuarded(w http.ResponseWriter, code int, msg string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="connectors-csi"`)
	}
	http.Error(w, msg, code)
}
