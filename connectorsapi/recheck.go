package connectorsapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/proxy"
)

// callGrants is what a call was allowed: its caller's token and user, and each permission an
// allowing answer settled (get on the Connector, the connectors/apis or connectors/proxy grant
// that allowed its verb). A call whose answer streams on (a tool's watch, a followed log, a
// class's API service that long-polls) is checked again with exactly these while it lasts
// (Server.guard): computing its verb again could mean reading a body that is already on its
// way.
type callGrants struct {
	token string
	user  user.Info

	mu      sync.Mutex
	allowed []authorizer.AttributesRecord
}

type callGrantsKey struct{}

// withCallGrants returns r with an empty record of what its call is allowed, for token's user.
func withCallGrants(r *http.Request, token string, u user.Info) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callGrantsKey{}, &callGrants{token: token, user: u}))
}

// recordAllowed notes that attrs were allowed to ctx's call, if it keeps a record.
func recordAllowed(ctx context.Context, attrs authorizer.AttributesRecord) {
	if g, ok := ctx.Value(callGrantsKey{}).(*callGrants); ok {
		g.mu.Lock()
		g.allowed = append(g.allowed, attrs)
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
		u := g.user
		// Its age alone ends no call the token began, as at the proxy; a token the cluster
		// refuses before it expires (its ServiceAccount deleted) does.
		if !access.ExpiredToken(g.token, time.Now()) {
			again, ok, err := s.Reviewer.AuthenticateToken(ctx, g.token)
			switch {
			case err != nil:
				return nil
			case !ok:
				return proxy.Refused(http.StatusUnauthorized, "the caller's token is no longer accepted")
			}
			u = again
		}
		g.mu.Lock()
		allowed := g.allowed
		g.mu.Unlock()
		for _, attrs := range allowed {
			attrs.User = u
			if d, _, err := s.Reviewer.Authorize(ctx, attrs); err == nil && d != authorizer.DecisionAllow {
				return proxy.Refused(http.StatusForbidden, u.GetName()+" may no longer "+attrs.Verb+" "+resourceOf(attrs)+" of Connector "+attrs.Namespace+"/"+attrs.Name)
			}
		}
		return nil
	}
}

// resourceOf names attrs' resource as the API's refusals do: connectors, or connectors/<sub>.
func resourceOf(attrs authorizer.AttributesRecord) string {
	if attrs.Subresource == "" {
		return attrs.Resource
	}
	return attrs.Resource + "/" + attrs.Subresource
}
