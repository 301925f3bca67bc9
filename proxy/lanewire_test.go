package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// laneHeadSeeds are request heads the fast lane reads itself, and near misses it must not.
var laneHeadSeeds = []string{
	"GET /namespaces/team/connectors/git/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\nUser-Agent: git/2.39\r\nAccept: */*\r\nGit-Protocol: version=2\r\n\r\n",
	"HEAD /namespaces/team/connectors/git/a%2Fb HTTP/1.1\r\nhost: proxy\r\nauthorization: Basic eDp0b2s=\r\nX-Forwarded-For: 1.2.3.4\r\nProxy-Foo: bar\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\n\r\n",
	"GET http://tool.example:8080/base/pkg/a.tgz HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic dGVhbS9ucG06dG9r\r\nAccept-Encoding: gzip\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
	"GET http://tool.example HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dGVhbS9ucG06dG9r\r\nUser-Agent:\r\n\r\n",
	"GET /namespaces/team/connectors/gitlab/x HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\n\r\n",
	"GET /namespaces/team/connectors/gitlab/api/v4/user HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\nprivate-token: forged\r\nX-Api-Key: a\r\nX-Api-Key: b\r\n\r\n",
	"GET /namespaces/team/connectors/git?x=1 HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\n\r\n",
	"HEAD /namespaces/team/connectors/git/%2e%2e/y? HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\n\r\n",
	"GET http://tool.example:8080/base/y?z HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\n\r\n",
	// Pragma: no-cache, to which net/http's reader adds Cache-Control: no-cache unless the head
	// has one; only the first Pragma line counts.
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer tok\r\nPragma: no-cache\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer tok\r\npragma:  no-cache \r\ncache-control: max-age=0\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer tok\r\nPragma: x\r\nPragma: no-cache\r\n\r\n",
	"GET http://tool.example:8080/base/a.jar HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\nPragma: no-cache\r\nUser-Agent: Apache-Maven/3.9.9 (Java 21)\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nHost: other\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\n Folded: x\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nBad Name: x\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nX: a\x00b\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.0\r\nHost: proxy\r\n\r\n",
	"GET /namespaces/team/connectors/git/x#frag HTTP/1.1\r\nHost: proxy\r\n\r\n",
	"GET http://user@tool.example/ HTTP/1.1\r\nHost: proxy\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\nHost: proxy\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nX-Long: " + strings.Repeat("v", 300) + "\r\n\r\n",
	// A token an extractor found in a header, and copies of it in other lines.
	"GET /namespaces/team/connectors/git/x?page=2 HTTP/1.1\r\nHost: proxy\r\nX-Copy: tok\r\nx-copy: other\r\nPrivate-Token: tok\r\nAccept: */*\r\n\r\n",
	// A Connector's own host: any path is under its address.
	"GET /api/v4/user?x=1 HTTP/1.1\r\nHost: c-git.team.svc.cluster.local:8080\r\nAuthorization: Bearer tok\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: C-Git.Team.svc:80\r\nAuthorization: Bearer tok\r\n\r\n",
	// A tunnel's: origin-form, any path.
	"GET /base/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: tool.example:8080\r\nUser-Agent: git/2.39\r\nAuthorization: Basic eDp0b2s=\r\n\r\n",
	"HEAD /other/x HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic eDp0b2s=\r\n\r\n",
	"GET /base/a%2Fb?x HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
	// Escapes in forward and tunnel paths (an npm scoped package), under an address with escapes.
	"GET http://tool.example:8080/a%2Fb/%41!$;=@:c/@scope%2fname HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\n\r\n",
	"GET /base/@scope%2Fname/-/name-1.0.0.tgz HTTP/1.1\r\nHost: tool.example:8080\r\n\r\n",
	"GET /a/b/%41!$;=@:c/x HTTP/1.1\r\nHost: tool.example:8080\r\n\r\n",
	// Requests with bodies (git's POSTs, a manifest's PUT), none, and near misses.
	"POST /namespaces/team/connectors/git/repo.git/git-upload-pack HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 175\r\nGit-Protocol: version=2\r\n\r\n",
	"PUT http://tool.example:8080/base/v2/app/manifests/v1 HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\ncontent-length: 0005\r\n\r\n",
	"POST /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer tok\r\n\r\n",
	"DELETE /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer tok\r\nContent-Length: 0\r\n\r\n",
	"PATCH /base/x HTTP/1.1\r\nHost: tool.example:8080\r\nContent-Length: 3\r\n\r\n",
	"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 5\r\n\r\n",
	"POST /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
	"POST /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: +5\r\n\r\n",
	"POST /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	"OPTIONS /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\n\r\n",
}

