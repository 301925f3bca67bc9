// Package proxy is the embedded Connectors Proxy (SPEC §4): a reverse proxy at
// /namespaces/<ns>/connectors/<name>/..., and a forward proxy (absolute-form requests and
// CONNECT, with TLS terminated by a per-host leaf from the proxy CA). It authenticates the
// client by its Pod token, authorizes it for the Connector, and injects the Connector's
// credential on the way out. It is never an open proxy: every destination must fall under an
// address of a Connector the client named.
package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/regoeval"
	"github.com/kube-connectors/connectors-csi/secretcache"
	"github.com/kube-connectors/connectors-csi/trust"
)

// Reviewer authenticates tokens and authorizes users (access.Reviewer).
type Reviewer interface {
	AuthenticateToken(ctx context.Context, token string) (user.Info, bool, error)
	Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error)
}

// Config tunes the proxy; every field but Permissions must be set.
type Config struct {
	// SecretTTL is how long a Connector's Secret is kept after it was read (0: not kept).
	SecretTTL time.Duration
	// Permissions answers the connectors/proxy checks, uncached: the proxy caches them per Pod,
	// allowed for PermissionAllowTTL and denied for PermissionDenyTTL, drops a Pod's
	// decisions when told that one of its AccessRequests changed (ForgetPod), and keeps those
	// made in the PermissionSettle after such a change only until its end. Nil uses the
	// Reviewer.
	Permissions                                             Reviewer
	PermissionAllowTTL, PermissionDenyTTL, PermissionSettle time.Duration
	// Egress decides which destinations may be dialed.
	Egress *egress.Policy
	// TunnelLifetime caps how long a CONNECT tunnel, or a connection the tool switched to
	// another protocol (an upgrade: WebSocket, SPDY), stays open.
	TunnelLifetime time.Duration
	// UpgradeRecheck is how often the caller of an upgraded connection is checked again (from
	// the caches): the connection is closed once its token or permission is gone.
	UpgradeRecheck time.Duration
	// AnswerRecheck is how often the caller of an answer still streaming is checked again
	// (answerGuard); 0: UpgradeRecheck.
	AnswerRecheck time.Duration
	// ReadHeaderTimeout and IdleTimeout are a CONNECT tunnel's server's (the proxy listener's
	// own are its http.Server's and FastLane's); UpstreamIdleTimeout is how long a connection
	// to a tool waits idle in a pool.
	ReadHeaderTimeout, IdleTimeout, UpstreamIdleTimeout time.Duration
	// MaxHeaderBytes bounds the request headers inside a CONNECT tunnel, and every answer's
	// head from a tool (each tool is whoever a Connector's owner points it at).
	MaxHeaderBytes int
	// Passthrough is what the forward proxy does with a destination no named Connector
	// covers: PassthroughNone (also when empty), PassthroughPublic or PassthroughAll.
	Passthrough string
	// PassthroughConnectPorts are the ports a pass-through CONNECT may reach (443 when empty);
	// PassthroughHTTPPorts those a pass-through plain-HTTP request may (80 when empty).
	PassthroughConnectPorts, PassthroughHTTPPorts []string
	// GlobalCA is the global CA bundle, trusted for every Connector with the feature flag
	// enable-custom-ca-certs; nil: none.
	GlobalCA *trust.Global
	// Rego evaluates the classes' generator and authExtractor modules.
	Rego *regoeval.Engine
	// Sizes of the bounded caches: Secrets, registry tokens (and realms), leaf certificates
	// (per host), upstream transports (per CA bundle), connectors/proxy decisions.
	SecretCacheSize, RegistryTokenCacheSize, LeafCacheSize, TransportCacheSize, PermissionCacheSize int
	// OwnerTransportCacheSize bounds the pools of requests the direct transport does not take,
	// one per Connector and caller namespace (ownerTransports); APITransportCacheSize those of
	// the Connectors API's calls (OwnPool, Upstream), apart: a console's many users, each a
	// caller of their own, do not push the proxy's pools out.
	OwnerTransportCacheSize, APITransportCacheSize int
	// SecretCacheBytes bounds the data of the Secrets kept together, RegistryTokenBytes the
	// registry tokens (and an eighth more their challenges).
	SecretCacheBytes, RegistryTokenBytes int64
	// Refusals records 403 answers to Pods as Events on the Pod; nil records none.
	Refusals *RefusalEvents
	// PodGrants tells whether a Pod-scoped connectors/proxy grant that allows a Pod may be an
	// earlier Pod's of the same name (approval.PodGrants); such a grant then counts for none.
	PodGrants PodGrants
	// Node, when set, is the node whose Pods' tokens alone the proxy takes (TokensOfNode; see
	// ofThisNode); empty: any token of its audience.
	Node string
	// APIObjects reads the Connectors the Connectors API is asked for (Connector), and
	// APISecretReads sends its Secret reads that miss the proxy's cache (Upstream, Forward):
	// with its own client and rate limit; nil: as the proxy's.
	APIObjects     client.Reader
	APISecretReads secretcache.GetFunc
	// DeniedPaths are the paths the proxy never sends a credential to, for every Connector
	// (see deniedpaths.go); nil: DefaultDeniedPaths, empty: none.
	DeniedPaths []string
	// GraphQLPaths are where the tools' GraphQL endpoints are, whose requests the proxy reads
	// for DeniedGraphQLFields, up to GraphQLBodyBytes of a body (see graphql.go); nil:
	// DefaultGraphQLPaths, DefaultDeniedGraphQLFields; empty: none read; 0:
	// DefaultGraphQLBodyBytes.
	GraphQLPaths        []string
	DeniedGraphQLFields []string
	GraphQLBodyBytes    int64
	// GraphQLHeldBytes bounds the GraphQL bodies read and not yet sent, node-wide; 0:
	// DefaultGraphQLHeldBytes.
	GraphQLHeldBytes int64
}

