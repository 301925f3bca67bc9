package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestLaneMemo: a connection's remembered route serves only the same credential, Connector (or
// forwarded host) and method, within laneMemoTTL and before its Pod's decisions were dropped
// (another group's Pods' leave it in place), and is pointed at each request's own path and
// query; a forwarded route only while its one named Connector covers the new destination.
func TestLaneMemo(t *testing.T) {
	p := &Proxy{}
	nn := types.NamespacedName{Namespace: "team", Name: "tool"}
	c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "tool"},
		Spec: v1alpha1.ConnectorSpec{Address: "http://tool.example/base/"}}
	reverseKey := laneKey{credential: "pod-token", method: http.MethodGet, connector: nn}
	forwardKey := laneKey{forward: true, credential: "Basic eA==", method: http.MethodGet, host: "tool.example"}
	remembered := func(key laneKey) laneMemo {
		return laneMemo{key: key, epoch: p.podEpochs.now(), until: time.Now().Add(laneMemoTTL),
			rt: &route{connector: c, cred: credential{authorization: "Basic x"}, epochShard: p.podEpochs.shard("team", "client")}}
	}
	reverse := func(method, rest, query string) laneRequestOf {
		k := reverseKey
		k.method, k.rest = method, rest
		return laneRequestOf{&http.Request{Method: method, URL: &url.URL{RawQuery: query}}, k}
	}
	forward := func(target string) laneRequestOf {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		k := forwardKey
		k.host = u.Host
		return laneRequestOf{&http.Request{Method: http.MethodGet, URL: u}, k}
	}
	use := func(m laneMemo, q laneRequestOf) (*route, bool) { return m.route(p, q.r.URL, q.k) }

	m := remembered(reverseKey)
	rt, ok := use(m, reverse(http.MethodGet, "/repo.git/info/refs", "a=1"))
	if !ok || rt.target.String() != "http://tool.example/base/repo.git/info/refs?a=1" || rt.cred.authorization != "Basic x" {
		t.Fatalf("the same token, Connector and method: %v %+v", ok, rt)
	}
	if rt == m.rt {
		t.Fatal("the remembered route itself was handed out: its target would change under another request")
	}
	m = remembered(reverseKey)
	p.ForgetPod("team", podOfAnotherGroup(p, "team", "client"))
	if _, ok := use(m, reverse(http.MethodGet, "/x", "")); !ok {
		t.Fatal("another group's Pod's decisions dropped ended the route")
	}
	m = remembered(forwardKey)
	if rt, ok := use(m, forward("http://tool.example/base/pkg/a.tgz")); !ok || rt.target.String() != "http://tool.example/base/pkg/a.tgz" {
		t.Fatalf("a forwarded request under the Connector's address: %v %+v", ok, rt)
	}

	for name, miss := range map[string]func() bool{
		"another token": func() bool {
			q := reverse("GET", "/x", "")
			q.k.credential = "other"
			_, ok := use(remembered(reverseKey), q)
			return ok
		},
		"another method": func() bool { m := remembered(reverseKey); _, ok := use(m, reverse("HEAD", "/x", "")); return ok },
		"another proxy host (redirects go to it)": func() bool {
			q := reverse("GET", "/x", "")
			q.k.host = "c-tool.team.svc:3128"
			_, ok := use(remembered(reverseKey), q)
			return ok
		},
		"another Connector": func() bool {
			q := reverse("GET", "/x", "")
			q.k.connector.Name = "other"
			_, ok := use(remembered(reverseKey), q)
			return ok
		},
		"expired": func() bool {
			m := remembered(reverseKey)
			m.until = time.Now().Add(-time.Millisecond)
			_, ok := use(m, reverse("GET", "/x", ""))
			return ok
		},
		"a Pod's decisions dropped since": func() bool {
			m := remembered(reverseKey)
			p.ForgetPod("team", "client")
			_, ok := use(m, reverse("GET", "/x", ""))
			return ok
		},
		"a path the full path refuses": func() bool {
			m := remembered(reverseKey)
			_, ok := use(m, reverse("GET", "/a/../../etc", ""))
			return ok
		},
		"nothing remembered": func() bool { var m laneMemo; _, ok := use(m, reverse("GET", "/x", "")); return ok },
		"a denied path": func() bool {
			m := remembered(reverseKey)
			m.rt.denied = deniedCheck{node: compileDeniedPaths("", []string{"/api/security/apiKey"}), within: 2}
			_, ok := use(m, reverse("GET", "/api/security/apiKey", ""))
			return ok
		},
		"a denied path, forwarded": func() bool {
			m := remembered(forwardKey)
			m.rt.denied = deniedCheck{node: compileDeniedPaths("", []string{"/api/security/apiKey"}), within: 2}
			_, ok := use(m, forward("http://tool.example/base/api/security/apiKey"))
			return ok
		},
		"a reverse route for a forwarded request": func() bool {
			m := remembered(reverseKey)
			_, ok := use(m, forward("http://tool.example/base/x"))
			return ok
		},
		"a forwarded destination outside the address": func() bool {
			m := remembered(forwardKey)
			_, ok := use(m, forward("http://tool.example/other/x"))
			return ok
		},
		"another forwarded host": func() bool {
			m := remembered(forwardKey)
			_, ok := use(m, forward("http://elsewhere.example/base/x"))
			return ok
		},
		"a forward route chosen among several Connectors": func() bool {
			m := remembered(forwardKey)
			m.rt.forwardAmong = true
			_, ok := use(m, forward("http://tool.example/base/x"))
			return ok
		},
	} {
		if miss() {
			t.Errorf("%s: the remembered route was used", name)
		}
	}
}