// FuzzLaneHead holds readLaneHead to net/http: a head it reads must be one http.ReadRequest
// reads to the same method, target, host, Connection: close and headers, that net/http's
// server and the fast lane's own checks take; and the tool request writeToolHead writes for
// it must read, at the tool, as the one the general path writes (outgoing, Request.Write).
func FuzzLaneHead(f *testing.F) {
	for _, s := range laneHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			head = head[:i+4]
		}
		for _, c := range []*laneConn{{lane: laneTestLane}, {lane: laneTestLane, tunnel: laneTestTunnel}} {
			sameAsNetHTTP(t, c, head)
		}
	})
}

// laneTestLane is the fast lane of a proxy in a cluster of no ConnectorClass: no authExtractor
// finds a token where Authorization has none.
var laneTestLane = &FastLane{p: &Proxy{objects: fake.NewClientBuilder().WithScheme(func() *runtime.Scheme {
	scheme := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(scheme)
	return scheme
}()).Build()}}

// laneTestTunnel is a tunnel to the host of laneAddresses.
var laneTestTunnel = &tunnel{dest: &url.URL{Scheme: "http", Host: "tool.example:8080"}}

// sameAsNetHTTP is FuzzLaneHead's check of head as c reads it (outside tunnels, or in c's).
func sameAsNetHTTP(t *testing.T, c *laneConn, head []byte) {
	t.Helper()
	var h laneHead
	if !readLaneHead(head, &h, c.tunnel != nil) {
		return
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		t.Fatalf("read by the fast lane, refused by net/http (%v): %q", err, head)
	}
	if !laneRequest(req) {
		t.Fatalf("read by the fast lane, left to net/http by its general path: %q", head)
	}
	wantHost := string(h.host)
	if req.URL.IsAbs() {
		wantHost = req.URL.Host
	}
	if req.Method != h.method || req.RequestURI != string(h.target) || req.Host != wantHost || req.Close != h.close ||
		req.ContentLength != max(h.contentLength, 0) {
		t.Fatalf("read differently: %q %q %q %v %d, net/http %q %q %q %v %d", h.method, h.target, wantHost, h.close, h.contentLength,
			req.Method, req.RequestURI, req.Host, req.Close, req.ContentLength)
	}
	if got, want := h.httpHeader(), withoutHost(req.Header); !reflect.DeepEqual(got, want) {
		t.Fatalf("headers read differently:\n%v\nnet/http:\n%v", got, want)
	}
	sameHeaderView(t, &h, req.Header)
	sameRoutes(t, c, &h, req)
	// The route's Basic credential, then a generator's headers instead (one of them a header
	// the client may send too); the caller's token in Authorization, then one an extractor
	// found ("tok", which the seeds' heads hold here and there).
	if req.ContentLength > laneBufferSize {
		return // a body the fast lane does not take (wholeBody)
	}
	for _, inj := range []*regoeval.Injection{nil, laneTestInjection} {
		for _, token := range []string{"", "tok"} {
			req, _ := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
			if req.ContentLength > 0 { // else http.NoBody, as the fast lane's parse leaves it
				req.Body = io.NopCloser(bytes.NewReader(make([]byte, req.ContentLength)))
			}
			sameToolHead(t, c, &h, req, inj, token)
		}
	}
}