// PodGrants is approval.PodGrants, as the proxy asks it.
type PodGrants interface {
	OfAnotherPod(ctx context.Context, connector types.NamespacedName, podNamespace, podName, podUID string) (bool, error)
	// HoldsOwn answers from the node's cache, without a call.
	HoldsOwn(ctx context.Context, connector types.NamespacedName, podNamespace, podName, podUID string) (bool, error)
}

// check refuses a Config whose limits are unset: an unbounded cache is what they prevent.
func (c Config) check() error {
	for _, entry := range c.DeniedPaths {
		if err := ValidDeniedPath(entry); err != nil {
			return fmt.Errorf("proxy config: %w", err)
		}
	}
	for _, path := range c.GraphQLPaths {
		if err := ValidGraphQLPath(path); err != nil {
			return fmt.Errorf("proxy config: %w", err)
		}
	}
	for _, field := range c.DeniedGraphQLFields {
		if err := ValidGraphQLField(field); err != nil {
			return fmt.Errorf("proxy config: %w", err)
		}
	}
	if err := CheckGraphQLBytes(c.GraphQLBodyBytes, c.GraphQLHeldBytes); err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	if c.SecretCacheBytes <= 0 || c.RegistryTokenBytes <= 0 {
		return fmt.Errorf("proxy config: SecretCacheBytes and RegistryTokenBytes must be positive")
	}
	for name, v := range map[string]int{"MaxHeaderBytes": c.MaxHeaderBytes, "SecretCacheSize": c.SecretCacheSize,
		"RegistryTokenCacheSize": c.RegistryTokenCacheSize, "LeafCacheSize": c.LeafCacheSize, "TransportCacheSize": c.TransportCacheSize,
		"OwnerTransportCacheSize": c.OwnerTransportCacheSize, "APITransportCacheSize": c.APITransportCacheSize,
		"PermissionCacheSize": c.PermissionCacheSize} {
		if v <= 0 {
			return fmt.Errorf("proxy config: %s must be positive", name)
		}
	}
	if c.Passthrough != "" {
		if err := checkPassthroughMode(c.Passthrough); err != nil {
			return err
		}
	}
	if c.TunnelLifetime <= 0 || c.UpgradeRecheck <= 0 || c.ReadHeaderTimeout <= 0 || c.IdleTimeout <= 0 || c.UpstreamIdleTimeout <= 0 ||
		c.Egress == nil || c.Rego == nil || c.PodGrants == nil {
		return fmt.Errorf("proxy config: TunnelLifetime, UpgradeRecheck, ReadHeaderTimeout, IdleTimeout, UpstreamIdleTimeout, Egress, Rego and PodGrants must be set")
	}
	return nil
}

// APIPrefix is where the Connectors API is served on the proxy listener.
const APIPrefix = "/connectors/v1alpha1/"

// OperatorPrefix is where the Connectors operator API (feature flags) is served, by API too.
const OperatorPrefix = "/connectors-operator/"

// Proxy serves the proxy listener.
type Proxy struct {
	// API serves the Connectors API (APIPrefix), when set.
	API http.Handler

	cfg        Config
	objects    client.Reader // Connectors and ConnectorClasses, from informer caches
	reviewer   Reviewer
	perms      *permissions
	flags      *features.Source
	secrets    *secretcache.Cache
	rego       *regoeval.Engine
	transports *trust.Transports
	leaves     *leaves
	registry   *registryTokens
	// denied are Config.DeniedPaths, compiled; a route holds them with its class's.
	denied      *deniedPaths
	classDenied classDeniedSets
	// graphql reads the requests to the tools' GraphQL endpoints (Config.GraphQLPaths); nil:
	// none.
	graphql *graphqlReading
	reverse *httputil.ReverseProxy
	direct  *directTransport
	// owned carry what direct does not take, in pools split as direct's are.
	owned *ownerTransports
	// apiOwned are the Connectors API's, split the same way.
	apiOwned *ownerTransports
	// passthrough takes forward-proxy destinations no named Connector covers.
	passthrough *passthrough
	// podEpochs end the remembered decisions (perms) and routes (the fast lane's) of a Pod's
	// group when the Pod's AccessRequests change (ForgetPod).
	podEpochs podEpochs
	// lane is the fast lane serving the proxy's listener, if any: CONNECT tunnels are served
	// by it too.
	lane atomic.Pointer[FastLane]
}

