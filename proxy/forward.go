package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// maxForwardConnectors bounds the Connectors one proxy user may name.
const maxForwardConnectors = 16

// forwardClient is a forward-proxy client: who it is, its token, and which Connectors it named.
type forwardClient struct {
	user       user.Info
	token      string
	connectors []types.NamespacedName
}

// forwardAuth authenticates Proxy-Authorization. Failures answer 407 with a challenge, so that
// curl and git send their proxy credentials.
func (p *Proxy) forwardAuth(w http.ResponseWriter, r *http.Request) (*forwardClient, bool) {
	ctx := r.Context()
	connectors, token, err := proxyCredentials(r.Header)
	if err == nil && len(connectors) > maxForwardConnectors {
		err = refusef(http.StatusProxyAuthRequired, "more than %d Connectors named", maxForwardConnectors)
	}
	var u user.Info
	if err == nil {
		u, err = p.authenticate(ctx, w, token, http.StatusProxyAuthRequired)
	}
	if err != nil {
		w.Header().Set("Proxy-Authenticate", proxyChallenge)
		refuseErr(ctx, w, err)
		return nil, false
	}
	return &forwardClient{user: u, token: token, connectors: connectors}, true
}

// serveForward proxies an absolute-form request (plain http://) for a forward-proxy client.
func (p *Proxy) serveForward(w http.ResponseWriter, r *http.Request) {
	fc, ok := p.forwardAuth(w, r)
	if !ok {
		return
	}
	rt, err := p.forwardRoute(r, fc, r.URL)
	var notCovered *notCoveredError
	switch {
	case errors.As(err, &notCovered) && p.passthrough.on():
		setMode(w, modePassthrough)
		p.passthrough.serveHTTP(w, r, r.URL)
	case err != nil:
		refuseErr(r.Context(), w, err)
	default:
		p.send(w, r, rt)
	}
}

func (p *Proxy) forwardRoute(r *http.Request, fc *forwardClient, target *url.URL) (*route, error) {
	ctx := r.Context()
	if err := CheckPath(target.EscapedPath()); err != nil {
		return nil, err
	}
	c, class, err := p.matchConnector(ctx, fc, func(addr *url.URL) bool { return covers(addr, target) })
	if err != nil {
		return nil, err
	}
	if err := p.authorizeUse(ctx, fc.user, types.NamespacedName{Namespace: c.Namespace, Name: c.Name}, r); err != nil {
		return nil, err
	}
	out := *target
	rt, err := p.newRoute(ctx, c, class, &out)
	if err != nil {
		return nil, err
	}
	rt.epochShard, rt.token, rt.user, rt.caller = p.podEpochs.shardOf(fc.user), fc.token, fc.user, CallerOf(fc.user)
	return rt, nil
}

// matchConnector returns the first named Connector one of whose addresses satisfies match.
// The client must be allowed to get every Connector it named, checked before any is looked up: a
// stranger learns neither which Connectors exist nor which hosts they cover (SPEC §4.7).
func (p *Proxy) matchConnector(ctx context.Context, fc *forwardClient, match func(*url.URL) bool) (*v1alpha1.Connector, *v1alpha1.ConnectorClass, error) {
	for _, nn := range fc.connectors {
		if err := p.authorizeGet(ctx, fc.user, nn); err != nil {
			return nil, nil, err
		}
	}
	var names []string
	for _, nn := range fc.connectors {
		c, class, err := p.connector(ctx, nn)
		if err != nil {
			return nil, nil, err
		}
		for _, addr := range parsedAddresses(c) {
			if match(addr) {
				return c, class, nil
			}
		}
		names = append(names, nn.String())
	}
	return nil, nil, &notCoveredError{refusal: &refusal{status: http.StatusForbidden,
		msg: fmt.Sprintf("destination is not an address of the named Connectors (%s)", strings.Join(names, ", "))}}
}

// addresses are a Connector's address and address extensions.
func addresses(c *v1alpha1.Connector) []string {
	out := []string{c.Spec.Address}
	for _, e := range c.Spec.AddressExtensions {
		out = append(out, e.Value)
	}
	return out
}

