package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy/awaitread"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// FastLane serves the proxy listener's most common requests, keep-alive HTTP/1.1 GET and HEAD
// of the reverse and forward proxies to a tool whose credential is a basic or bearer header
// or headers its class's generator computes from the Secret alone, on the client connection's
// own goroutine: it reads the request, checks the caller and
// the Connector exactly as the full path does, writes the request to a pooled tool connection
// (directTransport) and writes the answer back. Every other request, and any request it
// cannot take before it has consumed a byte, goes with its connection, unread, to net/http's
// server (Accept hands such connections over), which serves the rest of that connection.
//
// Why it exists: net/http's server spends more CPU per small request than the proxying itself
// (a goroutine and a read for each request to notice a client leaving, a context, a response
// writer, ReverseProxy's copies of the request); docs/benchmarks.md measures it. Parsing stays
// net/http's (http.ReadRequest and http.ReadResponse); what is written here is the loop and
// the answer's framing, which no library offers outside a server.
type FastLane struct {
	p                          *Proxy
	lis                        net.Listener
	headerTimeout, idleTimeout time.Duration
	// maxBody is the largest request body read whole off a connection when it does not fit in
	// the connection's buffer (LaneLimits.MaxBodyBytes); bodies is what the buffers of such
	// bodies hold now, over all connections (at most laneBodyShare·maxBody: holdBody).
	maxBody int64
	bodies  atomic.Int64

	handed  chan net.Conn
	done    chan struct{}
	closing atomic.Bool

	// idle takes a connection to a goroutine that has served one and waits for the next
	// (dispatch); idleWorkers counts those waiting.
	idle        chan *laneConn
	idleWorkers atomic.Int64

	mu    sync.Mutex
	conns map[*laneConn]struct{}

	// shared are the routes connections remembered lately, for new connections' first heads.
	shared sharedMemos
}

// laneBufferSize bounds the request heads the fast lane reads: a larger one goes to net/http,
// which applies --proxy-max-header-bytes.
const laneBufferSize = 4 << 10

// laneWatchDelay is how long the fast lane serves a request before it starts watching the
// client connection, so that a client that leaves while a slow tool thinks, or stalls
// mid-answer, releases the tool's connection, as net/http's server does for every request.
const laneWatchDelay = 50 * time.Millisecond

// LaneLimits are the fast lane's bounds: HeaderTimeout and IdleTimeout are net/http's
// server's ReadHeaderTimeout and IdleTimeout; MaxBodyBytes is the largest request body the
// fast lane reads whole when it does not fit in a connection's buffer behind its head (larger
// ones, and any while laneBodyShare·MaxBodyBytes are held by others, are uploads, streamed:
// laneupload.go).
type LaneLimits struct {
	HeaderTimeout, IdleTimeout time.Duration
	MaxBodyBytes               int64
}

// laneBodyShare bounds what request bodies read whole may hold at once, in MaxBodyBytes: a
// client that sends most of a body and stalls holds its bytes, and without a bound as many
// clients as --proxy-max-connections would hold that many.
const laneBodyShare = 128

// FastLane serves lis; the listener it returns yields the connections the fast lane hands to
// net/http's server.
func (p *Proxy) FastLane(lis net.Listener, limits LaneLimits) *FastLane {
	l := &FastLane{p: p, lis: lis, headerTimeout: limits.HeaderTimeout, idleTimeout: limits.IdleTimeout, maxBody: limits.MaxBodyBytes,
		handed: make(chan net.Conn), done: make(chan struct{}), idle: make(chan *laneConn), conns: map[*laneConn]struct{}{}}
	p.lane.Store(l)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection handed over to net/http.
func (l *FastLane) Accept() (net.Conn, error) {
	select {
	case c := <-l.handed:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr is the listener's address.
func (l *FastLane) Addr() net.Addr { return l.lis.Addr() }

// Close stops accepting and wakes the fast lane's idle connections, which then close; a
// request being served finishes first.
func (l *FastLane) Close() error {
	if !l.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(l.done)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.conn.SetReadDeadline(aLongTimeAgo)
	}
	l.mu.Unlock()
	return l.lis.Close()
}

func (l *FastLane) acceptLoop() {
	for {
		conn, err := l.lis.Accept()
		if err != nil {
			if l.closing.Load() || errors.Is(err, net.ErrClosed) {
				_ = l.Close()
				return
			}
			// Out of file descriptors and the like: net/http's server backs off too.
			klog.Background().Error(err, "Proxy accept failed; retrying")
			time.Sleep(50 * time.Millisecond)
			continue
		}
		l.dispatch(l.newConn(conn, nil))
	}
}

// laneIdleWorkers bounds the goroutines that wait for a connection to serve (dispatch): a
// burst of connections leaves at most this many behind, each with its stack.
const laneIdleWorkers = 256

// dispatch serves c on a goroutine that has served a connection before when one is waiting,
// else on a new one. A new goroutine starts with the runtime's smallest stack and grows it,
// copying it, during its first request: with newproc and goexit, 6% of the driver's CPU time
// when every request comes on a connection of its own (docs/benchmarks.md). A goroutine kept
// keeps its stack (until the collector finds it idle and shrinks it).
func (l *FastLane) dispatch(c *laneConn) {
	select {
	case l.idle <- c:
	default:
		go l.work(c)
	}
}

// work serves c, then the connections dispatch gives it, while at most laneIdleWorkers wait
// and the fast lane is open.
func (l *FastLane) work(c *laneConn) {
	for c != nil {
		c.serve()
		c = l.nextConn()
	}
}

// nextConn waits for a connection to serve: nil when laneIdleWorkers wait already or the fast
// lane closes. The connection served before is not referenced while waiting: its memo holds
// the caller's Authorization, which must not outlive the connection.
func (l *FastLane) nextConn() *laneConn {
	defer l.idleWorkers.Add(-1)
	if l.idleWorkers.Add(1) > laneIdleWorkers {
		return nil
	}
	select {
	case c := <-l.idle:
		return c
	case <-l.done:
		return nil
	}
}

// newConn is a fast-lane connection over conn, inside t when it is a tunnel's.
func (l *FastLane) newConn(conn net.Conn, t *tunnel) *laneConn {
	c := &laneConn{lane: l, conn: conn, tunnel: t}
	c.br = laneReaders.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.cw = laneWriters.Get().(*bufio.Writer)
	c.cw.Reset(conn)
	c.stopWatch = c.stopWatching
	c.rawSeen.all = headHeaders{&c.raw}
	return c
}

// laneReaders and laneWriters are the connections' buffers, pooled: a client that sends one
// request per connection (curl in a pipeline's step) would otherwise have the proxy allocate
// three buffers of laneBufferSize for each request (docs/benchmarks.md).
var (
	laneReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, laneBufferSize) }}
	laneWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, laneBufferSize) }}
)

// releaseBuffers gives the connection's buffers back to their pools once it is served; its
// reader stays with it when handedOver (handedConn drains it).
func (c *laneConn) releaseBuffers(handedOver bool) {
	c.cw.Reset(nil)
	laneWriters.Put(c.cw)
	if c.headBuf != nil {
		c.headBuf.Reset(nil)
		laneReaders.Put(c.headBuf)
	}
	if !handedOver {
		c.br.Reset(nil)
		laneReaders.Put(c.br)
	}
	c.br, c.cw, c.headBuf = nil, nil, nil
}

// serveTunnel serves a CONNECT tunnel's requests (origin-form, to its one destination, with
// the token of its CONNECT) as a client connection's; those it does not take go, with the rest
// of the tunnel, to the tunnel's own net/http server.
func (l *FastLane) serveTunnel(conn net.Conn, t *tunnel) {
	l.newConn(conn, t).serve()
}

func (l *FastLane) track(c *laneConn, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
}