// New returns a Proxy.
func New(objects client.Reader, reviewer Reviewer, flags *features.Source, kube kubernetes.Interface, ca Authority, cfg Config) (*Proxy, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	l, err := newLeaves(ca, cfg.LeafCacheSize)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		objects:  objects,
		reviewer: reviewer,
		flags:    flags,
		secrets:  secretcache.New(secretcache.FromWatchCache(kube), cfg.SecretTTL, cfg.SecretCacheSize, cfg.SecretCacheBytes, "secrets").RememberMissing(),
		rego:     cfg.Rego,
		transports: trust.NewTransports(cfg.TransportCacheSize, "transports", func(roots *x509.CertPool) *http.Transport {
			return newUpstreamTransport(cfg.Egress, roots, cfg.UpstreamIdleTimeout, cfg.MaxHeaderBytes)
		}),
		leaves:      l,
		passthrough: newPassthrough(cfg),
		registry:    newRegistryTokens(cfg.RegistryTokenCacheSize, cfg.RegistryTokenBytes),
	}
	if cfg.Permissions == nil {
		cfg.Permissions = reviewer
	}
	denied := orDefault(cfg.DeniedPaths, DefaultDeniedPaths)
	p.denied = compileDeniedPaths("", denied)
	p.graphql = newGraphQLReading(orDefault(cfg.GraphQLPaths, DefaultGraphQLPaths), orDefault(cfg.DeniedGraphQLFields, DefaultDeniedGraphQLFields),
		denied, cmp.Or(cfg.GraphQLBodyBytes, DefaultGraphQLBodyBytes), cmp.Or(cfg.GraphQLHeldBytes, DefaultGraphQLHeldBytes))
	p.direct = newDirectTransport(directMaxIdlePerHost, cfg.UpstreamIdleTimeout, cfg.MaxHeaderBytes)
	p.owned = newOwnerTransports("owner_transports", cfg.OwnerTransportCacheSize)
	p.apiOwned = newOwnerTransports("api_transports", cfg.APITransportCacheSize)
	p.perms = newPermissions(cfg.Permissions, permissionTTLs{allow: cfg.PermissionAllowTTL, deny: cfg.PermissionDenyTTL, settle: cfg.PermissionSettle},
		cfg.PermissionCacheSize, &p.podEpochs)
	p.reverse = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      routeTransport{p},
		ErrorHandler:   upstreamError,
		ModifyResponse: rewriteLocation,
		// Responses of unknown length (git packs, streamed blobs) are flushed as they come;
		// ReverseProxy does that by itself, so known-length bodies keep buffered writes.
		FlushInterval: 0,
		// Without a pool ReverseProxy allocates a 32 KiB copy buffer per response.
		BufferPool: copyBuffers{},
		// What ReverseProxy reports itself (an answer cut by the tool) goes to the driver's log,
		// not to the standard logger's stderr.
		ErrorLog: proxyErrorLog,
	}
	return p, nil
}

// orDefault is list, or def when list is nil (unset; an empty list is none).
func orDefault(list, def []string) []string {
	if list == nil {
		return def
	}
	return list
}

// ForgetPod drops the cached connectors/proxy decisions of a Pod's tokens: the node saw one of
// the Pod's AccessRequests change (granted, revoked), so the next request asks again.
func (p *Proxy) ForgetPod(namespace, name string) {
	// Both caches, the decisions' and the fast lane's routes (laneMemo), check the Pod's group
	// on use: ForgetPod costs the same whatever they hold.
	p.podEpochs.forget(namespace, name)
}

// copyBuffers pools the buffers ReverseProxy copies response bodies with.
type copyBuffers struct{}

var bufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte  { return *(bufferPool.Get().(*[]byte)) }
func (copyBuffers) Put(b []byte) { bufferPool.Put(&b) }

// ServeHTTP dispatches by request form, and records each request in the proxy's metrics.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	byHost, isHost := connectorOfHost(r.Host)
	isAPI := p.API != nil && (strings.HasPrefix(r.URL.Path, APIPrefix) || strings.HasPrefix(r.URL.Path, OperatorPrefix))
	mode := modeReverse
	switch {
	case r.Method == http.MethodConnect:
		mode = modeTunnel
	case r.URL.IsAbs():
		mode = modeForward
	case isAPI && !isHost:
		mode = modeAPI
	}
	m, record := p.metered(w, r, mode)
	defer record()
	if loopDetected(m, r) {
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		p.serveConnect(m, r)
	case r.URL.IsAbs():
		p.serveForward(m, r)
	case isHost:
		p.serveReverseTo(m, r, byHost, r.URL.EscapedPath())
	case strings.HasPrefix(r.URL.Path, reversePrefix):
		p.serveReverse(m, r)
	case isAPI:
		p.API.ServeHTTP(m, r)
	default:
		refuse(m, http.StatusNotFound, "no such path: use /namespaces/<ns>/connectors/<name>/... or this address as an HTTP proxy")
	}
}

// loopDetected refuses, with 508, a request another Connectors proxy sent: a Connector whose
// address leads to a Connectors proxy would otherwise bounce between proxies until the node
// runs out of connections.
func loopDetected(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get(egress.HopHeader) == "" {
		return false
	}
	refuse(w, http.StatusLoopDetected, "this request came from a Connectors proxy: a Connector's address must be its tool, not a Connectors proxy")
	return true
}

// refusal is an error with the HTTP status to answer it with.
type refusal struct {
	status int
	msg    string
}

func (e *refusal) Error() string { return e.msg }

func refusef(status int, format string, args ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

// refuse writes a plain-text refusal a person can read in git's or curl's output.
func refuse(w http.ResponseWriter, status int, msg string) {
	refused(w, msg)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "connectors proxy: %s\n", msg)
}