// sameHeaderView checks that h.header gives, for every name, what net/http's reader put in
// header: its names, those in another case, and names it has not.
func sameHeaderView(t *testing.T, h *laneHead, header http.Header) {
	t.Helper()
	names := []string{"Host", "Connection", "Authorization", "User-Agent", "X-Absent", "x-absent"}
	for name := range header {
		names = append(names, name, strings.ToLower(name), strings.ToUpper(name))
	}
	for _, name := range names {
		got, ok := h.header(name)
		want, has := header[name]
		if ok != has || !slices.Equal(got, want) {
			t.Fatalf("header %q read in place as %q (%v), by net/http as %q (%v)", name, got, ok, want, has)
		}
		var wantKey []byte
		for _, v := range want {
			wantKey = regoeval.AppendKeyPart(wantKey, v)
		}
		if key, ok := (headHeaders{h}).AppendKey([]byte("k"), name); ok != has || string(key) != "k"+string(wantKey) {
			t.Fatalf("header %q keyed in place as %q (%v), its values %q (%v)", name, key, ok, want, has)
		}
	}
}

// laneTestInjection is a generator's answer: headers, with a value net/http trims.
var laneTestInjection = &regoeval.Injection{Position: regoeval.PositionHeader,
	Headers: map[string]string{"PRIVATE-TOKEN": "glpat-x", "X-Api-Key": " key\t"}}

// sameToolHead checks that the tool request writeToolHead writes for h reads, at the tool, as
// the one the general path writes for req (outgoing, Request.Write), along a route with the
// Basic credential or, when inj is not nil, that generator's answer, for a caller whose token
// an extractor found (callerToken; "": none) when the in-place path takes such a head.
func sameToolHead(t *testing.T, c *laneConn, h *laneHead, req *http.Request, inj *regoeval.Injection, callerToken string) {
	t.Helper()
	rt, ok := laneTestRoute(c, req, laneAddresses[0])
	if !ok {
		return
	}
	if inj != nil {
		rt.cred.authorization, rt.injection = "", inj
	}
	if _, query, _ := bytes.Cut(h.target, []byte("?")); callerToken != "" && !tokenFreeInPlace(h, query, callerToken) {
		return
	}
	rt.callerToken = callerToken
	var m laneMemo
	m.remember(laneKey{}, "", rt, 0)
	var general, raw bytes.Buffer
	if err := outgoing(req, rt).Write(&general); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(&raw)
	writeToolHead(w, h, rt.target.Host, rt.target.RequestURI(), inj, callerToken)
	_, _ = w.WriteString(m.toolTail)
	_ = w.Flush()
	g, r := readBack(t, general.Bytes()), readBack(t, raw.Bytes())
	if g.Method != r.Method || g.RequestURI != r.RequestURI || g.Host != r.Host || !reflect.DeepEqual(g.Header, r.Header) {
		t.Fatalf("the tool would read another request:\n%s\ngeneral path:\n%s", raw.Bytes(), general.Bytes())
	}
}