// laneConn is one client connection in the fast lane.
type laneConn struct {
	lane *FastLane
	conn net.Conn
	// tunnel is the CONNECT tunnel the connection is, or nil for a client connection.
	tunnel *tunnel
	br     *bufio.Reader // over the connection (through Read, for the watcher's byte)
	cw     *bufio.Writer
	// head parses a request head already in br without consuming it.
	head    bytes.Reader
	headBuf *bufio.Reader
	// The watcher (see watchRoundTrip): the byte it read, if any, is the next request's
	// first; left, that the client left meanwhile.
	watching   sync.WaitGroup
	watchTimer *time.Timer
	watchArmed bool
	// watchMu orders a started watcher's clearing of the read deadline before stopWatching's
	// waking deadline (watchStopping).
	watchMu       sync.Mutex
	watchStopping bool
	cancel        context.CancelFunc
	tool          net.Conn
	// guarded and guardedMethod are the round trip's route and method, whose caller a watch
	// checks again while it lasts (answerGuard).
	guarded       *route
	guardedMethod string
	guard         *answerGuard // a started watch's, until stopWatching
	stopWatch     func() bool  // stopWatching, for the direct transport's bodies
	pending       byte
	held          bool
	left          atomic.Bool
	// The heads the fast lane reads itself (lanewire.go), and room for a Date.
	raw laneHead
	// rawSeen is raw's headers as a generator sees them (its callerToken set per route).
	rawSeen generatorHeaders
	ans     answerHead
	scratch [64]byte
	// sent counts the answer's body bytes (metrics).
	sent int64
	// headAt is when the current head was whole (nextHead; its first byte's time when it
	// came with it): the one clock reading of a request read in place, for its memo's age,
	// its pooled connection's idle time and its duration. idleUntil is when nextHead next sets the idle deadline.
	headAt, idleUntil time.Time
	// lastHeadAt is headAt of the request before (sendWithNextRead).
	lastHeadAt time.Time
	// closeAfter: the client asked to close the connection after this answer.
	closeAfter bool
	// memo is the route of the connection's last GET or HEAD, which heads read in place
	// follow; bodyMemo that of its last request of another method (memoFor).
	memo, bodyMemo laneMemo
	// body holds the current request's body, empty for none (laneBody, inPlaceBody).
	body []byte
	// large is the current request, head and body, when its body did not fit in br behind
	// the head and was read out of br whole (readLarge), nil otherwise; largeHeld is what it
	// counts against the lane's share.
	large     *[]byte
	largeHeld int64
	// upload is the current request's body when it is read as the tool's connection is
	// written (laneupload.go), nil otherwise; watchedUpload is the same for the watcher, which
	// reads it while a request is served.
	upload        *uploadBody
	watchedUpload atomic.Pointer[uploadBody]
	// caller is the current reverse request's token and who found it, and extractors the
	// classes with an authExtractor then (keyOf).
	caller     extracted
	extractors []*v1alpha1.ConnectorClass
	// await reads the client once an answer read in place was written (sendWithNextRead),
	// and sendAnswer sends it (cw's Flush); both made on the first such answer.
	await      *awaitread.Reader
	sendAnswer func() error
}

// laneMemoTTL is how long a connection's last route is used again for the same token,
// Connector and method without asking the caches: its decisions are then at most that much
// older than the token and decision caches' own; a Pod's dropped decisions (ForgetPod) end
// it at once.
const laneMemoTTL = time.Second

// laneMemo is a connection's last route: clients send request after request with the same
// token to the same Connector (a clone's fetches, a build's downloads), and authenticating,
// authorizing and resolving the Connector and its credential again costs more than the
// proxying (docs/benchmarks.md).
type laneMemo struct {
	key laneKey
	// auth (reverse) is the Authorization value the route was resolved for, and prefix the
	// Connector's reverse path: what a head read in place is compared with (routeForHead).
	auth, prefix string
	// toolPath (reverse) is the escaped path of the Connector's address, which the request
	// URIs of heads read in place continue; inPlace is false when the address is not in a form
	// url.Parse keeps as written, and then no head is served in place along this route.
	toolPath string
	inPlace  bool
	// extractors (reverse, a token an authExtractor found) are the classes with an extractor
	// when the route was resolved, which heads read in place are given to (as the route
	// itself, they are at most laneMemoTTL old); foundBy are those that found the route's
	// caller token (rt.callerToken) then, and found holds what they find in a head
	// (sameCaller's buffer).
	extractors     []*v1alpha1.ConnectorClass
	foundBy, found []string
	// forwardAddrs (forward) are the Connector's addresses at the remembered destination's
	// scheme and host: one must cover the destination of a head read in place (coversPath).
	forwardAddrs []*url.URL
	// registryName and registryToken (a registry's route) are the repository of the last head
	// read in place and the cached token for pulls from it (registryAuthorization).
	registryName  string
	registryToken registryToken
	// pool is the tool connections' key in the direct transport; meter records the
	// requests served in place along the route.
	pool  directKey
	meter routeMeter
	// toolTail ends the tool request heads written in place (toolHeadTail).
	toolTail string
	rt       *route
	// epoch is the tick of podEpochs the route was resolved at, for its Pod's group
	// (rt.epochShard).
	epoch uint64
	until time.Time
}

// remember makes rt, resolved at epoch for key, the connection's remembered route; auth is the
// request's Authorization value as the client sent it.
func (m *laneMemo) remember(key laneKey, auth string, rt *route, epoch uint64) {
	*m = laneMemo{key: key, rt: rt, epoch: epoch, until: time.Now().Add(laneMemoTTL), inPlace: true, toolTail: toolHeadTail(rt)}
	if tr, ok := rt.transport.(*http.Transport); ok {
		m.pool = directKeyOf(tr, rt.target, rt.pool())
	}
	if !key.forward {
		m.auth = auth
		if !key.byHost {
			m.prefix = reversePrefix + key.connector.Namespace + "/connectors/" + key.connector.Name
		}
		m.toolPath, m.inPlace = addressPath(rt.connector.Spec.Address)
	} else {
		m.inPlace = !rt.forwardAmong
		for _, addr := range parsedAddresses(rt.connector) {
			if sameOrigin(addr, rt.target) {
				m.forwardAddrs = append(m.forwardAddrs, addr)
			}
		}
	}
}

// addressPath is the escaped path of a Connector's address as reverseTarget joins request
// paths to it; ok is false unless joining a path readLaneHead takes to it gives, through
// url.Parse, the two strings joined: the address has no query or fragment, and its path is
// one url.Parse keeps as written (EscapedPath is then the address's own text).
func addressPath(address string) (path string, ok bool) {
	base, err := url.Parse(strings.TrimSuffix(address, "/"))
	if err != nil || base.Opaque != "" || base.RawQuery != "" || base.ForceQuery || base.Fragment != "" || base.RawFragment != "" {
		return "", false
	}
	path = base.EscapedPath()
	return path, base.RawPath == "" || base.RawPath == path
}

// route returns the remembered route for a request of key to u, pointed at u, if it is still
// good. A forward route is used again only when the client named one Connector and it covers
// the new destination: among several, another may be the first to cover this path.
func (m *laneMemo) route(p *Proxy, u *url.URL, key laneKey) (*route, bool) {
	if !m.live(p, time.Now()) || !m.key.sameRoute(key) {
		return nil, false
	}
	var rt *route
	var ok bool
	if key.forward {
		rt, ok = m.forwardTo(u)
	} else {
		rt, ok = m.reverseTo(key.rest, u.RawQuery)
	}
	if !ok || !rt.denied.sendsAsRemembered(rt.target.EscapedPath()) {
		return nil, false // the general path refuses it, or reads it
	}
	return rt, true
}

// routeForHead is route for a head read in place (readLaneHead): the same comparisons, on the
// head's bytes, and the request URI the tool gets. It returns the memo's own route, not one
// pointed at the request's target: the in-place path needs only the route's credential and
// host (targetAt builds the rest where needed). A reverse target is split as
// url.ParseRequestURI and parseReversePath split the strict targets readLaneHead takes, and
// its request URI joined as reverseTarget's url.Parse would give it (addressPath), without
// building a URL.
func (m *laneMemo) routeForHead(p *Proxy, h *laneHead, now time.Time) (rt *route, uri string, ok bool) {
	if !m.live(p, now) || !m.inPlace || h.method != m.key.method {
		return nil, "", false
	}
	if m.key.tunnel { // the tunnel's token and destination are its CONNECT's
		return m.forwardPath(h.target)
	}
	if m.key.forward { // an origin-form head on a connection of forward requests is not one
		if h.proxyAuth == nil || string(h.proxyAuth) != m.key.credential || !bytes.HasPrefix(h.target, []byte("http://")) {
			return nil, "", false
		}
		return m.forwardHead(h.target)
	}
	if string(h.host) != m.key.host || !m.sameCaller(p, h) {
		return nil, "", false
	}
	path, query, _ := bytes.Cut(h.target, []byte("?"))
	if len(path) < len(m.prefix) || string(path[:len(m.prefix)]) != m.prefix {
		return nil, "", false
	}
	rest := path[len(m.prefix):]
	if len(rest) > 0 && rest[0] != '/' {
		return nil, "", false // another Connector whose name starts with this one's
	}
	if CheckPath(string(rest)) != nil || m.rt.callerToken != "" && !tokenFreeInPlace(h, query, m.rt.callerToken) {
		return nil, "", false
	}
	return m.allowed(toolRequestURI(m.toolPath, rest, query, len(query) > 0))
}

// allowed is the memo's route to uri, a request URI along it, unless uri's path is one of the
// denied paths (which the general path refuses) or a GraphQL path (whose requests it reads).
func (m *laneMemo) allowed(uri string) (rt *route, _ string, ok bool) {
	escaped, _, _ := strings.Cut(uri, "?")
	if !m.rt.denied.sendsAsRemembered(escaped) {
		return nil, "", false
	}
	return m.rt, uri, true
}