// refuseErr writes err as a refusal; an unexpected error is a 502 without details.
func refuseErr(ctx context.Context, w http.ResponseWriter, err error) {
	var rf *refusal
	if errors.As(err, &rf) {
		klog.FromContext(ctx).V(2).Info("Proxy refused a request", "status", rf.status, "reason", rf.msg)
		refuse(w, rf.status, rf.msg)
		return
	}
	klog.FromContext(ctx).Error(err, "Proxy request failed")
	refuse(w, http.StatusBadGateway, err.Error())
}

// route is one request's resolved destination.
type route struct {
	connector *v1alpha1.Connector
	target    *url.URL
	cred      credential
	transport http.RoundTripper
	// proxyBase, for the reverse proxy, is the client-facing prefix of the Connector.
	proxyBase string
	// statusErrors answers upstream failures as Kubernetes Status (the Connectors API).
	statusErrors bool
	// callerToken is the token an authExtractor found in the request, removed from whatever
	// carried it ("" when the client sent it in Authorization, which is always removed).
	callerToken string
	// injection is the generator's answer, when the credential has a generator.
	injection *regoeval.Injection
	// client is the writer the answer goes to (set by send).
	client http.ResponseWriter
	// forwardAmong: a forward route chosen among several Connectors the client named.
	forwardAmong bool
	// epochShard is the caller's Pod's group in podEpochs.
	epochShard uint8
	// token is the caller's, and user who it is, for checking them again while an answer or
	// an upgraded connection lasts (answerGuard, upgradeGuard).
	token string
	user  user.Info
	// caller is the caller's namespace (its ServiceAccount's; a user's name for another
	// user), whose requests alone share tool connections (poolOwner).
	caller string
	// denied are the node's and the class's denied paths, which every request along the route
	// is checked against (a remembered route's too: laneMemo).
	denied deniedCheck
}

// pool is whose tool connections rt's requests go on.
func (rt *route) pool() poolOwner { return poolOwner{connector: rt.connector.UID, caller: rt.caller} }

// CallerOf is the namespace of u's ServiceAccount, or "user:" and u's name for anyone else.
func CallerOf(u user.Info) string {
	if ns, _, err := serviceaccount.SplitUsername(u.GetName()); err == nil {
		return ns
	}
	return "user:" + u.GetName()
}

type routeKey struct{}

// send forwards r along rt through the shared ReverseProxy, after the class's generator, if
// any, has computed the credential.
func (p *Proxy) send(w http.ResponseWriter, r *http.Request, rt *route) {
	routed(w, rt)
	rt.client = w
	if rt.cred.generator != nil {
		if err := p.generate(r, rt); err != nil {
			p.fail(w, r, rt, err)
			return
		}
	}
	ctx := context.WithValue(r.Context(), routeKey{}, rt)
	if IsUpgrade(r.Header) {
		w = p.guardUpgrade(w, r, rt)
	}
	if rt.token != "" { // the Connectors API's calls (Forward) are the API's to authorize
		// An upgrade the tool answers without switching protocols is an answer like any.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		defer p.guardAnswer(rt, r, cancel).stop()
	}
	p.reverse.ServeHTTP(w, r.WithContext(ctx))
}

// fail answers a request that cannot be sent on: as a Kubernetes Status for the Connectors
// API, else as a plain refusal; an error that is not a refusal is a 502.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	if !rt.statusErrors {
		refuseErr(r.Context(), w, err)
		return
	}
	code, msg := Status(err)
	if code == 0 {
		klog.FromContext(r.Context()).Error(err, "Proxy request failed")
		code, msg = http.StatusBadGateway, err.Error()
	}
	answerRefusal(w, rt, code, msg)
}

// hopValue is the hop marker's value, shared by every outgoing request: transports only read
// header values, and one shared slice saves an allocation per request.
var hopValue = []string{"1"}

// rewrite builds the upstream request. ReverseProxy has already removed hop-by-hop headers,
// including any the client listed in Connection, so nothing the client sends can remove the
// credential set here; the client's own Authorization and every Proxy-* header are dropped.
func rewrite(pr *httputil.ProxyRequest) {
	applyRoute(pr.Out, pr.In.Context().Value(routeKey{}).(*route))
	endAtLength(pr.Out)
}

// proxyErrorLog is the ReverseProxies' ErrorLog: their messages name addresses and errors,
// never headers.
var proxyErrorLog = klog.NewStandardLogger("WARNING")

// endAtLength gives out, a request net/http's server read, a body that ends at its
// Content-Length without reading the client's body again. Having sent that many bytes,
// http.Transport reads the body once more to check it holds no more; net/http's server, as
// soon as the tool's answer head is written to the client, drains and closes a request body
// it did not see closed (chunkWriter.writeHeader). When the close comes first, the extra read
// fails ("invalid Read on closed Body"), the Transport takes that for a failed write and
// closes the tool connection under the answer being copied, and the client gets it cut
// (golang/go#40747): the bench's uploads of 1 MiB answered with 1 MiB lost about one in 300.
func endAtLength(out *http.Request) {
	if out.Body != nil && out.Body != http.NoBody && out.ContentLength > 0 {
		out.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(out.Body, out.ContentLength), out.Body}
	}
}