// parsedAddresses are a Connector's addresses that parse as URLs.
func parsedAddresses(c *v1alpha1.Connector) []*url.URL {
	var out []*url.URL
	for _, a := range addresses(c) {
		if u, err := url.Parse(a); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// coveredBy reports whether one of c's addresses covers target.
func coveredBy(c *v1alpha1.Connector, target *url.URL) bool {
	for _, addr := range parsedAddresses(c) {
		if covers(addr, target) {
			return true
		}
	}
	return false
}

// hostPort is u's host with the scheme's default port made explicit.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return strings.ToLower(u.Host)
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// covers reports whether target falls under addr: same scheme and host, and a path inside
// addr's path on a segment boundary, both decoded and as sent. A path a tool could resolve
// elsewhere (see CheckPath) is covered by nothing.
func covers(addr, target *url.URL) bool {
	return sameOrigin(addr, target) && coversPath(addr, target.Path, target.EscapedPath())
}

// sameOrigin tells whether a and b have the same scheme and host:port.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && hostPort(a) == hostPort(b)
}

// coversPath is covers' test of a path, given decoded and escaped, at addr's origin.
func coversPath(addr *url.URL, path, escaped string) bool {
	return CheckPath(escaped) == nil && under(addr.Path, path) && under(addr.EscapedPath(), escaped)
}

// under reports whether path lies at or below base, on a segment boundary.
func under(base, path string) bool {
	base = strings.TrimSuffix(base, "/")
	return base == "" || path == base || len(path) > len(base) && path[len(base)] == '/' && strings.HasPrefix(path, base)
}

// serveConnect opens a tunnel to a Connector host: TLS is terminated here with a leaf from the
// proxy CA, and each request inside is authenticated and authorized like a forward-proxy
// request. The client must be allowed to get the Connectors it named before a leaf is minted.
// A tunnel to the host:port of a Connector's http:// address (and no https:// one) carries
// plain HTTP: clients such as Yarn tunnel every request, http ones too.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	fc, ok := p.forwardAuth(w, r)
	if !ok {
		return
	}
	dest, err := p.tunnelDestination(ctx, fc, r.Host)
	var notCovered *notCoveredError
	switch {
	case errors.As(err, &notCovered) && p.passthrough.on():
		setMode(w, modePassthrough)
		p.passthrough.tunnel(w, r, hostPort(&url.URL{Scheme: "https", Host: r.Host}))
		return
	case err != nil:
		refuseErr(ctx, w, err)
		return
	}
	var leaf *tls.Certificate
	if dest.Scheme == "https" {
		if leaf, err = p.leaves.get(ctx, dest.Hostname()); err != nil {
			refuseErr(ctx, w, err)
			return
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		refuse(w, http.StatusInternalServerError, "connection cannot be hijacked")
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Hijack CONNECT")
		return
	}
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		_ = conn.Close()
		return
	}
	var tunnel net.Conn = &bufferedConn{Conn: conn, r: buf.Reader}
	if leaf != nil {
		tunnel = tls.Server(tunnel, &tls.Config{
			Certificates: []tls.Certificate{*leaf},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		})
	}
	// A hijacked request's context is canceled by net/http; the tunnel lives until the client
	// closes it or its lifetime ends.
	p.serveTunnel(context.WithoutCancel(ctx), tunnel, fc, dest)
}

// tunnelDestination is the scheme and host:port a CONNECT reaches: https when a named
// Connector has an https:// address at that host:port, else http when one has an http:// one.
func (p *Proxy) tunnelDestination(ctx context.Context, fc *forwardClient, host string) (*url.URL, error) {
	var err error
	for _, scheme := range []string{"https", "http"} {
		dest := &url.URL{Scheme: scheme, Host: host}
		_, _, err = p.matchConnector(ctx, fc, func(addr *url.URL) bool {
			return addr.Scheme == scheme && hostPort(addr) == hostPort(dest)
		})
		var notCovered *notCoveredError
		if !errors.As(err, &notCovered) {
			return dest, err
		}
	}
	return nil, err
}