// TestLaneMemoInPlaceRefusesDeniedPaths: a head read in place along a remembered route whose
// tool request URI holds a denied path is not served in place (the parsed path refuses it);
// another along the same route is.
func TestLaneMemoInPlaceRefusesDeniedPaths(t *testing.T) {
	m := laneMemo{rt: &route{denied: deniedCheck{node: compileDeniedPaths("", []string{"/api/security/apiKey"}), within: 2}}}
	for uri, want := range map[string]bool{
		"/base/api/security/apiKey?x=1": false,
		"/base/api%2Fsecurity%2FapiKey": false,
		"/base/repo.git/info/refs?a=1":  true,
	} {
		if rt, got, ok := m.allowed(uri); ok != want || ok && (rt != m.rt || got != uri) {
			t.Errorf("%q: %v %q, want %v", uri, ok, got, want)
		}
	}
}

// podOfAnotherGroup is the name of a Pod of namespace whose podEpochs group is not pod's.
func podOfAnotherGroup(p *Proxy, namespace, pod string) string {
	for i := 0; ; i++ {
		if other := "other-" + strconv.Itoa(i); p.podEpochs.shard(namespace, other) != p.podEpochs.shard(namespace, pod) {
			return other
		}
	}
}

// laneRequestOf is a request and its key, as serveRequest has them.
type laneRequestOf struct {
	r *http.Request
	k laneKey
}

// TestWatcherOutlivesHeadDeadline: the deadline a head was read under stays set while its
// request is served (nextHead), so the watcher must clear it, or a client that leaves after it
// expired would go unnoticed. Here it has expired before the watch starts: the watcher must
// still see the client leave.
func TestWatcherOutlivesHeadDeadline(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	c := &laneConn{conn: server, lane: &FastLane{p: &Proxy{cfg: Config{UpgradeRecheck: time.Hour}}}}
	if err := server.SetReadDeadline(aLongTimeAgo); err != nil {
		t.Fatal(err)
	}
	cancelled := make(chan struct{})
	c.watchRoundTrip(func() { close(cancelled) }, nil, &route{connector: &v1alpha1.Connector{}}, http.MethodGet)
	_ = client.Close()
	select {
	case <-cancelled:
	case <-time.After(time.Minute):
		t.Fatal("the watcher did not see the client leave")
	}
	if c.stopWatching() {
		t.Error("stopWatching says the client stayed")
	}
}

// Two callers whose tokens and finding classes differ never share a remembered route's key,
// whatever bytes a token found in a query holds.
func TestExtractedCredentialsAreDistinct(t *testing.T) {
	callers := []extracted{{token: "a", foundBy: []string{"b", "c"}}, {token: "a\x00b", foundBy: []string{"c"}},
		{token: "a\x00b\x00c"}, {token: "a", foundBy: []string{"b"}}, {token: "2\x00a"}}
	seen := map[string]extracted{}
	for _, c := range callers {
		key := extractedCredential(c)
		if other, dup := seen[key]; dup {
			t.Errorf("%q and %q share the key %q", c, other, key)
		}
		seen[key] = c
	}
}

// TestLaneIdleDeadline: nextHead's idle deadline (idleDeadlineSet) is set for the first head,
// not again for a head that came before idleTimeout/16 had passed since, again for one that
// came after, and again after another deadline replaced it (setReadDeadline), each time
// idleTimeout from when it is set.
func TestLaneIdleDeadline(t *testing.T) {
	const idle = 16 * time.Second
	server, client := net.Pipe()
	defer client.Close()
	conn := &deadlineRecorder{Conn: server}
	c := &laneConn{lane: &FastLane{idleTimeout: idle, headerTimeout: idle}, conn: conn}
	set := func(what string, want bool) {
		t.Helper()
		before, n := time.Now(), len(conn.set)
		if !c.idleDeadlineSet() {
			t.Fatalf("%s: the connection counts as closed", what)
		}
		after := time.Now()
		switch {
		case !want && len(conn.set) != n:
			t.Fatalf("%s: the deadline was set again", what)
		case want && len(conn.set) != n+1:
			t.Fatalf("%s: the deadline was not set", what)
		case want && (conn.set[n].Before(before.Add(idle)) || conn.set[n].After(after.Add(idle))):
			t.Fatalf("%s: deadline %v, not idleTimeout from when it was set", what, conn.set[n])
		}
	}
	set("the first head", true)
	c.headAt = c.idleUntil.Add(-time.Nanosecond)
	set("a head before idleTimeout/16 passed", false)
	c.headAt = c.idleUntil
	set("a head once idleTimeout/16 passed", true)
	c.setReadDeadline(c.lane.headerTimeout)
	c.headAt = time.Now()
	set("a head after the header deadline replaced it", true)
}