// applyRoute points out at the route's target with its credential (rewrite; the fast lane).
func applyRoute(out *http.Request, rt *route) {
	out.URL = rt.target
	out.Host = rt.target.Host
	dropClientCredentials(out.Header, rt.callerToken)
	if rt.callerToken != "" {
		if q := out.URL.Query(); dropParamsWith(q, rt.callerToken) {
			u := *out.URL
			u.RawQuery = q.Encode()
			out.URL = &u
		}
	}
	out.Header[egress.HopHeader] = hopValue
	if rt.cred.authorization != "" {
		out.Header.Set("Authorization", rt.cred.authorization)
	}
	if rt.injection != nil {
		applyInjection(out, rt.injection)
	}
}

// routeTransport sends each request along its route (sendAlong).
type routeTransport struct{ p *Proxy }

func (t routeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt := r.Context().Value(routeKey{}).(*route)
	return t.p.sendAlong(rt, r, rt.client)
}

// sendAlong sends r along rt: with a registry token for its scope when rt's credential is a
// registry login (registryTokens: a challenge answered and the request sent again), over the
// proxy's own pooled connections when they take it. A large answer of known length is
// streamed to client as its body is read (directBody), once it is the answer the client gets:
// not a challenge the registry flow reads and drops, nor the token service's answer.
func (p *Proxy) sendAlong(rt *route, r *http.Request, client io.Writer) (*http.Response, error) {
	release, err := rt.denied.checkGraphQL(r, rt.caller)
	if err != nil {
		return nil, err // before anything is sent (upstreamErrorFor answers the refusal)
	}
	defer release()
	if rt.cred.registry == nil {
		return toolTransport{p, rt, client}.RoundTrip(r)
	}
	res, err := p.registry.roundTrip(toolTransport{p: p, rt: rt}, rt.cred.registry, r)
	if err == nil {
		streamBodyTo(res, client)
	}
	return res, err
}

// toolTransport sends requests with rt's transport, or over the proxy's own pooled
// connections when they take the request (directTransport), their large answers streamed to
// client (nil: read as any body).
type toolTransport struct {
	p      *Proxy
	rt     *route
	client io.Writer
}

func (t toolTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tr, ok := t.rt.transport.(*http.Transport)
	if !ok {
		return t.rt.transport.RoundTrip(r)
	}
	if t.p.direct.takes(tr, r) {
		res, err := t.p.direct.RoundTrip(tr, r, t.rt.pool(), t.client)
		if !errors.Is(err, errHTTP1Refused) {
			return res, err
		}
	}
	out := egress.DialsEndWith(r)
	// A request with a body a tool may ignore ends its connection (ignorableBody).
	out.Close = out.Close || ignorableBody(r)
	return t.p.owned.For(tr, t.rt.pool()).RoundTrip(out)
}

// ignorableBody tells whether r carries a body that a tool may not read: one of a GET, HEAD,
// OPTIONS or DELETE. A tool that ignores such a body (a CL.0 server: OPTIONS and WebDAV
// servers often do) would read it as the next request on its connection, and take the next
// request's head, its injected credential with it, into that one: a caller's read grant would
// write, and a caller's crafted body would carry the credential of a Connector it may use but
// never read into a place it reads back. The proxy's own paths (the fast lane, the direct
// transport) take no such request; net/http's sends it on a connection it then closes.
func ignorableBody(r *http.Request) bool {
	return bodyMayBeIgnored(r.Method) && r.Body != nil && r.Body != http.NoBody
}

// bodyMayBeIgnored tells whether a tool may read no body of a request of method, whatever its
// framing says.
func bodyMayBeIgnored(method string) bool {
	return getOrHead(method) || method == http.MethodOptions || method == http.MethodDelete
}

// upstreamError answers a failed upstream round trip: the refusal that ended it (answerGuard),
// if one did.
func upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	var rf *refusal
	if cause := context.Cause(r.Context()); errors.As(cause, &rf) {
		err = rf
	}
	upstreamErrorFor(w, r.Context().Value(routeKey{}).(*route), err)
}

// upstreamErrorFor answers a failed round trip along rt, or one the proxy refused to send
// (sendAlong).
func upstreamErrorFor(w http.ResponseWriter, rt *route, err error) {
	if code, msg := Status(err); code != 0 {
		answerRefusal(w, rt, code, msg)
		return
	}
	klog.Background().Info("Upstream request failed", "connector", klog.KObj(rt.connector), "host", rt.target.Host, "err", rt.redacted(err.Error()))
	code, reason := http.StatusBadGateway, metav1.StatusReason("BadGateway")
	msg := fmt.Sprintf("Connector %s/%s: %s unreachable: %s", rt.connector.Namespace, rt.connector.Name, rt.target.Host, UpstreamFailure(err))
	var refused *egress.RefusedError
	if errors.As(err, &refused) {
		code, reason = http.StatusForbidden, metav1.StatusReasonForbidden
		msg = fmt.Sprintf("Connector %s/%s: %v", rt.connector.Namespace, rt.connector.Name, refused)
	}
	if rt.statusErrors {
		WriteStatus(w, code, reason, msg)
		return
	}
	refuse(w, code, msg)
}

