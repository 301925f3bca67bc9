package connectorsapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/proxy"
)

// callGrants is what a call was allowed: its caller's token and user, and each permission it
// needed, with the grants any of which would do (get on the Connector; the request's verb on
// connectors/proxy, connectors/apis, apis/<class> or apis/<class><path>). A call whose answer
// streams on (a tool's watch, a followed log, a class's API service that long-polls) is
// checked again with exactly these while it lasts (Server.guard): computing its verb again
// could mean reading a body that is already on its way.
type callGrants struct {
	token string
	user  user.Info

	mu     sync.Mutex
	needed [][]authorizer.AttributesRecord // each: any one of them allows
}

type callGrantsKey struct{}

// withCallGrants returns r with an empty record of what its call is allowed, for token's user.
func withCallGrants(r *http.Request, token string, u user.Info) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callGrantsKey{}, &callGrants{token: token, user: u}))
}

// recordAllowed notes, if ctx's call keeps a record, that it was allowed a permission any one
// of whose grants would do.
func recordAllowed(ctx context.Context, anyOf ...authorizer.AttributesRecord) {
	if g, ok := ctx.Value(callGrantsKey{}).(*callGrants); ok {
		g.mu.Lock()
		g.needed = append(g.needed, anyOf)
		g.mu.Unlock()
	}
}

// guard ends r's exchange with the tool or the class's API service once its caller is no longer
// allowed what the call was (proxy.GuardAnswer): its token refused, or one of the permissions
// that allowed it denied. stop must be called when the exchange ends.
func (s *Server) guard(r *http.Request) (guarded *http.Request, stop func()) {
	g, ok := r.Context().Value(callGrantsKey{}).(*callGrants)
	if !ok {
		return r.WithContext(r.Context()), func() {}
	}
	ctx, stop := s.Proxy.GuardAnswer(r.Context(), s.stillAllowed(g))
	return r.WithContext(ctx), stop
}

// stillAllowed checks g's call again, from the reviewer's caches; a review that gets no answer
// refuses nothing (the next check asks again).
func (s *Server) stillAllowed(g *callGrants) func(context.Context) error {
	return func(ctx context.Context) error {
		// Unlike a Pod's at the proxy, whose kubelet renews it, a caller's token is whatever
		// the cluster accepts (a person's, a deleted ServiceAccount's): a call ends with it,
		// and a UI calls again with a newer one.
		if access.ExpiredToken(g.token, time.Now()) {
			return proxy.Refused(http.StatusUnauthorized, "the caller's token expired")
		}
		u, ok, err := s.Reviewer.AuthenticateToken(ctx, g.token)
		switch {
		case err != nil:
			return nil
		case !ok:
			return proxy.Refused(http.StatusUnauthorized, "the caller's token is no longer accepted")
		}
		g.mu.Lock()
		needed := g.needed
		g.mu.Unlock()
		for _, anyOf := range needed {
			if refused := s.noneAllows(ctx, u, anyOf); refused != nil {
				return refused
			}
		}
		return nil
	}
}

// noneAllows is the refusal of u when none of anyOf allows u any more, and nil while one does
// or one cannot be asked now.
func (s *Server) noneAllows(ctx context.Context, u user.Info, anyOf []authorizer.AttributesRecord) error {
	var names []string
	for _, attrs := range anyOf {
		attrs.User = u
		d, _, err := s.Reviewer.Authorize(ctx, attrs)
		if err != nil || d == authorizer.DecisionAllow {
			return nil
		}
		names = append(names, resourceOf(attrs))
	}
	first := anyOf[0]
	return proxy.Refused(http.StatusForbidden, fmt.Sprintf("%s may no longer %s %s of Connector %s/%s", u.GetName(), first.Verb,
		strings.Join(names, " nor "), first.Namespace, first.Name))
}

// resourceOf names attrs' resource as the API's refusals do: connectors, or connectors/<sub>.
func resourceOf(attrs authorizer.AttributesRecord) string {
	if attrs.Subresource == "" {
		return attrs.Resource
	}
	return attrs.Resource + "/" + attrs.Subresource
}