// serveTunnel serves the HTTP/1.1 requests inside a CONNECT tunnel until the client closes it
// or the tunnel's lifetime ends. Every request is authenticated again (from the token cache):
// a token that stopped being valid (its Pod deleted) stops working inside an open tunnel too.
func (p *Proxy) serveTunnel(ctx context.Context, conn net.Conn, fc *forwardClient, dest *url.URL) {
	// The lifetime is a hard cap: the connection is closed, whatever it is doing.
	expire := time.AfterFunc(p.cfg.TunnelLifetime, func() { _ = conn.Close() })
	defer expire.Stop()
	t := &tunnel{p: p, ctx: ctx, fc: fc, dest: dest}
	if l := p.lane.Load(); l != nil {
		l.serveTunnel(conn, t)
		return
	}
	t.serveHTTP(conn)
}

// tunnel is a CONNECT tunnel's requests: one client token, one destination.
type tunnel struct {
	p    *Proxy
	ctx  context.Context
	fc   *forwardClient
	dest *url.URL
	// memo is the tunnel's last route on net/http's path, as the fast lane remembers a
	// connection's (laneMemo): the tunnel's requests come one at a time (HTTP/1.1 only).
	memo laneMemo
}

// serveHTTP serves the tunnel's requests on conn with net/http's server until conn closes.
func (t *tunnel) serveHTTP(conn net.Conn) {
	srv := &http.Server{
		Handler:           http.HandlerFunc(t.serve),
		ReadHeaderTimeout: t.p.cfg.ReadHeaderTimeout,
		IdleTimeout:       t.p.cfg.IdleTimeout,
		MaxHeaderBytes:    t.p.cfg.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return t.ctx },
	}
	_ = srv.Serve(newOneConnListener(conn))
}

// serve is the tunnel's net/http handler: each request along the remembered route, or routed
// and remembered.
func (t *tunnel) serve(rw http.ResponseWriter, r *http.Request) {
	p := t.p
	w, record := p.metered(rw, r, modeTunnelled)
	defer record()
	if loopDetected(w, r) {
		return
	}
	target, key := t.target(r.URL), t.key(r.Method)
	// An upgrade or a method override may need more than the method's verb: never along a
	// route remembered for the method, nor remembered for it.
	beyond := verbBeyondMethod(r)
	if rt, ok := t.memo.route(p, target, key); ok && !beyond {
		p.send(w, r, rt)
		return
	}
	epoch := p.podEpochs.now() // before the decisions: one dropped meanwhile is not remembered
	if rt := t.route(w, r, target); rt != nil {
		if !beyond {
			t.memo.remember(key, "", rt, epoch)
		}
		p.send(w, r, rt)
	}
}

// target is the tunnel's destination at the path and query of u, a request's origin-form URL.
func (t *tunnel) target(u *url.URL) *url.URL {
	target := *u
	target.Scheme, target.Host = t.dest.Scheme, t.dest.Host
	return &target
}

// key is a remembered route's key for the tunnel's requests of method.
func (t *tunnel) key(method string) laneKey {
	return laneKey{forward: true, tunnel: true, method: method, host: t.dest.Host}
}

// route authenticates and routes a request inside the tunnel to target, or writes the refusal
// into w (closing the connection when the token is refused) and returns nil.
func (t *tunnel) route(w http.ResponseWriter, r *http.Request, target *url.URL) *route {
	p := t.p
	u, err := p.authenticate(r.Context(), w, t.fc.token, http.StatusProxyAuthRequired)
	if err != nil {
		w.Header().Set("Connection", "close")
		refuseErr(r.Context(), w, err)
		return nil
	}
	rt, err := p.forwardRoute(r, &forwardClient{user: u, token: t.fc.token, connectors: t.fc.connectors}, target)
	if err != nil {
		refuseErr(r.Context(), w, err)
		return nil
	}
	rt.forwardAmong = len(t.fc.connectors) > 1
	return rt
}

// bufferedConn reads first what the HTTP server had already buffered from the client.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// oneConnListener hands out one connection, then blocks until that connection is closed, so
// that http.Server.Serve returns exactly when the tunnel ends.
type oneConnListener struct {
	conn      net.Conn
	once      sync.Once
	closeOnce sync.Once
	closed    chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{closed: make(chan struct{})}
	l.conn = &notifyConn{Conn: c, onClose: func() { l.Close() }}
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type notifyConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.onClose)
	return err
}