// UpstreamFailure is what a client is told of a failed exchange with a tool: the error of the
// connection, the name lookup or the certificate where there is one (they name no more than
// the tool's address), else what went wrong in words. Any other error may quote what the tool
// sent: one reading an answer quotes its first line, and a tool that echoes the request line
// sends back the query a generator added (its credential); a registry's token service's
// error quotes its body. The caller may use the Connector but must not hold its credential.
func UpstreamFailure(err error) string {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var fault *toolFault
	switch {
	case errors.As(err, &fault):
		return fault.msg
	case errors.Is(err, errHTTP1Refused):
		return errHTTP1Refused.Error()
	case errors.Is(err, errNothingRead):
		return errNothingRead.Error()
	case strings.HasPrefix(err.Error(), "net/http: server response headers exceeded"): // net/http's own words
		return err.Error()
	case errors.Is(err, context.Canceled):
		return "the request was cancelled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "no answer in time"
	case errors.As(err, &certErr):
		return certErr.Error()
	case errors.As(err, &unknownCA):
		return unknownCA.Error()
	case errors.As(err, &hostErr):
		return hostErr.Error()
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &opErr):
		return opErr.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the tool closed the connection before its answer"
	}
	return "its answer could not be read"
}

// redacted is s without the credential the proxy injects along rt: its Authorization, a
// generator's headers and query parameters, as they are and percent-encoded.
func (rt *route) redacted(s string) string {
	values := []string{rt.cred.authorization}
	if _, token, ok := strings.Cut(rt.cred.authorization, " "); ok { // Basic's, Bearer's
		values = append(values, token)
	}
	if login := rt.cred.registry; login != nil {
		values = append(values, login.password)
	}
	if in := rt.injection; in != nil {
		for _, v := range in.Query {
			values = append(values, v)
		}
		for _, v := range in.Headers {
			values = append(values, v)
		}
	}
	for _, v := range values {
		if len(v) < 4 {
			continue
		}
		for _, form := range []string{v, url.QueryEscape(v), url.PathEscape(v)} {
			s = strings.ReplaceAll(s, form, "[redacted]")
		}
	}
	return s
}

// answerRefusal writes a refusal of a request along rt: as a Kubernetes Status for the
// Connectors API, else as plain text.
func answerRefusal(w http.ResponseWriter, rt *route, code int, msg string) {
	if rt.statusErrors {
		WriteStatus(w, code, metav1.StatusReason(strings.ReplaceAll(http.StatusText(code), " ", "")), msg)
		return
	}
	refuse(w, code, msg)
}

// rewriteLocation keeps the reverse proxy's clients on the proxy when the tool redirects within
// the Connector's address. Redirects elsewhere pass unchanged: the client follows them itself,
// and no credential goes with it.
func rewriteLocation(res *http.Response) error {
	cleanToolAnswer(res, res.Request.Context().Value(routeKey{}).(*route))
	return nil
}

// cleanToolAnswer is what both paths do to a tool's answer along rt before it reaches the
// client: its sessions dropped (dropToolSessions), a generator's query parameters taken out of
// Location and Link, and Location kept on the proxy (rewriteLocationFor).
func cleanToolAnswer(res *http.Response, rt *route) {
	dropToolSessions(res.Header)
	if rt.proxyBase != "" {
		challengeForTheProxy(res)
	}
	rewriteLocationFor(res, rt)
	if rt.proxyBase != "" {
		keepLinksOnTheProxy(res, rt)
		refuseRedirectAway(res, rt)
	}
}

// onProxy is u on the reverse proxy, when u lies within the Connector's address.
func onProxy(rt *route, u *url.URL) (string, bool) {
	base := strings.TrimSuffix(rt.connector.Spec.Address, "/")
	if s := u.String(); strings.HasPrefix(s, base+"/") || s == base {
		return rt.proxyBase + strings.TrimPrefix(s, base), true
	}
	return "", false
}

// refuseRedirectAway answers 502, in place of the tool's answer, a redirect outside the
// Connector's address of a reverse proxy's client that would follow it with the Pod token:
//   - a Git client's first request (a ref advertisement, .../info/refs): git takes the
//     target as the repository's base for the requests that follow (an upload-pack, a push's
//     receive-pack), and sends those the http.extraHeader it matched to the proxy's address
//     (deploy/classes' gitconfig);
//   - a client that sent the token in a header of its own (an authExtractor's: glab's
//     PRIVATE-TOKEN), which Go's client, as most, sends again to a redirect on another host
//     (only Authorization and cookies are dropped).
//
// A redirect within the address, rewritten onto the proxy (rewriteLocationFor), stays: a
// renamed repository's.
func refuseRedirectAway(res *http.Response, rt *route) {
	loc := res.Header.Get("Location")
	onTheProxy := loc == rt.proxyBase || strings.HasPrefix(loc, rt.proxyBase+"/") || strings.HasPrefix(loc, rt.proxyBase+"?")
	if res.StatusCode < 300 || res.StatusCode > 399 || loc == "" || onTheProxy ||
		!strings.HasSuffix(res.Request.URL.Path, "/info/refs") && rt.callerToken == "" {
		return
	}
	where := "elsewhere"
	if u, err := res.Request.URL.Parse(loc); err == nil {
		where = u.Host
	}
	msg := fmt.Sprintf("connectors proxy: Connector %s/%s: the tool redirected outside the Connector's address (to %s), "+
		"where the client would send the Pod token\n", rt.connector.Namespace, rt.connector.Name, where)
	_ = res.Body.Close()
	res.StatusCode, res.Status = http.StatusBadGateway, "502 Bad Gateway"
	res.Header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Length": {strconv.Itoa(len(msg))}}
	res.Body, res.ContentLength, res.TransferEncoding = io.NopCloser(strings.NewReader(msg)), int64(len(msg)), nil
}