// sameRoutes checks that a remembered route serves a head read in place (routeForHead) as it
// serves the request net/http read from it (route): remembered from fixed requests, to
// Connectors at addresses of several forms, and from this one. A route to an address whose
// path url.Parse does not keep as written (laneAddresses' last) may leave a head to the
// general path, but never route it elsewhere.
func sameRoutes(t *testing.T, c *laneConn, h *laneHead, req *http.Request) {
	t.Helper()
	p := &Proxy{}
	key, target, isLane := c.keyOf(req)
	type memo struct {
		laneMemo
		address string
	}
	var memos []memo
	from := []string{
		"GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: Bearer tok\r\n\r\n",
		"GET http://tool.example:8080/base/x HTTP/1.1\r\nHost: tool.example:8080\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: c-git.team.svc.cluster.local:8080\r\nAuthorization: Bearer tok\r\n\r\n",
	}
	if c.tunnel != nil {
		from = []string{"GET /base/x HTTP/1.1\r\nHost: tool.example:8080\r\n\r\n"}
	}
	for _, address := range laneAddresses {
		for _, head := range from {
			r := readBack(t, []byte(head))
			k, _, _ := c.keyOf(r)
			rt, _ := laneTestRoute(c, r, address)
			var m laneMemo
			m.remember(k, r.Header.Get("Authorization"), rt, 0)
			memos = append(memos, memo{m, address})
		}
	}
	// A forward request without Proxy-Authorization is refused (407), its route never
	// remembered.
	if rt, ok := laneTestRoute(c, req, laneAddresses[0]); ok && isLane && !(key.forward && !key.tunnel && key.credential == "") {
		var m laneMemo
		m.remember(key, req.Header.Get("Authorization"), rt, 0)
		memos = append(memos, memo{m, laneAddresses[0]})
	}
	for _, m := range memos {
		fromHead, uri, okHead := m.routeForHead(p, h, time.Now())
		var fromReq *route
		okReq := false
		if isLane {
			fromReq, okReq = m.route(p, target, key)
		}
		mayLeave := m.address == laneAddresses[len(laneAddresses)-1] && !okHead
		if okHead != okReq && !mayLeave || okHead && (fromHead != m.rt || uri != fromReq.target.RequestURI() ||
			!sameTarget(targetAt(fromHead, uri), fromReq.target)) {
			t.Fatalf("remembered %+v at %s: in place %v %q, read by net/http %v %v", m.key, m.address, okHead, uri, okReq, fromReq)
		}
		sameAdopted(t, p, c, h, &m.laneMemo, okHead, fromHead, uri)
		// A generator reads the tool path decoded (inPlaceInjection), as the general path's
		// ("/" is left to the general path: it may be an empty one).
		if escaped, _, _ := strings.Cut(uri, "?"); okHead && escaped != "/" {
			if path, ok := decodedPath(escaped); !ok || path != fromReq.target.Path {
				t.Fatalf("remembered %+v at %s: the tool path %q decoded in place as %q, by net/http %q", m.key, m.address, uri, path, fromReq.target.Path)
			}
		}
	}
}

// sameAdopted checks that a new connection's head h finds m, a memo its route would serve h
// along (ok: as fromHead to uri), once m is shared, and that whatever memo h finds among the
// shared ones serves it as m does: a shared memo never routes a head elsewhere.
func sameAdopted(t *testing.T, p *Proxy, c *laneConn, h *laneHead, m *laneMemo, ok bool, fromHead *route, uri string) {
	t.Helper()
	if c.tunnel != nil {
		return // a tunnel's heads follow its CONNECT's route alone
	}
	var s sharedMemos
	s.share(p, m)
	var adopted laneMemo
	found := s.adopt(p, &adopted, h, time.Now())
	if ok && !found {
		t.Fatalf("remembered %+v: a new connection's head did not find it shared", m.key)
	}
	if !found {
		return
	}
	rt, u, served := adopted.routeForHead(p, h, time.Now())
	if served != ok || served && (rt != fromHead || u != uri) {
		t.Fatalf("remembered %+v: adopted, it serves the head %v (%q), the connection's own %v (%q)", m.key, served, u, ok, uri)
	}
}

// sameTarget tells whether a and b are the same request's target to the tool, as far as the
// proxy uses it: its scheme, host and request URI, and where a relative redirect from it goes.
func sameTarget(a, b *url.URL) bool {
	next := &url.URL{Path: "next"}
	return a.Scheme == b.Scheme && a.Host == b.Host && a.RequestURI() == b.RequestURI() &&
		a.ResolveReference(next).String() == b.ResolveReference(next).String()
}

// laneAddresses are Connector addresses sameRoutes remembers routes to: with a path, with
// escapes and sub-delimiters in it, none, and last one url.Parse does not keep as written.
var laneAddresses = []string{
	"http://tool.example:8080/base/",
	"http://tool.example:8080/a%2Fb/%41!$;=@:c",
	"http://tool.example:8080",
	"http://tool.example:8080/a b/%zz",
}

func withoutHost(h http.Header) http.Header {
	out := h.Clone()
	delete(out, "Host")
	return out
}

