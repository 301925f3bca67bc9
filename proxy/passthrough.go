package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

// Modes of --forward-passthrough: what the forward proxy does with a destination that no
// named Connector covers.
const (
	// PassthroughNone refuses it (403).
	PassthroughNone = "none"
	// PassthroughPublic forwards it, without any credential, when every address it resolves to
	// is public (not private, shared, loopback or link-local).
	PassthroughPublic = "public"
	// PassthroughAll forwards it wherever the destination rules allow a Connector to go.
	PassthroughAll = "all"
)

// notCoveredError is the refusal of a destination no named Connector covers; pass-through may
// still take the request.
type notCoveredError struct{ refusal *refusal }

func (e *notCoveredError) Error() string { return e.refusal.Error() }
func (e *notCoveredError) Unwrap() error { return e.refusal }

// passthrough forwards a forward-proxy client's traffic to hosts of no Connector, as the
// published system does for a build step that sources .env and then fetches dependencies or
// base images: plain HTTP requests go on with the client's own headers but without any
// Proxy-* header (the Pod token), and a CONNECT becomes a plain TCP tunnel, never intercepted.
// Nothing of a Connector is added. Every connection passes the destination rules, and in the
// public mode reaches public addresses only.
type passthrough struct {
	mode string
	// connectPorts are the ports a pass-through CONNECT may reach (443 by default): a tunnel
	// is opaque, and without this the proxy would relay any TCP service (mail, SSH) of the
	// internet for every Pod. httpPorts are those a plain-HTTP request may (80 by default): a
	// request's body is whatever the client writes, which a mail server reads as its commands.
	connectPorts, httpPorts ports
	dial                    egress.DialFunc
	lifetime                time.Duration
	reverse                 *httputil.ReverseProxy
}

type passthroughTarget struct{}

// ports is a set of ports.
type ports map[string]bool

// portsOf is the set of given, or else of the default port.
func portsOf(given []string, dflt string) ports {
	if len(given) == 0 {
		given = []string{dflt}
	}
	set := ports{}
	for _, port := range given {
		set[port] = true
	}
	return set
}

// String lists the ports in order.
func (ps ports) String() string {
	list := make([]string, 0, len(ps))
	for p := range ps {
		list = append(list, p)
	}
	sort.Strings(list)
	return strings.Join(list, ", ")
}

func newPassthrough(cfg Config) *passthrough {
	pt := &passthrough{mode: cfg.Passthrough, lifetime: cfg.TunnelLifetime, dial: cfg.Egress.DialContext,
		connectPorts: portsOf(cfg.PassthroughConnectPorts, "443"), httpPorts: portsOf(cfg.PassthroughHTTPPorts, "80")}
	if pt.mode == PassthroughPublic {
		pt.dial = cfg.Egress.PublicDialContext
	}
	pt.reverse = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			target := pr.In.Context().Value(passthroughTarget{}).(*url.URL)
			pr.Out.URL, pr.Out.Host = target, target.Host
			dropProxyHeaders(pr.Out.Header, "")
			pr.Out.Header[egress.HopHeader] = hopValue
			endAtLength(pr.Out)
		},
		// No connection is kept: every Pod of the node passes through here, to hosts nobody
		// vouches for, and a server that mis-frames requests would let one tenant's smuggled
		// request answer the next tenant's on a shared connection (or take its headers). Plain
		// HTTP to public hosts is rare; https goes through CONNECT tunnels, one per client.
		Transport: &http.Transport{Proxy: nil, DialContext: pt.dial, DisableCompression: true, DisableKeepAlives: true,
			TLSHandshakeTimeout: 10 * time.Second, MaxResponseHeaderBytes: int64(cfg.MaxHeaderBytes)},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			refuseErr(r.Context(), w, passthroughError(r.URL.Host, err))
		},
		ErrorLog: proxyErrorLog,
	}
	return pt
}

// on reports whether pass-through takes destinations no Connector covers.
func (pt *passthrough) on() bool { return pt != nil && pt.mode != PassthroughNone && pt.mode != "" }

// passthroughError turns a failed pass-through into a refusal: 403 for a refused destination
// (with the rule), else 502.
func passthroughError(host string, err error) error {
	var refused *egress.RefusedError
	if errors.As(err, &refused) {
		return refusef(http.StatusForbidden, "destination %s is not an address of the named Connectors, and pass-through refuses it: %s", host, refused.Why)
	}
	return refusef(http.StatusBadGateway, "pass-through to %s: %v", host, err)
}

// serveHTTP forwards a plain-HTTP request to target: to a port of httpPorts, and never one
// that switches protocols, whose connection would carry whatever either side sends, as a
// tunnel does, to any port.
func (pt *passthrough) serveHTTP(w http.ResponseWriter, r *http.Request, target *url.URL) {
	_, port, _ := net.SplitHostPort(hostPort(target)) // the scheme's port when none is given
	allowed := pt.httpPorts
	if target.Scheme == "https" { // TLS to the port, as a tunnel's
		allowed = pt.connectPorts
	}
	switch {
	case !allowed[port]:
		refuse(w, http.StatusForbidden, fmt.Sprintf("destination %s is not an address of the named Connectors, and pass-through forwards %s only to ports %s", target.Host, target.Scheme, allowed))
		return
	case IsUpgrade(r.Header):
		refuse(w, http.StatusForbidden, fmt.Sprintf("destination %s is not an address of the named Connectors, and pass-through does not switch protocols", target.Host))
		return
	}
	klog.FromContext(r.Context()).V(4).Info("Pass-through", "host", target.Host)
	pt.reverse.ServeHTTP(w, egress.DialsEndWith(r.WithContext(context.WithValue(r.Context(), passthroughTarget{}, target))))
}

// tunnel answers a CONNECT to hostport with a plain TCP tunnel, after the destination rules
// allowed the connection; it lasts until either side closes or the tunnel lifetime ends.
func (pt *passthrough) tunnel(w http.ResponseWriter, r *http.Request, hostport string) {
	ctx := r.Context()
	if _, port, _ := net.SplitHostPort(hostport); !pt.connectPorts[port] {
		refuse(w, http.StatusForbidden, fmt.Sprintf("destination %s is not an address of the named Connectors, and pass-through tunnels only to ports %s", hostport, pt.connectPorts))
		return
	}
	upstream, err := pt.dial(ctx, "tcp", hostport)
	if err != nil {
		refuseErr(ctx, w, passthroughError(hostport, err))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = upstream.Close()
		refuse(w, http.StatusInternalServerError, "connection cannot be hijacked")
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		_ = upstream.Close()
		return
	}
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		_ = client.Close()
		_ = upstream.Close()
		return
	}
	expire := time.AfterFunc(pt.lifetime, func() { _ = client.Close(); _ = upstream.Close() })
	defer expire.Stop()
	splice(&bufferedConn{Conn: client, r: buf.Reader}, upstream)
}

// splice copies both ways until one side is done, then closes both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	_ = a.Close()
	_ = b.Close()
	<-done
}

// checkPassthroughMode validates a --forward-passthrough value.
func checkPassthroughMode(mode string) error {
	switch mode {
	case PassthroughNone, PassthroughPublic, PassthroughAll:
		return nil
	}
	return fmt.Errorf("proxy config: pass-through mode %q is not one of none, public, all", mode)
}
