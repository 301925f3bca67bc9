package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http/httpguts"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/klog/v2"
)

// IsUpgrade tells whether a request asks to switch protocols (WebSocket, SPDY, h2c), as
// httputil.ReverseProxy decides it: Connection names upgrade and Upgrade is given. Such a
// request becomes a connection that carries whatever either side sends, for as long as they
// like, which the proxy can no longer check request by request.
func IsUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// upgradeGuard is the client's writer of an upgrade request. When the tool switches protocols
// and ReverseProxy takes the client's connection over (Hijack), the guard bounds what the
// connection can still do: it is closed at the tunnel lifetime, as a CONNECT tunnel is, and
// when a check of the caller, repeated every UpgradeRecheck through the proxy's caches, says
// the token or a permission the request needed is gone (the Pod deleted, a grant revoked).
// A check that fails to get an answer (the API server down) keeps the connection: the next
// one asks again.
type upgradeGuard struct {
	http.ResponseWriter
	p       *Proxy
	ctx     context.Context
	token   string
	nn      types.NamespacedName
	request *http.Request // the upgrade request, whose verbs are asked again
}

// guardUpgrade wraps w for r, an upgrade request along rt.
func (p *Proxy) guardUpgrade(w http.ResponseWriter, r *http.Request, rt *route) http.ResponseWriter {
	return &upgradeGuard{ResponseWriter: w, p: p, ctx: r.Context(), token: rt.token, request: r,
		nn: types.NamespacedName{Namespace: rt.connector.Namespace, Name: rt.connector.Name}}
}

func (g *upgradeGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// Hijack hands the client's connection over, and starts guarding it.
func (g *upgradeGuard) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(g.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	closed := make(chan struct{})
	guarded := &notifyConn{Conn: conn, onClose: func() { close(closed) }}
	go g.guard(guarded, closed)
	return guarded, brw, nil
}

// guard closes conn at the tunnel lifetime or at the first check that refuses the caller.
func (g *upgradeGuard) guard(conn net.Conn, closed <-chan struct{}) {
	lifetime := time.NewTimer(g.p.cfg.TunnelLifetime)
	defer lifetime.Stop()
	recheck := time.NewTicker(g.p.cfg.UpgradeRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-closed:
			return
		case <-g.ctx.Done():
			_ = conn.Close()
			return
		case <-lifetime.C:
			klog.FromContext(g.ctx).V(2).Info("Proxy closed an upgraded connection at the tunnel lifetime", "connector", g.nn)
			_ = conn.Close()
			return
		case <-recheck.C:
			if err := g.p.stillAllowed(g.ctx, g.token, g.nn, g.request); err != nil {
				klog.FromContext(g.ctx).V(2).Info("Proxy closed an upgraded connection", "connector", g.nn, "reason", err.Error())
				_ = conn.Close()
				return
			}
		}
	}
}

// stillAllowed checks again, through the caches, what an upgrade request along nn needed: the
// token, get on the Connector and create on connectors/proxy (with the flag). It returns an
// error only for a refusal, never for a failure to ask.
func (p *Proxy) stillAllowed(ctx context.Context, token string, nn types.NamespacedName, r *http.Request) error {
	u, ok, err := p.reviewer.AuthenticateToken(ctx, token)
	switch {
	case err != nil:
		return nil
	case !ok:
		return refusef(http.StatusUnauthorized, "the token is no longer accepted")
	}
	return p.stillPermitted(ctx, u, nn, r)
}

// stillPermitted is stillAllowed for u, without checking a token again.
func (p *Proxy) stillPermitted(ctx context.Context, u user.Info, nn types.NamespacedName, r *http.Request) error {
	for _, check := range []func() error{
		func() error { return p.authorizeGet(ctx, u, nn) },
		func() error { return p.authorizeUse(ctx, u, nn, r) },
	} {
		var rf *refusal
		if err := check(); errors.As(err, &rf) && rf.status == http.StatusForbidden {
			return err
		}
	}
	return nil
}