// laneTestRoute is the route a remembered Connector at address gives req on c.
func laneTestRoute(c *laneConn, req *http.Request, address string) (*route, bool) {
	conn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "git"},
		Spec: v1alpha1.ConnectorSpec{Address: address}}
	rt := &route{connector: conn, cred: credential{authorization: "Basic dXNlcjpzZWNyZXQ="}}
	key, target, ok := c.keyOf(req)
	if target.IsAbs() {
		u := *target
		rt.target = &u
		return rt, true
	}
	if !ok {
		return nil, false
	}
	target, err := reverseTarget(conn, key.rest, req.URL.RawQuery)
	rt.target = target
	return rt, err == nil
}

func readBack(t *testing.T, head []byte) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		t.Fatalf("%v: %q", err, head)
	}
	return r
}

// answerHeadSeeds are tool answer heads the fast lane reads itself, and near misses.
var answerHeadSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nContent-Length: 5\r\nCache-Control: no-cache\r\n\r\n",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nDate: Wed, 02 Dec 2026 10:00:00 GMT\r\nConnection: close\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nKeep-Alive: timeout=5\r\n\r\n",
	"HTTP/1.1 204\r\nProxy-Connection: keep-alive\r\n\r\n",
	"HTTP/1.1 200 whatever text\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 03\r\n\r\n",
	"HTTP/1.1 302 Found\r\nLocation: http://tool.example:8080/base/x\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
}

// FuzzAnswerHead holds readAnswerHead to net/http: an answer head it reads must be one
// http.ReadResponse reads to the same status, length and Connection: close, and what
// writeClientHead and the copied body give the client must read as what the general path
// (relayAnswer) gives it.
func FuzzAnswerHead(f *testing.F) {
	for _, s := range answerHeadSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, head []byte, isHead bool) {
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			head = head[:i+4]
		}
		method := http.MethodGet
		if isHead {
			method = http.MethodHead
		}
		var a answerHead
		if !readAnswerHead(head, method, &a) || a.length > 4096 {
			return
		}
		body := strings.Repeat("b", int(max(a.length, 0)))
		answer := append(append([]byte(nil), head...), body...)
		target, _ := url.Parse("http://tool.example:8080/base/x")
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(answer)), &http.Request{Method: method, URL: target})
		if err != nil {
			t.Fatalf("read by the fast lane, refused by net/http (%v): %q", err, head)
		}
		if res.StatusCode != a.code || res.Close != a.close || len(res.TransferEncoding) != 0 ||
			!noBody(method, a.code) && res.ContentLength != a.length {
			t.Fatalf("read differently: %d %d %v, net/http %d %d %v", a.code, a.length, a.close, res.StatusCode, res.ContentLength, res.Close)
		}
		rt := &route{connector: &v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: "http://tool.example:8080/base/"}},
			target: target, proxyBase: "http://proxy/namespaces/team/connectors/git"}
		var general, raw bytes.Buffer
		gc := &laneConn{cw: bufio.NewWriter(&general)}
		if _, ok := gc.relayAnswer(method, res, rt); !ok {
			t.Fatal("the general path failed")
		}
		rc := &laneConn{cw: bufio.NewWriter(&raw)}
		writeClientHead(rc.cw, &a, false, rc.scratch[:0])
		if !noBody(method, a.code) {
			_, _ = rc.cw.WriteString(body)
		}
		_ = rc.cw.Flush()
		g, r := answerBack(t, general.Bytes(), method), answerBack(t, raw.Bytes(), method)
		if g.StatusCode != r.StatusCode || g.Status != r.Status || !reflect.DeepEqual(g.Header, r.Header) || g.body != r.body {
			t.Fatalf("the client would read another answer:\n%q\ngeneral path:\n%q", raw.Bytes(), general.Bytes())
		}
	})
}

type answerRead struct {
	*http.Response
	body string
}

// answerBack reads an answer as a client would, its Date header's value left out (the time).
func answerBack(t *testing.T, b []byte, method string) answerRead {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%v: %q", err, b)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(res.Body)
	if _, ok := res.Header["Date"]; ok {
		res.Header["Date"] = []string{"(the time)"}
	}
	return answerRead{res, body.String()}
}