// sameCaller tells whether a reverse head read in place has the caller m's route was resolved
// for: the same Authorization value or, for a token authExtractors found, none in
// Authorization and the same token found by the same classes (their kept answers to the
// head's request line and headers, the path decoded as r.URL.Path; a head an extractor would
// need more of is not compared).
func (m *laneMemo) sameCaller(p *Proxy, h *laneHead) bool {
	if m.rt.callerToken == "" {
		return h.auth != nil && string(h.auth) == m.auth
	}
	if h.auth != nil && authorizationToken(string(h.auth)) != "" {
		return false
	}
	escaped, query, _ := bytes.Cut(h.target, []byte("?"))
	path, ok := decodedPath(string(escaped))
	if !ok {
		return false
	}
	// The head's host is key's (routeForHead); the query is the client's, as r.URL.RawQuery.
	head := regoeval.RequestHead{Method: h.method, Path: path, Host: m.key.host, RawQuery: string(query), HasQuery: true, Header: headHeaders{h}}
	found, ok := p.extractFrom(context.Background(), m.extractors, head, nil, m.found)
	m.found = found.foundBy
	return ok && found.token == m.rt.callerToken && slices.Equal(found.foundBy, m.foundBy)
}

// tokenFreeInPlace tells whether the tool request of a head read in place, along a route whose
// caller's token an extractor found, needs nothing of what the general path does to keep the
// token from the tool beyond leaving out the header lines that hold it (writeToolHead): no
// query parameter holds it (the general path re-encodes a query it drops one from), nor the
// User-Agent (dropping it, the general path sends Go's own).
func tokenFreeInPlace(h *laneHead, query []byte, token string) bool {
	if holds(h.userAgent, token) {
		return false
	}
	if len(query) == 0 {
		return true
	}
	q, _ := url.ParseQuery(string(query))
	return !dropParamsWith(q, token)
}

// forwardHead is routeForHead's forward half: target is an absolute http:// one readLaneHead
// took. Its authority must be the remembered one, and its path one of no escapes (its decoded
// and escaped forms are then its bytes, as url.ParseRequestURI would give them) that covers
// takes under one of the Connector's addresses there.
func (m *laneMemo) forwardHead(target []byte) (rt *route, uri string, ok bool) {
	authority, _ := forwardAuthority(target)
	if string(authority) != m.key.host {
		return nil, "", false
	}
	return m.forwardPath(target[len("http://")+len(authority):])
}

// forwardPath is forwardHead's check of an origin-form target at the remembered destination
// (a forward target's path and query, or a tunnel's target).
func (m *laneMemo) forwardPath(target []byte) (rt *route, uri string, ok bool) {
	path, query, hasQuery := bytes.Cut(target, []byte("?"))
	if !m.forwardsTo(path) {
		return nil, "", false
	}
	return m.allowed(toolRequestURI("", path, query, hasQuery))
}

// forwardsTo tells whether one of forwardAddrs covers escaped, a path readLaneHead took: as
// covers does a URL's, given its decoded form and, as its EscapedPath, its own bytes (the
// URL url.ParseRequestURI makes of such a path keeps them as written).
func (m *laneMemo) forwardsTo(escaped []byte) bool {
	raw := string(escaped)
	path, ok := decodedPath(raw)
	if !ok {
		return false
	}
	for _, addr := range m.forwardAddrs {
		if coversPath(addr, path, raw) {
			return true
		}
	}
	return false
}

// decodedPath is escaped decoded as url.ParseRequestURI decodes a path into Path; ok is false
// for an escape that is not well formed (readLaneHead takes none).
func decodedPath(escaped string) (path string, ok bool) {
	if strings.IndexByte(escaped, '%') < 0 {
		return escaped, true
	}
	path, err := url.PathUnescape(escaped)
	return path, err == nil
}

// toolPathOf is the path of uri, a tool request URI written in place, decoded as the general
// path's rt.target.Path (decodedPath).
func toolPathOf(uri string) (path string, ok bool) {
	escaped, _, _ := strings.Cut(uri, "?")
	return decodedPath(escaped)
}

// toolRequestURI is the request URI of the tool path toolPath followed by rest ("/" when
// both are empty), and "?" and query when withQuery.
func toolRequestURI(toolPath string, rest, query []byte, withQuery bool) string {
	n := max(len(toolPath)+len(rest), 1)
	if withQuery {
		n += 1 + len(query)
	}
	b := make([]byte, 0, n)
	b = append(append(b, toolPath...), rest...)
	if len(b) == 0 {
		b = append(b, '/')
	}
	if withQuery {
		b = append(append(b, '?'), query...)
	}
	return string(b)
}

// targetAt is rt's target at uri, a request URI along it: for what needs the whole URL (a
// redirect's relative Location is resolved against it).
func targetAt(rt *route, uri string) *url.URL {
	t := *rt.target
	if u, err := url.ParseRequestURI(uri); err == nil {
		t.Path, t.RawPath, t.RawQuery, t.ForceQuery = u.Path, u.RawPath, u.RawQuery, u.ForceQuery
	}
	return &t
}

// live tells whether the memo holds a route within its time and from before any decisions of
// its Pod's group were dropped.
func (m *laneMemo) live(p *Proxy, now time.Time) bool {
	return m.rt != nil && p.podEpochs.unchanged(m.rt.epochShard, m.epoch) && now.Before(m.until)
}

func (m *laneMemo) forwardTo(u *url.URL) (*route, bool) {
	if m.rt.forwardAmong || !coveredBy(m.rt.connector, u) {
		return nil, false
	}
	target := *u
	return m.along(&target), true
}

func (m *laneMemo) reverseTo(rest, rawQuery string) (*route, bool) {
	if CheckPath(rest) != nil {
		return nil, false
	}
	target, err := reverseTarget(m.rt.connector, rest, rawQuery)
	if err != nil {
		return nil, false
	}
	return m.along(target), true
}

// along is the remembered route pointed at target (a copy: the memo's own is shared).
func (m *laneMemo) along(target *url.URL) *route {
	rt := *m.rt
	rt.target = target
	return &rt
}

// Read reads the client connection, the watcher's byte first.
func (c *laneConn) Read(p []byte) (int, error) {
	if c.held && len(p) > 0 {
		c.held = false
		p[0] = c.pending
		return 1, nil
	}
	if c.await != nil {
		return c.await.Read(p)
	}
	return c.conn.Read(p)
}

// lanePipelinedWait bounds how long a request a client pipelined before it had the answer
// before may wait unnoticed (awaitread's Guard): HTTP/1.1 allows pipelining, and clients seldom do it.
const lanePipelinedWait = 10 * time.Millisecond

// sendWithNextRead leaves the answer in cw to the read of the next head, which sends it and
// waits for that head without first reading a socket that cannot hold it yet
// (awaitread.Reader). It sends it now when no head is to follow (the client asked to close) or
// the connection is no plain socket (a tunnel's TLS); when cw is empty (the answer outgrew it
// and went out whole already: the client may have sent its next request before the next read
// begins, where that read would not notice it); and when this request came lanePipelinedWait
// or more after the one before (a client that pauses between requests, whose waits the guard
// would wake, at the cost of a timer, two deadlines and the read it saves).
func (c *laneConn) sendWithNextRead() error {
	if c.closeAfter || c.cw.Buffered() == 0 || c.headAt.Sub(c.lastHeadAt) >= lanePipelinedWait {
		return c.cw.Flush()
	}
	if c.await == nil {
		c.await = awaitread.NewReader(c.conn)
		if c.await.Awaits() {
			c.await.Guard(lanePipelinedWait, c.resumeIdleDeadline)
			c.sendAnswer = c.cw.Flush
		}
	}
	if !c.await.Awaits() {
		return c.cw.Flush()
	}
	c.await.SendThenRead(c.sendAnswer)
	return nil
}

// sendAnswerNow sends an answer sendWithNextRead left to the next read, if any: the next head
// is here already, or none is read.
func (c *laneConn) sendAnswerNow() error {
	if c.await == nil {
		return nil
	}
	return c.await.SendNow()
}

// resumeIdleDeadline sets the idle deadline again after the guard's wake replaced it; it
// fails when the fast lane is closing (whose wake the deadline may just have replaced).
func (c *laneConn) resumeIdleDeadline() error {
	c.setReadDeadline(c.lane.idleTimeout)
	if c.lane.closing.Load() {
		return net.ErrClosed
	}
	return nil
}