// proxyChallenge is the reverse proxy's own challenge: Basic, for the Pod token, at the proxy.
const proxyChallenge = `Basic realm="connectors-proxy"`

// challengeForTheProxy replaces a tool's challenges, in an answer to the reverse proxy's
// client, with the proxy's own (on a 401; none on any other answer). That client holds the Pod
// token as its credential for the proxy's address, and a client sends its credential where a
// challenge points: a Bearer challenge's realm, a registry's token service, which Docker-style
// clients ask with the registry's own credential (Docker, crane, Helm, ORAS), may be any host
// the tool's owner names. (The forward proxy's clients hold no credential of the tool's host:
// the Pod token is their proxy's, and an anonymous registry's challenge is theirs to answer.)
// The fast lane leaves such an answer to the general path (answerHead.take).
func challengeForTheProxy(res *http.Response) {
	if _, challenged := res.Header["Www-Authenticate"]; !challenged && res.StatusCode != http.StatusUnauthorized {
		return
	}
	res.Header.Del("WWW-Authenticate")
	if res.StatusCode == http.StatusUnauthorized {
		res.Header.Set("WWW-Authenticate", proxyChallenge)
	}
}

// toolSessionHeaders are the answer headers that hand the client a session the tool opened
// for the injected credential (the fast lane drops them as it reads a head).
var toolSessionHeaders = []string{"Set-Cookie", "Set-Cookie2"}

// dropToolSessions removes from a tool's answer the sessions it opened for the credential the
// proxy injected: a cookie is that credential's equivalent, which the client, who may use the
// Connector but not hold its credential, would then hold past its grant (a JFrog or Harbor UI
// session, a load balancer's affinity aside). Every request carries the credential anyway.
func dropToolSessions(h http.Header) {
	for _, name := range toolSessionHeaders {
		h.Del(name)
	}
}

func rewriteLocationFor(res *http.Response, rt *route) {
	if rt.injection != nil && len(rt.injection.Query) > 0 {
		dropInjectedParameters(res.Header, rt.injection.Query)
	}
	loc := res.Header.Get("Location")
	if rt.proxyBase == "" || loc == "" {
		return
	}
	u, err := res.Request.URL.Parse(loc)
	if err != nil {
		return
	}
	if s, ok := onProxy(rt, u); ok {
		res.Header.Set("Location", s)
	}
}

// keepLinksOnTheProxy rewrites, in an answer to a reverse proxy's client, the Link header's
// targets within the Connector's address onto the proxy, and drops a Link header naming a
// target outside it, or one it cannot read whole (RFC 8288: link-values of a <target> and
// parameters, split at commas outside brackets and quotes; a client reading a bare URL, as
// Python's requests does, would follow one the proxy did not see): clients page by following
// them as given (glab api --paginate, python-gitlab, with PRIVATE-TOKEN: the Pod token), and a
// forge writes them with its own host, or any host its owner likes.
func keepLinksOnTheProxy(res *http.Response, rt *route) {
	KeepLinks(res.Header, func(target string) (string, bool) {
		u, err := res.Request.URL.Parse(target)
		if err != nil {
			return "", false
		}
		return onProxy(rt, u)
	})
}

// KeepLinks rewrites each Link header value of h with each of its link-values' targets through
// onto, and drops a value of which onto refuses a target, or that is not strict RFC 8288 (a
// bare URL, which some clients follow as it is).
func KeepLinks(h http.Header, onto func(target string) (string, bool)) {
	links := h.Values("Link")
	if len(links) == 0 {
		return
	}
	var kept []string
	for _, v := range links {
		if rewritten, ok := linksOnProxy(v, onto); ok {
			kept = append(kept, rewritten)
		}
	}
	h["Link"] = kept
	if len(kept) == 0 {
		h.Del("Link")
	}
}

// linksOnProxy is a Link header's value with each link-value's target through onto; ok is false
// when a link-value does not start with its <target>, or onto refuses one.
func linksOnProxy(v string, onto func(string) (string, bool)) (string, bool) {
	var out []string
	for _, lv := range splitLinkValues(v) {
		lv = strings.TrimLeft(lv, " \t")
		end := strings.IndexByte(lv, '>')
		if !strings.HasPrefix(lv, "<") || end < 0 {
			return "", false
		}
		target, ok := onto(lv[1:end])
		if !ok {
			return "", false
		}
		out = append(out, "<"+target+">"+lv[end+1:])
	}
	return strings.Join(out, ", "), len(out) > 0
}