// deadlineRecorder records the read deadlines set on its connection.
type deadlineRecorder struct {
	net.Conn
	set []time.Time
}

func (d *deadlineRecorder) SetReadDeadline(t time.Time) error {
	d.set = append(d.set, t)
	return d.Conn.SetReadDeadline(t)
}

// TestReadLargeShare: readLarge reads a body that does not fit in the connection's buffer
// out of it whole, counting its buffer against the lane's share until releaseLarge; with the
// share taken by others, or a body over maxBody, it reads nothing (the request stays in br for
// net/http's server).
func TestReadLargeShare(t *testing.T) {
	const maxBody = 16 << 10
	head := "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n"
	body := strings.Repeat("b", 10000)
	read := func(lane *FastLane, n int64) (*laneConn, []byte, bool) {
		server, client := net.Pipe()
		t.Cleanup(func() { client.Close(); server.Close() })
		go func() { _, _ = io.WriteString(client, head+body) }()
		c := &laneConn{lane: lane, conn: server}
		c.br = bufio.NewReaderSize(c, laneBufferSize)
		if _, err := c.br.Peek(len(head)); err != nil {
			t.Fatal(err)
		}
		got, ok := c.wholeBody(len(head), n, true)
		return c, got, ok
	}

	lane := &FastLane{maxBody: maxBody, headerTimeout: time.Minute}
	c, got, ok := read(lane, 10000)
	if !ok || string(got) != body {
		t.Fatalf("a body of 10000 bytes with the share free: ok %v, %d bytes", ok, len(got))
	}
	if held := lane.bodies.Load(); held != 16<<10 {
		t.Errorf("while served, %d bytes counted against the share, want its buffer's 16 KiB", held)
	}
	c.releaseLarge()
	if held := lane.bodies.Load(); held != 0 || c.large != nil || c.body != nil {
		t.Errorf("after releaseLarge: %d bytes counted, buffer kept %v", held, c.large != nil)
	}

	lane.bodies.Store(laneBodyShare*maxBody - 8<<10)
	if c, _, ok := read(lane, 10000); ok || c.large != nil || c.br.Buffered() < len(head) {
		t.Errorf("with the share taken: read %v, nothing consumed %v", ok, c.large == nil)
	}
	if held := lane.bodies.Load(); held != laneBodyShare*maxBody-8<<10 {
		t.Errorf("a refused read left %d bytes counted", held)
	}
	if c, _, ok := read(&FastLane{maxBody: 9999, headerTimeout: time.Minute}, 10000); ok || c.large != nil {
		t.Error("a body over maxBody was read")
	}
}

// Buffers come in size classes of 8 KiB doubling up to 1 MiB; larger sizes are their own.
func TestLargeCap(t *testing.T) {
	for size, want := range map[int64]int64{1: 8 << 10, 8 << 10: 8 << 10, 8<<10 + 1: 16 << 10, 68 << 10: 128 << 10, 1 << 20: 1 << 20, 1<<20 + 1: 1<<20 + 1} {
		if got := largeCap(size); got != want {
			t.Errorf("largeCap(%d) = %d, want %d", size, got, want)
		}
	}
}

// TestLaneWorkers: goroutines that served a connection wait for the next one (dispatch), at
// most laneIdleWorkers of them, the rest end; a new connection is served by a waiting one, and
// closing the fast lane ends those waiting.
func TestLaneWorkers(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := (&Proxy{}).FastLane(lis, LaneLimits{HeaderTimeout: time.Minute, IdleTimeout: time.Minute, MaxBodyBytes: 1})
	defer l.Close()
	served := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.conns)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never (%d served, %d waiting)", what, served(), l.idleWorkers.Load())
			}
		}
	}
	const n = laneIdleWorkers + 44
	clients := make([]net.Conn, n)
	for i := range clients {
		if clients[i], err = net.Dial("tcp", lis.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("every connection served at once", func() bool { return served() == n })
	for _, c := range clients {
		_ = c.Close()
	}
	waitFor("laneIdleWorkers waiting once they are done", func() bool { return served() == 0 && l.idleWorkers.Load() == laneIdleWorkers })
	// A goroutine counted as waiting may not have reached its receive yet, and then dispatch
	// starts a new one (which ends after, laneIdleWorkers waiting already): try a few times.
	takenByOne := false
	for attempt := 0; attempt < 10 && !takenByOne; attempt++ {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		waitFor("a new connection served", func() bool { return served() == 1 })
		takenByOne = l.idleWorkers.Load() == laneIdleWorkers-1
		_ = c.Close()
		waitFor("it waits again", func() bool { return served() == 0 && l.idleWorkers.Load() == laneIdleWorkers })
	}
	if !takenByOne {
		t.Fatal("no new connection was served by a waiting goroutine")
	}
	_ = l.Close()
	waitFor("none waiting once the fast lane is closed", func() bool { return l.idleWorkers.Load() == 0 })
}