// serve serves requests until the connection closes, fails, or goes to net/http.
func (c *laneConn) serve() {
	c.lane.track(c, true)
	handedOver := false
	defer func() {
		c.lane.track(c, false)
		_ = c.sendAnswerNow()
		if c.await != nil {
			c.await.StopGuard()
		}
		if !handedOver {
			c.closeUnread()
		}
		c.releaseBuffers(handedOver)
	}()
	for {
		c.setUpload(nil)
		head, ok := c.nextHead()
		if !ok {
			return
		}
		if taken, ok := c.serveRemembered(head); taken {
			c.releaseLarge()
			if !ok || c.closeAfter {
				return
			}
			continue
		}
		if c.large != nil { // inPlaceBody read the request out of br
			head = (*c.large)[:len(head)]
		}
		req, size := c.parse(head)
		if req == nil {
			handedOver = c.handOver()
			return
		}
		c.closeAfter = req.Close
		taken, ok := c.serveRequest(req, size)
		if !taken {
			handedOver = c.handOver()
			return
		}
		c.releaseLarge()
		if !ok || c.closeAfter {
			return
		}
	}
}

// nextHead waits (up to the idle timeout) for the next request and returns its head, still
// unread in br, or the start of one too large for br. ok is false when the connection ended.
func (c *laneConn) nextHead() (head []byte, ok bool) {
	if (c.br.Buffered() > 0 || c.held) && c.sendAnswerNow() != nil { // the next head is here already
		return nil, false
	}
	if !c.idleDeadlineSet() || c.lane.closing.Load() {
		return nil, false
	}
	if _, err := c.br.Peek(1); err != nil {
		return nil, false
	}
	c.lastHeadAt, c.headAt = c.headAt, time.Now()
	// A head that came whole with its first byte, the common case, is read under the idle
	// deadline; else the rest must come within the header timeout. Either deadline stays until
	// the next one: nothing else reads the client before the next head but the watcher, which
	// clears it (watch), and net/http's server, which sets its own.
	if head, whole := bufferedHead(c.br); whole {
		return head, true
	}
	c.setReadDeadline(c.lane.headerTimeout)
	head, _, err := peekHead(c.br) // one too large for br is handed over
	// The head is judged when it is whole: one sent slowly (up to the header timeout) must not
	// ride a remembered route (laneMemo.live) that expired while it came.
	c.headAt = time.Now()
	return head, err == nil
}

// idleDeadlineSet sets the idle deadline for the next head unless the one set for an earlier
// head still has at least idleTimeout·15/16 to run (idleUntil): setting a deadline reads the
// clock three times and moves a runtime timer, for every request of a keep-alive client.
// false when the connection is closed.
func (c *laneConn) idleDeadlineSet() bool {
	if !c.idleUntil.IsZero() && c.headAt.Before(c.idleUntil) {
		return true
	}
	now := time.Now()
	if c.conn.SetReadDeadline(now.Add(c.lane.idleTimeout)) != nil {
		return false
	}
	c.idleUntil = now.Add(c.lane.idleTimeout / 16)
	return true
}

// setReadDeadline sets the client connection's read deadline d from now, or none (0), in
// place of the idle deadline (which nextHead then sets again).
func (c *laneConn) setReadDeadline(d time.Duration) {
	c.idleUntil = time.Time{}
	if d == 0 {
		_ = c.conn.SetReadDeadline(time.Time{})
		return
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
}

// bufferedHead returns the head at the start of br if br holds it whole.
func bufferedHead(br *bufio.Reader) (head []byte, whole bool) {
	buf, _ := br.Peek(br.Buffered())
	if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
		return buf[:i+4], true
	}
	return nil, false
}

// peekHead returns the head at the start of br, through its empty line, without consuming
// it; whole is false when br filled up before the head's end.
func peekHead(br *bufio.Reader) (head []byte, whole bool, err error) {
	for {
		if head, whole := bufferedHead(br); whole {
			return head, true, nil
		}
		if br.Buffered() == br.Size() {
			head, _ := br.Peek(br.Size())
			return head, false, nil
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, false, err
		}
	}
}

// parse reads head as net/http does, without consuming it, and returns the request if it is
// one the fast lane takes, else nil; size is the request's in br: its head and its body, which
// must fit in br whole (laneBody).
func (c *laneConn) parse(head []byte) (r *http.Request, size int) {
	if !laneRequestLine(head, c.tunnel != nil) || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return nil, 0
	}
	c.head.Reset(head)
	if c.headBuf == nil {
		c.headBuf = laneReaders.Get().(*bufio.Reader)
	}
	c.headBuf.Reset(&c.head)
	req, err := http.ReadRequest(c.headBuf)
	if err != nil || !wholeHeadRead(c.headBuf, &c.head) || !laneRequest(req) || !c.laneBody(req, len(head)) {
		return nil, 0
	}
	if c.upload != nil {
		return req, len(head) // its body is read as it is sent
	}
	return req, len(head) + int(req.ContentLength)
}

// wholeHeadRead tells whether http.ReadRequest read all of the head it was given (through br,
// from head): where it found the head's end before the lane did (a line ended by a bare LF,
// which net/http takes and the lane's search for CRLF CRLF does not), the lane would take its
// body from after the lane's end of the head, not the parser's, and drop what lay between.
// Such a request goes to net/http's server with the connection, which frames it one way.
func wholeHeadRead(br *bufio.Reader, head *bytes.Reader) bool {
	return br.Buffered() == 0 && head.Len() == 0
}

// laneMethods are the methods whose requests the fast lane reads: GET and HEAD, and those
// that may carry a body it takes when the body is small (laneBody).
var laneMethods = []string{"GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE "}

// laneRequestLine tells whether head starts with a lane method and a target in origin-form
// (the reverse proxy's paths, a Connector's own host, a tunnel's requests) or, outside
// tunnels, in absolute-form.
func laneRequestLine(head []byte, inTunnel bool) bool {
	for _, m := range laneMethods {
		if target, ok := bytes.CutPrefix(head, []byte(m)); ok {
			return bytes.HasPrefix(target, []byte("/")) || !inTunnel && bytes.HasPrefix(target, []byte("http://"))
		}
	}
	return false
}