// TestAddressPath: the address paths heads are joined to in place, and those they are not.
func TestAddressPath(t *testing.T) {
	for address, want := range map[string]struct {
		path string
		ok   bool
	}{
		"http://tool.example:8080/base/":            {"/base", true},
		"http://tool.example:8080":                  {"", true},
		"http://tool.example:8080/a%2Fb/%41!$;=@:c": {"/a%2Fb/%41!$;=@:c", true},
		"http://tool.example:8080/a b":              {"/a%20b", false},
		"http://tool.example:8080/base?x=1":         {"", false},
		"http://tool.example:8080/base#top":         {"", false},
		"http://tool.example:8080/%zz":              {"", false},
	} {
		path, ok := addressPath(address)
		if ok != want.ok || ok && path != want.path {
			t.Errorf("addressPath(%q) = %q, %v; want %q, %v", address, path, ok, want.path, want.ok)
		}
	}
}

// A forward connection's remembered route takes no origin-form head, whatever its
// Proxy-Authorization: its target names no destination (here, cut where an absolute one's
// authority starts, its bytes would name the remembered host).
func TestForwardMemoTakesNoOriginFormHead(t *testing.T) {
	c := &laneConn{lane: laneTestLane}
	r := readBack(t, []byte("GET http://aces/x HTTP/1.1\r\nHost: aces\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\n\r\n"))
	key, _, _ := c.keyOf(r)
	rt, _ := laneTestRoute(c, r, "http://aces/")
	var m laneMemo
	m.remember(key, "", rt, 0)
	var h laneHead
	head := "GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy\r\nProxy-Authorization: Basic dGVhbS9naXQ6dG9r\r\n\r\n"
	if !readLaneHead([]byte(head), &h, false) {
		t.Fatal("the head is not read in place")
	}
	if _, uri, ok := m.routeForHead(&Proxy{}, &h, time.Now()); ok {
		t.Errorf("a reverse head along a forward route, to %q", uri)
	}
}

func TestHolds(t *testing.T) {
	for _, b := range []string{"", "a", "tok", "xtokx", "to", "tto", "ttok", "tokentok", "ab\x00tok"} {
		for _, s := range []string{"", "t", "tok", "ok", "x", "\x00t", "tokentokx"} {
			if got, want := holds([]byte(b), s), strings.Contains(b, s); got != want {
				t.Errorf("holds(%q, %q) = %v, want %v", b, s, got, want)
			}
		}
	}
}

// visibleOrBlank is the per-byte rule at every length and position of every byte value.
func TestVisibleOrBlank(t *testing.T) {
	for n := range 20 {
		for at := range n {
			for b := range 256 {
				v := bytes.Repeat([]byte("a"), n)
				v[at] = byte(b)
				want := b == '\t' || b >= ' ' && b <= '~'
				if got := visibleOrBlank(v); got != want {
					t.Fatalf("%q: %v, want %v", v, got, want)
				}
			}
		}
	}
	if !visibleOrBlank([]byte("Bearer \tabc~ ~~~~~~~~        ")) || visibleOrBlank([]byte("Bearer abcdefgh\x7f")) {
		t.Error("a tab amid, or a DEL after, eight-byte words read wrongly")
	}
}

// BenchmarkReadLaneHead reads a git fetch's head with a Pod token of a kilobyte, as the fast
// lane reads every request along a remembered route.
func BenchmarkReadLaneHead(b *testing.B) {
	head := []byte("GET /namespaces/team/connectors/git/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: proxy:8080\r\n" +
		"Authorization: Bearer " + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 48) + "\r\nUser-Agent: git/2.39.5\r\nAccept: */*\r\n" +
		"Accept-Encoding: deflate, gzip\r\nGit-Protocol: version=2\r\nPragma-Not: x\r\n\r\n")
	var h laneHead
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		if !readLaneHead(head, &h, false) {
			b.Fatal("not read")
		}
	}
}