// splitLinkValues splits a Link header's value at the commas between link-values: those outside
// a <target> and outside a quoted parameter (where a backslash escapes the next character).
func splitLinkValues(v string) []string {
	var out []string
	inTarget, inQuotes, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuotes && c == '\\':
			i++
		case inQuotes:
			inQuotes = c != '"'
		case inTarget:
			inTarget = c != '>'
		case c == '<':
			inTarget = true
		case c == '"':
			inQuotes = true
		case c == ',':
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// dropInjectedParameters removes the query parameters named in injected (a generator's
// credential) from the URLs of an answer's Location and Link headers: a tool redirecting to the
// URL it was asked (a trailing slash added, a mirror) or paging with it would otherwise hand
// the credential to the client. A URL that still carries one of the values elsewhere (a login
// redirect nesting the URL it was asked in a parameter of its own, Jenkins' ?from=, SonarQube's
// return_to=, percent-encoded once or more) is dropped whole, as is such a Content-Location or
// Refresh.
func dropInjectedParameters(h http.Header, injected map[string]string) {
	if loc := h.Get("Location"); loc != "" {
		h.Set("Location", withoutParameters(loc, injected))
	}
	links := h.Values("Link")
	for i, link := range links {
		links[i] = linkWithoutParameters(link, injected)
	}
	for _, name := range []string{"Location", "Content-Location", "Refresh", "Link"} {
		values := h.Values(name)
		if !slices.ContainsFunc(values, func(v string) bool { return carriesInjected(v, injected) }) {
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(values), func(v string) bool { return carriesInjected(v, injected) })
		h.Del(name)
		for _, v := range kept {
			h.Add(name, v)
		}
	}
}

// minSecretBytes is the length under which an injected value is taken for no secret (a
// generator's v=1, format=json): looked for in what a tool answers, it would drop every
// redirect and page link holding "1".
const minSecretBytes = 8

// carriesInjected tells whether s holds one of the injected values, as it is or percent-decoded
// up to three times (percentDecoded: a caller's request can put a malformed escape into what a
// tool echoes back, which would stop a strict decoder).
func carriesInjected(s string, injected map[string]string) bool {
	for range 4 {
		for _, v := range injected {
			if len(v) >= minSecretBytes && strings.Contains(s, v) {
				return true
			}
		}
		decoded := percentDecoded(s)
		if decoded == s {
			return false
		}
		s = decoded
	}
	return false
}

// percentDecoded is s with each %XX of two hex digits decoded, anything else left as it is.
// Written here: net/url's decoders refuse a whole string for one malformed escape.
func percentDecoded(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// linkWithoutParameters is a Link header value with withoutParameters applied to each of its
// <URI-Reference>s (RFC 8288).
func linkWithoutParameters(link string, injected map[string]string) string {
	var b strings.Builder
	for {
		start := strings.IndexByte(link, '<')
		end := strings.IndexByte(link[start+1:], '>')
		if start < 0 || end < 0 {
			b.WriteString(link)
			return b.String()
		}
		end += start + 1
		b.WriteString(link[:start+1])
		b.WriteString(withoutParameters(link[start+1:end], injected))
		link = link[end:]
	}
}

// withoutParameters is the URL loc without the query parameters named in injected; a loc that
// does not parse, without its query.
func withoutParameters(loc string, injected map[string]string) string {
	u, err := url.Parse(loc)
	if err != nil {
		before, _, _ := strings.Cut(loc, "?")
		return before
	}
	if u.RawQuery == "" {
		return loc
	}
	q, dropped := u.Query(), false
	for name := range injected {
		if q.Has(name) {
			q.Del(name)
			dropped = true
		}
	}
	if !dropped {
		return loc
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// connector reads a Connector and its class from the informer caches.
func (p *Proxy) connector(ctx context.Context, nn types.NamespacedName) (*v1alpha1.Connector, *v1alpha1.ConnectorClass, error) {
	return p.connectorFrom(ctx, p.objects, nn)
}

// connectorFrom reads a Connector and its class from objects.
func (p *Proxy) connectorFrom(ctx context.Context, objects client.Reader, nn types.NamespacedName) (*v1alpha1.Connector, *v1alpha1.ConnectorClass, error) {
	var c v1alpha1.Connector
	if err := objects.Get(ctx, nn, &c); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil, refusef(http.StatusNotFound, "Connector %s not found", nn)
		case apierrors.IsRequestEntityTooLargeError(err): // the node keeps no Connector so large
			return nil, nil, refusef(http.StatusPreconditionFailed, "%v", err)
		}
		// The API server did not answer (a list refused, throttled or timed out): the
		// client may try again, and it is no fault of the tool's.
		return nil, nil, refusef(http.StatusServiceUnavailable, "cannot read Connector %s now: %v", nn, err)
	}
	var class v1alpha1.ConnectorClass
	if err := objects.Get(ctx, types.NamespacedName{Name: c.Spec.ConnectorClassName}, &class); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, refusef(http.StatusNotFound, "ConnectorClass %q of Connector %s not found", c.Spec.ConnectorClassName, nn)
		}
		return nil, nil, err
	}
	return &c, &class, nil
}

// newRoute resolves the credential and transport for a request to target through c.
func (p *Proxy) newRoute(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, target *url.URL) (*route, error) {
	denied := p.deniedCheckFor(c, class)
	if err := denied.check(target.EscapedPath()); err != nil {
		return nil, err // before the Secret is read: nothing of the credential is needed
	}
	cred, err := p.credentialFor(ctx, c, class)
	if err != nil {
		return nil, err
	}
	tr, _, err := p.transportFor(ctx, c)
	if err != nil {
		return nil, err
	}
	return &route{connector: c, target: target, cred: cred, transport: tr, denied: denied}, nil
}