// laneBody gives r, whose head of headLen bytes is at the start of br, its body when it has
// one of a Content-Length: one that fits in br behind the head, or that readLarge reads out,
// waited for under the header timeout, copied out of br (still unconsumed: a request handed
// over is read again whole), and able to be written again (GetBody: the direct transport
// sends it once more on a new connection only when a pooled one proved closed before anything
// was written); a larger one, or one readLarge has no room for, as an upload, read as it is
// sent once the request is taken (startUpload). A body that does not come within the header
// timeout goes, with what came of it, to net/http's server.
func (c *laneConn) laneBody(r *http.Request, headLen int) bool {
	// Chunked, of a method with a body (laneRequest); or a body that does not come before
	// its 100 (Continue).
	if len(r.TransferEncoding) != 0 || expectsContinue(r) {
		c.startUpload(r, headLen)
		return true
	}
	if r.ContentLength == 0 {
		c.body = c.body[:0]
		return true
	}
	body, ok := c.wholeBody(headLen, r.ContentLength, true)
	if !ok {
		if c.large != nil || r.ContentLength <= int64(c.br.Size()-headLen) {
			return false // it did not come
		}
		c.startUpload(r, headLen)
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return true
}

// wholeBody is the body of n bytes behind a head of headLen at the start of br, copied out of
// br (still unconsumed), if wait, waited for under the header timeout; ok is false when it
// does not fit in br behind the head, or is not there (not waited for), or does not come (the
// head is then net/http's server's, which reads on under its own deadlines). If wait, a body
// that does not fit is read out of br with its head (readLarge).
func (c *laneConn) wholeBody(headLen int, n int64, wait bool) (body []byte, ok bool) {
	if n > int64(c.br.Size()-headLen) {
		if !wait {
			return nil, false
		}
		return c.readLarge(headLen, n)
	}
	size := headLen + int(n)
	if c.br.Buffered() < size {
		if !wait {
			return nil, false
		}
		c.setReadDeadline(c.lane.headerTimeout)
	}
	buf, err := c.br.Peek(size) // reads only what br does not hold yet
	if err != nil {
		return nil, false
	}
	c.body = append(c.body[:0], buf[headLen:]...)
	return c.body, true
}

// largeBuffers hold requests whose bodies did not fit in a connection's buffer (readLarge),
// only while such a request is served; by size class, 8 KiB doubling up to 1 MiB (larger ones,
// which the flag may allow, are not pooled).
var largeBuffers [8]sync.Pool

// largeCap is the capacity of the buffer for a request of size bytes: its size class's.
func largeCap(size int64) int64 {
	if class := bits.Len64(uint64(size-1) >> 13); class < len(largeBuffers) {
		return 8 << 10 << class
	}
	return size
}

func getLarge(size int64) *[]byte {
	capacity := largeCap(size)
	if class := bits.Len64(uint64(capacity-1) >> 13); class < len(largeBuffers) {
		if b, _ := largeBuffers[class].Get().(*[]byte); b != nil {
			return b
		}
	}
	b := make([]byte, 0, capacity)
	return &b
}

func putLarge(b *[]byte) {
	capacity := int64(cap(*b))
	if class := bits.Len64(uint64(capacity-1) >> 13); class < len(largeBuffers) && capacity == largeCap(capacity) {
		largeBuffers[class].Put(b)
	}
}

// readLarge reads the request of a head of headLen and a body of n bytes that does not fit in
// br behind it out of br, whole, into c.large, under the header timeout, as wholeBody does
// with a body that fits: a small upload (a manifest, a pom, a small push) then stays in the
// fast lane, and so does the rest of its connection. ok is false, with nothing read, for a
// body over the lane's maxBody or while other such requests' buffers hold the lane's share;
// and, with what was read kept in c.large for net/http's server (handOver), when the body
// does not come.
func (c *laneConn) readLarge(headLen int, n int64) (body []byte, ok bool) {
	l := c.lane
	size := int64(headLen) + n
	if c.large != nil { // read out already, for a head read in place that then took this path
		if int64(len(*c.large)) != size {
			return nil, false
		}
		c.body = (*c.large)[headLen:size]
		return c.body, true
	}
	if n > l.maxBody {
		return nil, false
	}
	held := largeCap(size)
	if !l.holdBody(held) {
		return nil, false
	}
	buf := getLarge(size)
	c.large, c.largeHeld = buf, held
	buffered, _ := c.br.Peek(c.br.Buffered()) // the head and the body's start: less than size
	*buf = append((*buf)[:0], buffered...)
	_, _ = c.br.Discard(len(buffered))
	c.setReadDeadline(c.lane.headerTimeout)
	k, err := io.ReadFull(c.br, (*buf)[len(buffered):size])
	*buf = (*buf)[:len(buffered)+k]
	if err != nil {
		return nil, false
	}
	c.body = (*buf)[headLen:size]
	return c.body, true
}

// holdBody counts a buffer of n bytes for a request body against the lane's share; false,
// with nothing counted, when the share has no room for it.
func (l *FastLane) holdBody(n int64) bool {
	if l.bodies.Add(n) > laneBodyShare*l.maxBody {
		l.bodies.Add(-n)
		return false
	}
	laneBodyBytes.Add(float64(n))
	return true
}

// releaseBody gives back what holdBody counted.
func (l *FastLane) releaseBody(n int64) {
	l.bodies.Add(-n)
	laneBodyBytes.Sub(float64(n))
}

// consume takes a request of size bytes off the connection: out of br, unless readLarge read
// it out already; an upload's head only, its body then read as it is sent.
func (c *laneConn) consume(size int) {
	switch {
	case c.upload != nil:
		c.upload.arm()
	case c.large == nil:
		_, _ = c.br.Discard(size)
	}
}

// releaseLarge returns the buffer of a request readLarge read, served now, to its pool (the
// body, which c.body and GetBody held, is no longer read).
func (c *laneConn) releaseLarge() {
	if c.large == nil {
		return
	}
	c.lane.releaseBody(c.largeHeld)
	c.body = nil
	putLarge(c.large)
	c.large = nil
}

// laneRequest tells whether the fast lane takes r: a body of a GET or HEAD (chunked or not),
// an upgrade, an expectation other than a body's 100-continue (expectsContinue), declared
// trailers, headers the Connection header names, a host
// net/http's server would refuse, or another proxy's hop marker goes to net/http, which
// answers it as it always has. (http.ReadRequest takes no transfer coding but chunked, and
// drops a Content-Length beside it, as net/http's server does.)
func laneRequest(r *http.Request) bool {
	// http.ReadRequest refuses a second Host header and moves the one to r.Host; the checks
	// net/http's server adds to it are these.
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Host == "" || !httpguts.ValidHostHeader(r.Host) ||
		r.ContentLength != 0 && bodyMayBeIgnored(r.Method) {
		return false
	}
	if _, expects := r.Header["Expect"]; expects && !expectsContinue(r) {
		return false
	}
	if r.URL.IsAbs() { // the forward proxy; a Connector's own host does not apply
		return r.URL.Scheme == "http" && noneOf(r.Header, laneRefusedHeaders) && MethodOverride(r) == ""
	}
	for name, values := range r.Header {
		if !httpguts.ValidHeaderFieldName(name) {
			return false
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return noneOf(r.Header, laneRefusedHeaders) && MethodOverride(r) == ""
}

// laneRefusedHeaders are headers whose requests the fast lane leaves to the full path, as
// are those that may override their method (MethodOverride), which may need another verb than
// the method's, by which the lane remembers routes.
var laneRefusedHeaders = []string{"Upgrade", "Te", "Trailer", egress.HopHeader}

// expectsContinue tells whether r asks for a 100 (Continue) before it sends its body: one
// Expect: 100-continue on a request with a body (curl sends it for bodies over 1 MiB, Maven
// for its PUTs). net/http's server answers another expectation 417, and ignores this one
// without a body.
func expectsContinue(r *http.Request) bool {
	v := r.Header["Expect"]
	return len(v) == 1 && strings.EqualFold(v[0], "100-continue") && !getOrHead(r.Method) &&
		(r.ContentLength > 0 || len(r.TransferEncoding) != 0)
}

// noneOf tells whether h has none of names, and names only keep-alive or close in Connection.
func noneOf(h http.Header, names []string) bool {
	for _, name := range names {
		if _, ok := h[name]; ok {
			return false
		}
	}
	for _, v := range h["Connection"] {
		for token := range strings.SplitSeq(v, ",") {
			if t := strings.TrimSpace(token); !strings.EqualFold(t, "keep-alive") && !strings.EqualFold(t, "close") {
				return false
			}
		}
	}
	return true
}

// serveRequest serves r, or refuses it as the full path would, unless its route is one the
// fast lane does not send (a credential it does not inject, a pass-through destination):
// then taken is false and nothing was consumed (the full path checks the caller again). ok is
// false when the connection cannot go on. size is r's size in br, its head and body.
func (c *laneConn) serveRequest(r *http.Request, size int) (taken, ok bool) {
	p := c.lane.p
	key, target, isLane := c.keyOf(r)
	if !isLane {
		return false, false // net/http's path answers, or asks the classes' authExtractors
	}
	epoch := p.podEpochs.now() // before the decisions: one dropped meanwhile is not remembered
	answer := &bufferedAnswer{header: http.Header{}}
	m, record := p.metered(answer, r, key.mode())
	defer record()
	memo := c.memoFor(r.Method)
	rt, remembered := memo.route(p, target, key)
	if remembered && holdsCallerToken(rt, c.body) {
		remembered = false // resolve refuses it (checkExtracted), as the full path does
	}
	if !remembered {
		var handOver bool
		if rt, handOver = c.resolve(m, r, key, target); handOver || !c.uploadTaken(rt) {
			m.handedOver = true // answered, and recorded, by the full path
			return false, false
		}
		if rt == nil {
			c.consume(size)
			// An upload's body is not read for a refusal: the connection closes after it.
			c.closeAfter = c.closeAfter || c.upload != nil || answer.header.Get("Connection") == "close"
			return true, c.answer(answer)
		}
	}
	tr, isHTTP := rt.transport.(*http.Transport)
	if !isHTTP || !p.laneCredential(r, rt) || !c.uploadTaken(rt) {
		m.handedOver = true
		return false, false
	}
	auth := r.Header.Get("Authorization") // before outgoing replaces it with the tool's
	out := outgoing(r, rt)
	if !p.direct.takes(tr, out) {
		m.handedOver = true
		return false, false
	}
	if !remembered {
		memo.remember(key, auth, rt, epoch)
		memo.extractors, memo.foundBy = c.extractors, c.caller.foundBy
		if c.tunnel == nil {
			c.lane.shared.share(p, memo)
		}
	}
	c.consume(size)
	if !c.sendContinue() {
		return true, false
	}
	laneServed.Inc()
	routed(m, rt)
	ok = c.forward(out, rt, m)
	m.bytes = c.sent
	return true, c.endUpload() && ok
}

// laneCredential tells whether the fast lane sets rt's credential for r: a basic or bearer
// Authorization, or a generator's headers or query parameters, set into rt here for each
// request: a lookup for a generator whose answers are kept, an evaluation over r (as the full
// path's generate) for one that reads more of it. A generator that fails, or injects into the
// body, is the full path's (which answers the failure, or rewrites the body).
func (p *Proxy) laneCredential(r *http.Request, rt *route) bool {
	if rt.cred.generator == nil {
		return true
	}
	inj, err := p.injection(r, rt)
	if err != nil || inj.Position == regoeval.PositionBody {
		return false
	}
	rt.injection = inj
	return true
}

// headerInjection is the answer of rt's generator to a request of head, the rest of which
// request describes (nil: none at hand), when it answers with headers; nil otherwise: one that
// needs more of the request than is at hand is evaluated, and an error is answered, by the
// full path.
func (p *Proxy) headerInjection(rt *route, head regoeval.RequestHead, request func() *regoeval.Request) *regoeval.Injection {
	inj, err := p.generatorAnswer(context.Background(), rt, head, request)
	if err != nil || inj.Position != regoeval.PositionHeader {
		return nil
	}
	return inj
}

// keyOf is r's key and target (in a tunnel, the tunnel's destination at r's path); ok is
// false for a request the fast lane leaves to the full path (laneKeyOf), and for a reverse
// one in which neither Authorization nor a class's authExtractor has a token. A reverse
// request's caller (its token, and the classes whose extractor found it) is kept in c for
// resolve.
func (c *laneConn) keyOf(r *http.Request) (key laneKey, target *url.URL, ok bool) {
	if c.tunnel != nil {
		return c.tunnel.key(r.Method), c.tunnel.target(r.URL), true
	}
	key, ok = laneKeyOf(r)
	if ok && !key.forward {
		c.caller, c.extractors = extracted{token: key.credential}, nil
		if key.credential == "" {
			p := c.lane.p
			c.extractors = p.extractors(r.Context())
			c.caller, _ = p.extract(r.Context(), c.extractors, r)
			key.credential = extractedCredential(c.caller)
		}
		ok = c.caller.token != ""
	}
	return key, r.URL, ok
}

// extractedCredential is a laneKey's credential for a token authExtractors found: the token
// and the classes that found it, which a route is remembered for together (reverseRoute
// checks the Connector's class against them). It starts with a NUL, which no Authorization
// value has, so no token sent in Authorization shares it; the token is length-prefixed (an
// extractor may find one with a NUL in a query), and class names have none.
func extractedCredential(caller extracted) string {
	if caller.token == "" {
		return ""
	}
	return "\x00" + strconv.Itoa(len(caller.token)) + "\x00" + caller.token + "\x00" + strings.Join(caller.foundBy, "\x00")
}

// laneKey is what a fast-lane request's route depends on, besides its path.
type laneKey struct {
	// forward: an absolute-form request, its credential the Proxy-Authorization value and its
	// destination the URL's host; else a reverse one, the token, the Connector and the host
	// the client reached the proxy by.
	forward    bool
	tunnel     bool // forward, inside a CONNECT tunnel (its credential that of the CONNECT)
	credential string
	method     string
	connector  types.NamespacedName
	host       string
	// byHost (reverse): the host is the Connector's own, and so the whole path is under its
	// address (it follows from host).
	byHost bool
	rest   string // the reverse path under the Connector's address (not part of the identity)
}

func (k laneKey) mode() string {
	if k.tunnel {
		return modeTunnelled
	}
	if k.forward {
		return modeForward
	}
	return modeReverse
}

func (k laneKey) sameRoute(o laneKey) bool {
	return k.forward == o.forward && k.tunnel == o.tunnel && k.credential == o.credential && k.method == o.method && k.connector == o.connector && k.host == o.host
}

// laneKeyOf reads r's key, its credential the Proxy-Authorization value (forward; "" when
// there is none: resolve answers 407, as the full path does, to the client's first try) or
// the token in Authorization (reverse; "" when there is none there); ok is false for a request
// the fast lane leaves to the full path: one neither forward, nor to a Connector's own host,
// nor of a reverse-proxy path. A Connector's own host comes first, as in Proxy.ServeHTTP: the
// whole path is then under its address.
func laneKeyOf(r *http.Request) (laneKey, bool) {
	if r.URL.IsAbs() {
		return laneKey{forward: true, credential: r.Header.Get("Proxy-Authorization"), method: r.Method, host: r.URL.Host}, true
	}
	nn, byHost := connectorOfHost(r.Host)
	rest, isReverse := r.URL.EscapedPath(), byHost
	if !byHost {
		nn, rest, isReverse = parseReversePath(rest)
	}
	// The host the client named is in the route too: redirects are rewritten to it.
	return laneKey{credential: clientToken(r.Header), method: r.Method, connector: nn, host: r.Host, byHost: byHost, rest: rest}, isReverse
}

// resolve routes r as the full path does, writing a refusal into m (rt nil); handOver is true
// for a forward request to a destination no named Connector covers, which pass-through takes.
func (c *laneConn) resolve(m *meteredWriter, r *http.Request, key laneKey, target *url.URL) (rt *route, handOver bool) {
	p := c.lane.p
	if c.tunnel != nil {
		return c.tunnel.route(m, r, target), false
	}
	if !key.forward {
		return p.routeReverse(m, r, key.connector, key.rest, c.caller), false
	}
	fc, ok := p.forwardAuth(m, r)
	if !ok {
		return nil, false
	}
	rt, err := p.forwardRoute(r, fc, r.URL)
	var notCovered *notCoveredError
	switch {
	case errors.As(err, &notCovered) && p.passthrough.on():
		return nil, true
	case err != nil:
		refuseErr(r.Context(), m, err)
		return nil, false
	}
	if len(fc.connectors) > 1 {
		rt.forwardAmong = true
	}
	return rt, false
}

// memoFor is the remembered route for requests of method: GET's and HEAD's, or another
// method's, apart, so that a clone's POSTs among its GETs, or a push's PUTs among its HEADs,
// leave the GETs' route in place.
func (c *laneConn) memoFor(method string) *laneMemo {
	if getOrHead(method) {
		return &c.memo
	}
	return &c.bodyMemo
}

// answer writes a buffered answer (a refusal) to the client.
func (c *laneConn) answer(a *bufferedAnswer) bool {
	if c.closeAfter {
		a.header["Connection"] = closeConnection
	}
	return a.writeTo(c.cw) == nil && c.cw.Flush() == nil
}

// outgoing turns r, which the fast lane owns, into the tool's request, as ReverseProxy and
// rewrite do: hop-by-hop and X-Forwarded headers out, no Go User-Agent, then the route.
func outgoing(r *http.Request, rt *route) *http.Request {
	h := r.Header
	RemoveHopByHop(h)
	for _, name := range forwardedHeaders {
		delete(h, name)
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = noUserAgent
	}
	r.Close, r.RequestURI = false, ""
	applyRoute(r, rt)
	return r
}

// hopByHopHeaders are the headers ReverseProxy removes in both directions (its list is not
// exported), besides those the Connection header names.
var hopByHopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// RemoveHopByHop removes h's hop-by-hop headers: those its Connection header names, and
// hopByHopHeaders. The Connectors API uses it too, for what it sends a class's API service.
func RemoveHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for name := range strings.SplitSeq(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopByHopHeaders {
		delete(h, name)
	}
}

// noUserAgent keeps net/http from sending its own User-Agent, as ReverseProxy does.
var noUserAgent = []string{""}

// forward sends out along rt (sendAlong) and writes the tool's answer to the client, its
// status into m; it returns false when the connection must close (the client left, or the
// answer broke off).
func (c *laneConn) forward(out *http.Request, rt *route, m *meteredWriter) bool {
	c.sent = 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Watched until the answer's end: a tool that stalls mid-answer is let go with its client.
	c.watchRoundTrip(cancel, nil, rt, out.Method)
	defer c.stopWatching()
	out = out.WithContext(ctx)
	res, err := c.lane.p.sendAlong(rt, out, laneStream{c})
	// An answer before the upload's end (a refusal, a failure) ends the connection: the rest
	// of the body is not read (endUpload).
	c.closeAfter = c.closeAfter || c.upload != nil && !c.upload.complete()
	if err != nil {
		upstreamErrorFor(m, rt, err)
		return !c.left.Load() && c.answer(m.ResponseWriter.(*bufferedAnswer))
	}
	var ok bool
	m.code, ok = c.relayAnswer(out.Method, res, rt)
	return ok
}

// relayAnswer writes res, the tool's answer along rt to a request of method, to the client as
// ReverseProxy does (hop-by-hop headers out, redirects within the Connector's address into
// the proxy's) and returns its status; ok is false when the answer broke off.
func (c *laneConn) relayAnswer(method string, res *http.Response, rt *route) (code int, ok bool) {
	defer res.Body.Close()
	RemoveHopByHop(res.Header)
	cleanToolAnswer(res, rt)
	return res.StatusCode, c.writeAnswer(method, res) == nil
}

// serveRemembered serves a request whose head the fast lane reads itself (readLaneHead)
// along the connection's remembered route (laneMemo), on an idle connection to the tool: the
// common case of a keep-alive client. taken is false, with nothing consumed, for any other
// request (no route remembered for it, no idle connection, a pooled connection the tool had
// closed meanwhile), which serveRequest then takes. ok is false when the connection cannot
// go on.
func (c *laneConn) serveRemembered(head []byte) (taken, ok bool) {
	h := &c.raw
	if !readLaneHead(head, h, c.tunnel != nil) {
		return false, false
	}
	memo := c.memoFor(h.method)
	rt, uri, remembered := memo.routeForHead(c.lane.p, h, c.headAt)
	if !remembered && c.tunnel == nil && c.lane.shared.adopt(c.lane.p, memo, h, c.headAt) {
		rt, uri, remembered = memo.routeForHead(c.lane.p, h, c.headAt)
	}
	if !remembered {
		return false, false
	}
	body, ok := c.inPlaceBody(h, len(head), rt)
	if !ok {
		return false, false
	}
	// A remembered route is one serveRequest sent with the direct transport.
	var inj *regoeval.Injection
	if rt.cred.generator != nil {
		c.rawSeen.callerToken = rt.callerToken
		if inj = c.inPlaceInjection(rt, h.method, uri); inj == nil {
			return false, false
		}
	}
	var registryAuth string
	if rt.cred.registry != nil {
		if registryAuth = c.registryAuthorization(rt, h.method, uri); registryAuth == "" {
			return false, false
		}
	}
	retry := getOrHead(h.method)
	pc := c.lane.p.direct.openIdleConn(memo.pool, !retry, c.headAt)
	if pc == nil {
		return false, false
	}
	c.closeAfter, c.sent = h.close, 0
	c.watchRoundTrip(nil, pc.conn, rt, h.method)
	writeToolHead(pc.bw, h, rt.target.Host, uri, inj, rt.callerToken)
	if registryAuth != "" {
		writeFieldString(pc.bw, "Authorization", registryAuth)
	}
	_, _ = pc.bw.WriteString(memo.toolTail)
	_, _ = pc.bw.Write(body)
	var code int
	if err := pc.awaitAnswer(); err != nil {
		pc.conn.Close()
		if c.stopWatching() && retry {
			return false, false // the tool had closed it: serveRequest dials a new one
		}
		// The client left, or a request with a body (sent once: directTransport.RoundTrip).
		c.consume(len(head) + len(body))
		code, ok = c.upstreamFailed(rt, err)
	} else if registryAuth != "" && challenged(pc.br) {
		// The registry refused the kept token (revoked, or the token service's clock runs
		// ahead): the general path, which answers challenges, sends the head again. A GET or
		// HEAD, it may be; nothing of the answer has reached the client.
		pc.conn.Close()
		memo.registryName = ""
		return !c.stopWatching(), false
	} else {
		c.consume(len(head) + len(body))
		code, ok = c.relayRemembered(memo, pc, h.method, rt, uri)
	}
	laneServedInPlace.Inc()
	memo.meter.record(rt, memo.key.mode(), code, c.sent, time.Since(c.headAt))
	return true, ok
}

// holdsCallerToken tells whether a request's body holds the caller's token an extractor found
// along rt: the general path refuses such a request (checkExtracted), for it sends bodies on
// unchanged.
func holdsCallerToken(rt *route, body []byte) bool {
	return rt.callerToken != "" && bytes.Contains(body, []byte(rt.callerToken))
}

// inPlaceBody is the body of a head h of headLen read in place along rt (none for a request
// without one); ok is false when the head takes the parsed path: the body is not whole in br
// yet (the parsed path waits for it), or it holds the caller's token an extractor found (the
// general path refuses it: checkExtracted).
func (c *laneConn) inPlaceBody(h *laneHead, headLen int, rt *route) (body []byte, ok bool) {
	if h.contentLength <= 0 {
		return nil, true
	}
	if h.contentLength <= int64(c.br.Size()-headLen) {
		body, ok = c.wholeBody(headLen, h.contentLength, false)
	} else if body, ok = c.readLarge(headLen, h.contentLength); ok {
		// h's fields are slices of br's buffer, which reading the body may have reused: read
		// the head again where it is now.
		readLaneHead((*c.large)[:headLen], h, c.tunnel != nil)
	}
	return body, ok && !holdsCallerToken(rt, body)
}

// inPlaceInjection is the answer of rt's generator (a remembered route's) to the head c.raw,
// of method to uri, read in place, or nil when the head takes the parsed path: the generator
// fails or injects elsewhere than in headers, or it sets a header a head written in place
// carries otherwise (Host, User-Agent, hop-by-hop ones, the route's own Authorization), or it
// is evaluated per request and the head has a body (which a module may read, parsed). The
// generator gets uri's path decoded, as the general path's rt.target.Path; for the path "/",
// that is "" when the tool URL's path is empty (its request URI says "/"), which uri does not
// tell: such a head takes the parsed path.
func (c *laneConn) inPlaceInjection(rt *route, method, uri string) *regoeval.Injection {
	path, ok := toolPathOf(uri)
	if !ok || path == "/" {
		return nil
	}
	// No query parameter holds the caller's token along a route read in place
	// (tokenFreeInPlace): the generator's query is uri's.
	_, query, _ := strings.Cut(uri, "?")
	head := regoeval.RequestHead{Method: method, Path: path, Host: rt.target.Host, RawQuery: query, HasQuery: true, Header: &c.rawSeen}
	var request func() *regoeval.Request
	if c.raw.contentLength <= 0 {
		request = func() *regoeval.Request { return c.inPlaceRequest(rt, head) }
	}
	inj := c.lane.p.headerInjection(rt, head, request)
	if inj == nil {
		return nil
	}
	for name := range inj.Headers {
		if !injectableInPlace(name) || rt.cred.authorization != "" && strings.EqualFold(name, "Authorization") {
			return nil
		}
	}
	return inj
}

// inPlaceRequest is the request of c.raw, a head of no body read in place, along rt as a
// generator evaluated per request sees it, as injection's request has it on the general path:
// the headers less those that carried the client's credential, the query parsed (none of its
// parameters holds the caller's token: tokenFreeInPlace), no body.
func (c *laneConn) inPlaceRequest(rt *route, head regoeval.RequestHead) *regoeval.Request {
	header := c.raw.httpHeader()
	dropClientCredentials(header, rt.callerToken)
	return &regoeval.Request{Method: head.Method, Path: head.Path, Host: head.Host, Headers: header, Query: head.Query()}
}

// registryAuthorization is the Authorization value of a registry's token for a head of method
// to uri along rt, a registry's route, read in place, or "" when the head takes the parsed
// path: it is not a GET or HEAD of a repository's manifest, blob or tags (whose scope is a
// pull of it), or no token for that is cached (the general path fetches one, answering the
// registry's challenge). The token of the last head's repository is kept in the memo, so a
// pull's heads, all of one repository, look the cache up once.
func (c *laneConn) registryAuthorization(rt *route, method, uri string) string {
	if !getOrHead(method) {
		return ""
	}
	path, ok := toolPathOf(uri)
	if !ok {
		return ""
	}
	name, ok := repositoryOf(path)
	if !ok {
		return ""
	}
	m := &c.memo
	if name != m.registryName || time.Now().After(m.registryToken.expires) {
		tok, ok := c.lane.p.registry.cached(rt.cred.registry, rt.target.Host, pullScope(name))
		if !ok {
			return ""
		}
		m.registryName, m.registryToken = name, tok
	}
	return m.registryToken.authorization
}

// challenged tells whether the answer whose first byte br holds is a 401 (the registry's
// challenge), from its status line.
func challenged(br *bufio.Reader) bool {
	line, err := br.Peek(len("HTTP/1.1 401"))
	return err == nil && string(line[len("HTTP/1.1 "):]) == "401"
}

// relayRemembered writes the answer on pc, to a request of method along rt to uri, to the
// client: itself when readAnswerHead reads its head, else as the general path does
// (relayAnswer).
func (c *laneConn) relayRemembered(memo *laneMemo, pc *directConn, method string, rt *route, uri string) (code int, ok bool) {
	d := c.lane.p.direct
	head, whole, err := peekHead(pc.br)
	a := &c.ans
	if err != nil || !whole || !readAnswerHead(head, method, a) {
		rt = memo.along(targetAt(rt, uri))
		res, err := pc.readHead(&http.Request{Method: method, URL: rt.target})
		if err != nil {
			pc.conn.Close()
			c.stopWatching()
			return c.upstreamFailed(rt, err)
		}
		return c.relayAnswer(method, pc.withBody(d, res, c.stopWatch, !res.Close, laneStream{c}), rt)
	}
	_, _ = pc.br.Discard(len(head))
	writeClientHead(c.cw, a, c.closeAfter, c.scratch[:0])
	err = c.copyBody(pc, a, method)
	pc.release(d, c.stopWatch, err == nil && !a.close)
	return a.code, err == nil && !c.left.Load()
}

// copyBody copies a's body from pc to the client: through the buffers when small, streamed
// when large (see directBody.stream).
func (c *laneConn) copyBody(pc *directConn, a *answerHead, method string) error {
	if noBody(method, a.code) {
		return c.sendWithNextRead()
	}
	if a.length >= streamMinBytes {
		return pc.streamTo(laneStream{c}, a.length)
	}
	for c.sent < a.length {
		chunk, err := pc.br.Peek(int(min(a.length-c.sent, int64(pc.br.Size()))))
		n, werr := c.cw.Write(chunk)
		_, _ = pc.br.Discard(n)
		c.sent += int64(n)
		switch {
		case werr != nil:
			return werr
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
	return c.sendWithNextRead()
}

// noBody tells whether an answer with code to a request of method has no body.
func noBody(method string, code int) bool {
	return method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
}

// upstreamFailed answers a round trip along rt that failed before its answer (unless the
// client left) and returns the answer's status.
func (c *laneConn) upstreamFailed(rt *route, err error) (code int, ok bool) {
	a := &bufferedAnswer{header: http.Header{}}
	upstreamErrorFor(a, rt, err)
	return a.code, !c.left.Load() && c.answer(a)
}

// writeAnswer writes res's head and body to the client, framed as net/http's server frames a
// ReverseProxy's answer: the tool's Content-Length when it sent one, chunked otherwise
// (flushed as it comes, for git's streamed packs), no body for HEAD, 1xx, 204 and 304.
func (c *laneConn) writeAnswer(method string, res *http.Response) error {
	h := res.Header
	bodyless := noBody(method, res.StatusCode)
	chunked := !bodyless && (res.ContentLength < 0 || len(res.TransferEncoding) > 0)
	switch {
	case chunked:
		delete(h, "Content-Length")
		h["Transfer-Encoding"] = chunkedEncoding
	case !bodyless:
		h["Content-Length"] = []string{strconv.FormatInt(res.ContentLength, 10)}
	}
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{string(appendDate(c.scratch[:0]))}
	}
	if c.closeAfter {
		h["Connection"] = closeConnection
	}
	writeStatusLine(c.cw, res.StatusCode)
	if err := h.Write(c.cw); err != nil {
		return err
	}
	_, _ = c.cw.WriteString("\r\n")
	if bodyless {
		return c.cw.Flush()
	}
	buf := bufferPool.Get().(*[]byte)
	defer bufferPool.Put(buf)
	if !chunked {
		_, err := io.CopyBuffer(laneBody{c, nil}, res.Body, *buf)
		if err == nil && c.sent != res.ContentLength {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		return c.cw.Flush()
	}
	if _, err := io.CopyBuffer(laneBody{c, httputil.NewChunkedWriter(c.cw)}, res.Body, *buf); err != nil {
		return err
	}
	_, _ = c.cw.WriteString("0\r\n")
	if err := res.Trailer.Write(c.cw); err != nil {
		return err
	}
	_, _ = c.cw.WriteString("\r\n")
	return c.cw.Flush()
}

var chunkedEncoding, closeConnection = []string{"chunked"}, []string{"close"}

// writeStatusLine writes "HTTP/1.1 <code> <text>", the text being net/http's for the code.
func writeStatusLine(w *bufio.Writer, code int) {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		_, _ = w.WriteString(statusLines[code])
		return
	}
	_, _ = w.WriteString("HTTP/1.1 " + codeLabel(code) + " status code " + strconv.Itoa(code) + "\r\n")
}

// statusLines are the status lines of the codes net/http has a text for.
var statusLines = func() (lines [600]string) {
	for code := range lines {
		if text := http.StatusText(code); text != "" {
			lines[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return lines
}()

// laneBody writes an answer's body into the client's buffer, counting it; through chunked
// (an answer of unknown length), each chunk goes out at once.
type laneBody struct {
	c       *laneConn
	chunked io.Writer
}

func (b laneBody) Write(p []byte) (int, error) {
	if b.chunked == nil {
		n, err := b.c.cw.Write(p)
		b.c.sent += int64(n)
		return n, err
	}
	n, err := b.chunked.Write(p)
	b.c.sent += int64(n)
	if err == nil {
		err = b.c.cw.Flush()
	}
	return n, err
}

// laneStream is where the direct transport streams a large body (directBody.stream): the
// head, still in the client's buffer, goes first.
type laneStream struct{ c *laneConn }

func (s laneStream) Write(p []byte) (int, error) {
	if err := s.c.cw.Flush(); err != nil {
		return 0, err
	}
	n, err := s.c.conn.Write(p)
	s.c.sent += int64(n)
	return n, err
}

// watchRoundTrip starts watching the client for the round trip about to start: when it has
// not ended within laneWatchDelay, watch reads the client connection until stopWatching. A
// client that closes or resets its connection meanwhile cancels the round trip (cancel, the
// general path's context) or breaks the tool connection (tool); so does a caller of rt no
// longer allowed to send method's requests (answerGuard). One timer per connection.
func (c *laneConn) watchRoundTrip(cancel context.CancelFunc, tool net.Conn, rt *route, method string) {
	c.cancel, c.tool, c.guarded, c.guardedMethod = cancel, tool, rt, method
	c.left.Store(false)
	c.watching.Add(1)
	c.watchArmed = true
	if c.watchTimer == nil {
		// Set before it runs: watch may set it again (an upload's).
		c.watchTimer = time.AfterFunc(time.Duration(math.MaxInt64), c.watch)
	}
	c.watchTimer.Reset(laneWatchDelay)
}

// watch reads the client connection until stopWatching wakes it; a byte it reads (the next
// request's first) is kept.
func (c *laneConn) watch() {
	c.watchMu.Lock()
	if !c.watchStopping && c.uploading() {
		// The client's bytes are the upload's until its end: the watch starts after it.
		c.watchTimer.Reset(laneWatchDelay)
		c.watchMu.Unlock()
		return
	}
	defer c.watching.Done()
	if !c.watchStopping {
		_ = c.conn.SetReadDeadline(time.Time{}) // the one the head was read under (nextHead)
	}
	c.watchMu.Unlock()
	// Until the round trip's end (stopWatching), which may come after this read's.
	if c.guarded != nil && c.guarded.token != "" {
		c.guard = c.lane.p.guardAnswer(c.guarded, guardedRequest(c.guardedMethod), func(error) { c.endRoundTrip() })
	}
	var b [1]byte
	n, err := c.conn.Read(b[:])
	if n == 1 {
		c.pending, c.held = b[0], true
	}
	var timeout net.Error
	if err != nil && !(errors.As(err, &timeout) && timeout.Timeout()) {
		c.endRoundTrip()
	}
}

// endRoundTrip ends the watched round trip, as when the client left: the connection does not
// go on.
func (c *laneConn) endRoundTrip() {
	c.left.Store(true)
	if c.cancel != nil {
		c.cancel()
	}
	if c.tool != nil {
		_ = c.tool.SetDeadline(aLongTimeAgo)
	}
}

// stopWatching ends the watch, if any, and tells whether the client stayed; once it returns,
// the watcher touches nothing (a pooled tool connection may go back to the pool).
func (c *laneConn) stopWatching() bool {
	if c.watchArmed {
		c.watchArmed = false
		if c.watchTimer.Stop() {
			c.watching.Done()
		} else {
			// Under watchMu: a watcher just started must not clear this deadline after it is set.
			c.watchMu.Lock()
			c.watchStopping = true
			_ = c.conn.SetReadDeadline(aLongTimeAgo)
			c.watchMu.Unlock()
			c.watching.Wait()
			c.watchStopping = false
			c.setReadDeadline(0)
		}
		if c.guard != nil {
			c.guard.stop()
			c.guard = nil
		}
		c.cancel, c.tool = nil, nil
	}
	return !c.left.Load()
}

// handOver gives the connection, with everything it sent still unread, to net/http's server:
// a request readLarge read out of br first.
func (c *laneConn) handOver() bool {
	if c.sendAnswerNow() != nil {
		return false
	}
	fastLaneRequests.WithLabelValues("handed_over").Inc()
	handed := &handedConn{Conn: c.conn, br: c.br}
	if c.large != nil {
		handed.replay = *c.large
		c.lane.releaseBody(c.largeHeld)
		c.large, c.body = nil, nil
	}
	if c.tunnel != nil {
		c.tunnel.serveHTTP(handed)
		return true
	}
	select {
	case c.lane.handed <- handed:
		return true
	case <-c.lane.done:
		return false
	}
}

// handedConn is a connection the fast lane read ahead of net/http: its reads drain what the
// fast lane read out of its buffer (replay) and what it buffered first, then read the
// connection itself.
type handedConn struct {
	net.Conn
	replay []byte
	br     *bufio.Reader
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// bufferedAnswer is a small answer written whole, with its length: the fast lane's refusals
// of a failed round trip, through the handlers the full path uses.
type bufferedAnswer struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (a *bufferedAnswer) Header() http.Header { return a.header }

func (a *bufferedAnswer) WriteHeader(code int) {
	if a.code == 0 {
		a.code = code
	}
}

func (a *bufferedAnswer) Write(p []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	return a.body.Write(p)
}

func (a *bufferedAnswer) writeTo(w *bufio.Writer) error {
	a.WriteHeader(http.StatusOK)
	a.header.Set("Content-Length", strconv.Itoa(a.body.Len()))
	a.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	writeStatusLine(w, a.code)
	if err := a.header.Write(w); err != nil {
		return err
	}
	_, _ = w.WriteString("\r\n")
	_, err := w.Write(a.body.Bytes())
	return err
}
