package proxy

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

const reversePrefix = "/namespaces/"

// serveReverse proxies /namespaces/<ns>/connectors/<name>/<path> to <address>/<path>.
func (p *Proxy) serveReverse(w http.ResponseWriter, r *http.Request) {
	nn, rest, ok := parseReversePath(r.URL.EscapedPath())
	if !ok {
		refuse(w, http.StatusNotFound, "path must be /namespaces/<namespace>/connectors/<name>/...")
		return
	}
	p.serveReverseTo(w, r, nn, rest)
}

// serveReverseTo serves a reverse-proxy request for the Connector nn, rest being the path
// under its address.
func (p *Proxy) serveReverseTo(w http.ResponseWriter, r *http.Request, nn types.NamespacedName, rest string) {
	if rt := p.routeReverse(w, r, nn, rest, p.callerToken(r)); rt != nil {
		p.send(w, r, rt)
	}
}

// routeReverse authenticates r's caller, whose token is the one given, and routes r to the
// Connector nn, rest being the path under its address; or writes the refusal to w and
// returns nil.
func (p *Proxy) routeReverse(w http.ResponseWriter, r *http.Request, nn types.NamespacedName, rest string, caller extracted) *route {
	ctx := r.Context()
	u, err := p.authenticate(ctx, w, caller.token, http.StatusUnauthorized)
	if err != nil {
		w.Header().Set("WWW-Authenticate", proxyChallenge)
		refuseErr(ctx, w, err)
		return nil
	}
	rt, err := p.reverseRoute(r, u, nn, rest, caller)
	if err != nil {
		refuseErr(ctx, w, err)
		return nil
	}
	return rt
}

// extracted is the caller's token, and the classes whose authExtractor found it (see
// callerToken); foundBy is nil when the client sent it in Authorization.
type extracted struct {
	token   string
	foundBy []string
}

// reverseRoute authorizes u for the Connector, before looking it up, and routes rest under
// its address.
func (p *Proxy) reverseRoute(r *http.Request, u user.Info, nn types.NamespacedName, rest string, ex extracted) (*route, error) {
	ctx := r.Context()
	if err := CheckPath(rest); err != nil {
		return nil, err
	}
	if err := p.authorizeGet(ctx, u, nn); err != nil {
		return nil, err
	}
	if err := p.authorizeUse(ctx, u, nn, r); err != nil {
		return nil, err
	}
	c, class, err := p.connector(ctx, nn)
	if err != nil {
		return nil, err
	}
	if err := p.checkExtracted(r, class, ex.token, ex.foundBy); err != nil {
		return nil, err
	}
	target, err := reverseTarget(c, rest, r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	rt, err := p.newRoute(ctx, c, class, target)
	if err != nil {
		return nil, err
	}
	rt.proxyBase, rt.epochShard, rt.token, rt.user, rt.caller = reverseBase(r, nn), p.podEpochs.shardOf(u), ex.token, u, CallerOf(u)
	if ex.foundBy != nil {
		rt.callerToken = ex.token
	}
	return rt, nil
}

// reverseTarget is the tool's URL for rest (already checked by CheckPath) under c's address.
func reverseTarget(c *v1alpha1.Connector, rest, rawQuery string) (*url.URL, error) {
	target, err := url.Parse(strings.TrimSuffix(c.Spec.Address, "/") + rest)
	if err != nil {
		return nil, refusef(http.StatusBadRequest, "bad path: %v", err)
	}
	target.RawQuery = rawQuery
	return target, nil
}

// parseReversePath splits "/namespaces/<ns>/connectors/<name><rest>"; rest keeps its escaping.
func parseReversePath(p string) (types.NamespacedName, string, bool) {
	ns, after, found := strings.Cut(strings.TrimPrefix(p, reversePrefix), "/")
	kind, after, foundName := strings.Cut(after, "/")
	if !found || !foundName || ns == "" || kind != "connectors" {
		return types.NamespacedName{}, "", false
	}
	name, rest := after, ""
	if i := strings.IndexByte(after, '/'); i >= 0 {
		name, rest = after[:i], after[i:] // rest keeps its slash: no copy per request
	}
	if name == "" {
		return types.NamespacedName{}, "", false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, rest, true
}

// reverseBase is the Connector's reverse-proxy URL as this client reached it: its own host,
// or the path form.
func reverseBase(r *http.Request, nn types.NamespacedName) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if byHost, ok := connectorOfHost(r.Host); ok && byHost == nn {
		return scheme + "://" + r.Host
	}
	return scheme + "://" + r.Host + reversePrefix + nn.Namespace + "/connectors/" + nn.Name
}

// connectorOfHost reads a Connector's own host on the built-in proxy,
// c-<name>.<namespace>.svc[.<cluster domain>][:port] (the controller keeps a Service of that
// name leading here). Which Connector a request names grants nothing: it is authorized as the
// path form is.
func connectorOfHost(hostport string) (types.NamespacedName, bool) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	// Most requests name the proxy itself (an address, the Service): nothing to split.
	if len(host) < len(v1alpha1.HostServicePrefix) || !strings.EqualFold(host[:len(v1alpha1.HostServicePrefix)], v1alpha1.HostServicePrefix) {
		return types.NamespacedName{}, false
	}
	parts := strings.Split(strings.ToLower(strings.TrimSuffix(host, ".")), ".")
	if len(parts) < 3 || parts[2] != "svc" || !strings.HasPrefix(parts[0], v1alpha1.HostServicePrefix) {
		return types.NamespacedName{}, false
	}
	nn := types.NamespacedName{Namespace: parts[1], Name: strings.TrimPrefix(parts[0], v1alpha1.HostServicePrefix)}
	if len(validation.IsDNS1123Label(nn.Name)) > 0 || len(validation.IsDNS1123Label(nn.Namespace)) > 0 {
		return types.NamespacedName{}, false
	}
	return nn, true
}

func nsName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
