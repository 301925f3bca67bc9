package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kube-connectors/connectors-csi/test/forgingtool"
)

// connCounter counts the connections a test server accepted and those it saw closed.
type connCounter struct {
	opened, closed atomic.Int64
	mu             sync.Mutex
	requests       []string
}

func startCounted(t *testing.T, h http.HandlerFunc) (*httptest.Server, *connCounter) {
	t.Helper()
	cc := &connCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cc.mu.Lock()
		cc.requests = append(cc.requests, r.Method+" "+r.URL.RequestURI())
		cc.mu.Unlock()
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			cc.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			cc.closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cc
}

func (cc *connCounter) seen() []string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return append([]string(nil), cc.requests...)
}

func directGet(t *testing.T, d *directTransport, tr *http.Transport, ctx context.Context, method, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.takes(tr, req) {
		t.Fatalf("the direct transport does not take %s %s", method, url)
	}
	return d.RoundTrip(tr, req, poolOwner{}, nil)
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return string(b)
}

func newTestTransport() *http.Transport {
	return &http.Transport{DialContext: (&net.Dialer{}).DialContext}
}

// TestDirectTransportKeepsOneConnection: sequential GETs, HEADs and body-less answers (204,
// 304) all go over one connection, each answer whole.
func TestDirectTransportKeepsOneConnection(t *testing.T) {
	srv, cc := startCounted(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/chunked":
			w.Write([]byte("part one, "))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
		default:
			w.Write([]byte("body of " + r.URL.Path))
		}
	})
	d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()
	for i := 0; i < 5; i++ {
		for _, tc := range []struct{ method, path, want string }{
			{"GET", "/a", "body of /a"}, {"HEAD", "/a", ""}, {"GET", "/204", ""}, {"GET", "/304", ""},
			{"GET", "/chunked", "part one, part two"},
		} {
			res, err := directGet(t, d, tr, context.Background(), tc.method, srv.URL+tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, res); got != tc.want {
				t.Fatalf("%s %s: %q, want %q", tc.method, tc.path, got, tc.want)
			}
		}
	}
	if n := cc.opened.Load(); n != 1 {
		t.Errorf("%d connections for 25 sequential requests, want 1", n)
	}
}

// TestDirectTransportResendsOnAConnectionTheToolClosed: a pooled connection the tool closed
// while idle fails before any answer; the GET goes once more on a new connection, and the
// tool sees it once.
func TestDirectTransportResendsOnAConnectionTheToolClosed(t *testing.T) {
	srv, cc := startCounted(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()
	res, err := directGet(t, d, tr, context.Background(), "GET", srv.URL+"/first")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	srv.CloseClientConnections()
	for cc.closed.Load() < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	res, err = directGet(t, d, tr, context.Background(), "GET", srv.URL+"/second")
	if err != nil {
		t.Fatalf("the GET after the tool closed the idle connection: %v", err)
	}
	if got := readAll(t, res); got != "ok" {
		t.Fatalf("answer %q", got)
	}
	if got := strings.Join(cc.seen(), ","); got != "GET /first,GET /second" {
		t.Errorf("the tool saw %s", got)
	}
}

// TestDirectTransportSendsABodyOnce: a POST goes on a pooled connection only once it proved
// open (the tool closed the idle one: a new connection instead, the POST sent once), and is
// never sent twice: a tool that drops the connection after reading it gets it once, and the
// caller the error.
func TestDirectTransportSendsABodyOnce(t *testing.T) {
	var (
		mu     sync.Mutex // the test reads them after the tool's goroutine, which a dropped connection does not order
		bodies []string
	)
	srv, cc := startCounted(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if r.URL.Path == "/drop" {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		w.Write([]byte("got " + string(b)))
	})
	d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()
	post := func(path, body string) (string, error) {
		t.Helper()
		req, err := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if !d.takes(tr, req) {
			t.Fatalf("the direct transport does not take POST %s", path)
		}
		res, err := d.RoundTrip(tr, req, poolOwner{}, nil)
		if err != nil {
			return "", err
		}
		return readAll(t, res), nil
	}
	if got, err := post("/first", "one"); err != nil || got != "got one" {
		t.Fatalf("the first POST: %q %v", got, err)
	}
	srv.CloseClientConnections()
	for cc.closed.Load() < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	if got, err := post("/second", "two"); err != nil || got != "got two" {
		t.Fatalf("the POST after the tool closed the idle connection: %q %v", got, err)
	}
	if _, err := post("/drop", "three"); err == nil {
		t.Fatal("a POST whose connection the tool dropped unanswered succeeded")
	}
	if got := strings.Join(cc.seen(), ","); got != "POST /first,POST /second,POST /drop" {
		t.Errorf("the tool saw %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(bodies, ","); got != "one,two,three" {
		t.Errorf("the tool read the bodies %s", got)
	}
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the closed one replaced once)", n)
	}
}

// TestDirectTransportDropsWhatItCannotReuse: a body closed before its end closes the
// connection (the rest is never read), as does an answer with Connection: close; the next
// request dials anew.
func TestDirectTransportDropsWhatItCannotReuse(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	srv, cc := startCounted(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte(big))
	})
	d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()
	for i, path := range []string{"/abandoned", "/close", "/last"} {
		res, err := directGet(t, d, tr, context.Background(), "GET", srv.URL+path)
		if err != nil {
			t.Fatal(err)
		}
		if path == "/abandoned" {
			buf := make([]byte, 1024)
			if _, err := io.ReadFull(res.Body, buf); err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		} else if got := readAll(t, res); len(got) != len(big) {
			t.Fatalf("%s: %d bytes", path, len(got))
		}
		if n := cc.opened.Load(); n != int64(i+1) {
			t.Fatalf("after %s: %d connections, want %d", path, n, i+1)
		}
	}
}

// TestDirectTransportStopsWhenTheClientLeaves: the request's context ending breaks a stalled
// answer (its head, or its body) instead of leaving the read blocked.
func TestDirectTransportStopsWhenTheClientLeaves(t *testing.T) {
	release := make(chan struct{})
	srv, _ := startCounted(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("the first bytes"))
			w.(http.Flusher).Flush()
		}
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers
	d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()

	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { _, err := directGet(t, d, tr, ctx, "GET", srv.URL+"/head"); errs <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("a stalled answer's head returned no error after the client left")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the round trip still waits for the stalled tool after the client left")
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	res, err := directGet(t, d, tr, ctx, "GET", srv.URL+"/body")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	go func() { _, err := io.ReadAll(res.Body); errs <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("a stalled body read to an end after the client left")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the body read still waits for the stalled tool after the client left")
	}
}

// TestDirectTransportTakesWhatItCanSendAgain: GET and HEAD without a body, and POST, PUT,
// PATCH and DELETE without one or with one of known length it can write again (GetBody); the
// rest (a body it could not send twice, a chunked one, a GET's, other methods, upgrades) goes
// to http.Transport.
func TestDirectTransportTakesWhatItCanSendAgain(t *testing.T) {
	d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()
	req := func(method, url string, body io.Reader, header ...string) *http.Request {
		r, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		return r
	}
	for _, tc := range []struct {
		r    *http.Request
		want bool
	}{
		{req("GET", "http://tool/x", nil), true},
		{req("HEAD", "http://tool/x", nil), true},
		{req("POST", "http://tool/x", nil), true},
		{req("DELETE", "http://tool/x", nil), true},
		{req("PUT", "http://tool/x", strings.NewReader("data")), true},
		{req("PATCH", "http://tool/x", strings.NewReader("data")), true},
		{req("POST", "http://tool/x", io.NopCloser(strings.NewReader("data"))), false},   // no GetBody
		{req("POST", "http://tool/x", io.MultiReader(strings.NewReader("data"))), false}, // chunked
		{req("OPTIONS", "http://tool/x", nil), false},
		{req("GET", "http://tool/x", strings.NewReader("data")), false},
		{req("GET", "https://tool/x", nil), true},
		{req("HEAD", "https://tool/x", nil), true},
		{req("POST", "https://tool/x", strings.NewReader("data")), true},
		{req("GET", "http://tool/ws", nil, "Upgrade", "websocket", "Connection", "Upgrade"), false},
	} {
		if got := d.takes(tr, tc.r); got != tc.want {
			t.Errorf("%s %s (body %v, upgrade %q): takes = %v, want %v", tc.r.Method, tc.r.URL, tc.r.Body != nil, tc.r.Header.Get("Upgrade"), got, tc.want)
		}
	}
	if d.takes(&http.Transport{}, req("GET", "http://tool/x", nil)) {
		t.Error("taken for a transport without a dialer (no destination policy to dial with)")
	}
	customTLS := newTestTransport()
	customTLS.DialTLSContext = customTLS.DialContext
	if d.takes(customTLS, req("GET", "https://tool/x", nil)) {
		t.Error("an https request taken for a transport with a TLS dialer of its own")
	}
}

// streamFront is a ReverseProxy over d, as the proxy's: the body of a direct answer goes to
// the metered client writer.
func streamFront(t *testing.T, d *directTransport, tr *http.Transport, upstream string) (front *httptest.Server, counted func() int64) {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	type clientKey struct{}
	// Each request's bytes as the client's writer counted them, once its handler is done,
	// which may be after the client has read the answer.
	sent := make(chan int64, 64)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return d.RoundTrip(tr, r, poolOwner{}, r.Context().Value(clientKey{}).(io.Writer))
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := &meteredWriter{ResponseWriter: w, mode: modeReverse, r: r}
		defer func() { sent <- m.bytes }()
		rp.ServeHTTP(m, r.WithContext(context.WithValue(r.Context(), clientKey{}, io.Writer(m))))
	}))
	t.Cleanup(front.Close)
	return front, func() int64 {
		t.Helper()
		select {
		case n := <-sent:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("no request ended at the front in 10s")
			return 0
		}
	}
}

// readFromRefused is a client writer whose ReadFrom fails the test: copyThrough must never
// hand a tool connection to it (a TCP client's would splice, which costs the client more than
// the copy saves: see copyThrough).
type readFromRefused struct {
	t   *testing.T
	got bytes.Buffer
}

func (w *readFromRefused) Write(p []byte) (int, error) { return w.got.Write(p) }

func (w *readFromRefused) ReadFrom(io.Reader) (int64, error) {
	w.t.Error("copyThrough used the client's ReadFrom")
	return 0, errors.New("refused")
}

// TestCopyThroughCopiesInTheProcess: a large body from a tool's TCP connection reaches a
// client that could splice it (it has ReadFrom) through the process's own buffer, whole.
func TestCopyThroughCopiesInTheProcess(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tool := dialTool(t, func(c net.Conn) { _, _ = c.Write(payload) })
	client := &readFromRefused{t: t}
	n, err := copyThrough(client, io.LimitReader(tool, int64(len(payload))))
	if err != nil || n != int64(len(payload)) || !bytes.Equal(client.got.Bytes(), payload) {
		t.Fatalf("copied %d bytes (err %v), want the tool's %d", n, err, len(payload))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDirectTransportStreamsLargeBodies: answers of known length from streamMinBytes up reach
// the client whole, byte for byte, over one pooled connection to the tool, and count in the
// client's bytes; one the tool cuts short reaches the client as an error, and its connection
// is not reused.
func TestDirectTransportStreamsLargeBodies(t *testing.T) {
	payload := make([]byte, 3<<20+7)
	for i := range payload {
		payload[i] = byte(i*7 + i>>11)
	}
	srv, cc := startCounted(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Get("cut") != "" {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(payload[:n/10])
			panic(http.ErrAbortHandler) // the tool dies mid-answer
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(payload[:n]))
	})
	d := newDirectTransport(4, time.Minute, 64<<10)
	front, counted := streamFront(t, d, newTestTransport(), srv.URL)
	var total, sent int64
	for _, n := range []int{streamMinBytes, 1<<20 + 3, len(payload), 1000} {
		res, err := http.Get(front.URL + "/blob?n=" + strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); got != string(payload[:n]) {
			t.Fatalf("%d bytes asked: %d received, or not the tool's", n, len(got))
		}
		total, sent = total+int64(n), sent+counted()
	}
	if o := cc.opened.Load(); o != 1 {
		t.Errorf("%d connections to the tool for four answers, want 1", o)
	}
	if sent != total {
		t.Errorf("the client's writer counted %d bytes, want %d", sent, total)
	}
	res, err := http.Get(front.URL + "/blob?cut=1&n=" + strconv.Itoa(1<<20))
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Fatal("an answer the tool cut short reached the client as complete")
	}
	res, err = http.Get(front.URL + "/blob?n=" + strconv.Itoa(streamMinBytes))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); got != string(payload[:streamMinBytes]) {
		t.Fatal("the answer after a cut one is wrong")
	}
	if o := cc.opened.Load(); o != 2 {
		t.Errorf("%d connections to the tool, want 2 (the pooled one carried the cut answer and was not reused)", o)
	}
}

// startTLSTool is an https tool that speaks HTTP/2 to clients offering it, answering with
// the protocol, the server name the client asked for and n bytes of payload; its transport
// trusts its certificate and dials it whatever address it is given (tool.example.com is one
// of the certificate's names), and counts the tool's connections.
func startTLSTool(t *testing.T, payload []byte) (*http.Transport, *connCounter) {
	t.Helper()
	cc := &connCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cc.mu.Lock()
		cc.requests = append(cc.requests, r.Proto+" "+r.TLS.ServerName+" "+r.URL.RequestURI())
		cc.mu.Unlock()
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(payload[:n])
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			cc.opened.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", srv.Listener.Addr().String())
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true, // as the Connectors' transports
	}
	return tr, cc
}

// TestDirectTransportSpeaksHTTP1OverTLS: to an https tool that would speak HTTP/2, the direct
// transport offers HTTP/1.1 alone, names the tool's host to it, verifies its certificate
// against the transport's roots, keeps one connection for sequential requests, and copies
// large answers byte for byte. A tool whose certificate the roots do not vouch for gets no
// request.
func TestDirectTransportSpeaksHTTP1OverTLS(t *testing.T) {
	payload := make([]byte, 1<<20+5)
	for i := range payload {
		payload[i] = byte(i*13 + i>>9)
	}
	tr, cc := startTLSTool(t, payload)
	// A request with a body goes through the transport itself, over HTTP/2; from then on its
	// TLS settings offer h2 (http.Transport adds it), which the direct transport must not.
	res, err := (&http.Client{Transport: tr}).Post("https://tool.example.com/post?n=3", "text/plain", strings.NewReader("data"))
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, res); res.Proto != "HTTP/2.0" {
		t.Fatalf("the transport's own request went over %s, want HTTP/2.0 (the test's tool must offer it)", res.Proto)
	}
	opened := cc.opened.Load()
	d := newDirectTransport(4, time.Minute, 64<<10)
	for _, n := range []int{1000, 0, 1000} {
		res, err := directGet(t, d, tr, context.Background(), "GET", "https://tool.example.com/x?n="+strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); got != string(payload[:n]) {
			t.Fatalf("%d bytes asked: %d received, or not the tool's", n, len(got))
		}
	}
	front, counted := streamFront(t, d, tr, "https://tool.example.com")
	res, err = http.Get(front.URL + "/blob?n=" + strconv.Itoa(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	if got, sent := readAll(t, res), counted(); got != string(payload) || sent != int64(len(payload)) {
		t.Fatalf("a large answer over TLS: %d bytes received (%d counted), want %d, the tool's", len(got), sent, len(payload))
	}
	if o := cc.opened.Load() - opened; o != 1 {
		t.Errorf("%d connections to the tool for four sequential answers, want 1", o)
	}
	for _, seen := range cc.seen()[1:] {
		if !strings.HasPrefix(seen, "HTTP/1.1 tool.example.com /") {
			t.Errorf("the tool saw %q, want HTTP/1.1 with the server name tool.example.com", seen)
		}
	}

	untrusting := tr.Clone()
	untrusting.TLSClientConfig = &tls.Config{RootCAs: x509.NewCertPool()}
	before := len(cc.seen())
	req, _ := http.NewRequest("GET", "https://tool.example.com/x?n=1", nil)
	req.Header.Set("Authorization", "Basic c2VjcmV0")
	if _, err := d.RoundTrip(untrusting, req, poolOwner{}, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a tool the roots do not vouch for: err = %v, want a certificate error", err)
	}
	if len(cc.seen()) != before {
		t.Error("a request reached a tool whose certificate was not verified")
	}
}

// TestDirectTransportLeavesHTTP2OnlyToolsToTheTransport: an https tool that refuses HTTP/1.1
// in the TLS handshake fails the direct transport with errHTTP1Refused, which the proxy takes
// to send the request through http.Transport (HTTP/2), and the direct transport no longer
// takes that tool's requests.
func TestDirectTransportLeavesHTTP2OnlyToolsToTheTransport(t *testing.T) {
	protos := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Proto
		_, _ = w.Write([]byte("h2 only"))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// Go's server would fall back to HTTP/1.1; this one, as some others, refuses a client
	// that does not offer h2.
	certs := srv.TLS.Certificates
	srv.TLS.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(hello.SupportedProtos, "h2") {
			return &tls.Config{Certificates: certs, NextProtos: []string{"h2-only"}}, nil
		}
		return nil, nil
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tr := &http.Transport{DialContext: (&net.Dialer{}).DialContext, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: roots}}
	d := newDirectTransport(4, time.Minute, 64<<10)
	req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
	if !d.takes(tr, req) {
		t.Fatal("the direct transport does not take a GET to an https tool")
	}
	if _, err := d.RoundTrip(tr, req, poolOwner{}, nil); !errors.Is(err, errHTTP1Refused) {
		t.Fatalf("a tool of HTTP/2 only: err = %v, want errHTTP1Refused", err)
	}
	if d.takes(tr, req) {
		t.Error("the direct transport still takes the requests of a tool that refused HTTP/1.1")
	}
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if body, proto := readAll(t, res), <-protos; body != "h2 only" || proto != "HTTP/2.0" {
		t.Errorf("through the transport: %q, the tool saw %s", body, proto)
	}
}

// TestToolWriterSendsLargeBodiesWithoutAllocating: a request with a body larger than a tool
// connection's write buffer (one the fast lane read out whole) reaches the tool whole, and its
// copy allocates no buffer of its own per request (net.TCPConn's ReadFrom, which bufio.Writer
// hands such a body to, would allocate 32 KiB each time).
func TestToolWriterSendsLargeBodiesWithoutAllocating(t *testing.T) {
	const body, runs = 32 << 10, 50
	received := make(chan int64, 1)
	conn := dialTool(t, func(conn net.Conn) {
		n, _ := io.Copy(io.Discard, conn)
		received <- n
	})
	pc := newDirectConn(directKey{}, conn, 64<<10)
	payload := bytes.Repeat([]byte("b"), body)
	send := func() {
		r, _ := http.NewRequest(http.MethodPost, "http://tool/x", io.NopCloser(bytes.NewReader(payload)))
		r.ContentLength = body
		if err := r.Write(pc.bw); err != nil {
			t.Fatal(err)
		}
		if err := pc.bw.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send() // the pool's first buffer
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		send()
	}
	runtime.ReadMemStats(&after)
	_ = conn.Close()
	if n := <-received; n < (runs+1)*body {
		t.Fatalf("the tool received %d bytes, want at least %d", n, (runs+1)*body)
	}
	if perRequest := (after.TotalAlloc - before.TotalAlloc) / runs; perRequest > 8<<10 && !raceEnabled {
		t.Errorf("%d bytes allocated per request of a 32 KiB body", perRequest)
	}
}

// dialTool connects to a tool on loopback that serve serves (on the connection it accepted,
// closed after).
func dialTool(t *testing.T, serve func(net.Conn)) net.Conn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Closed once the connection is accepted, not when this returns: a listener closed with a
	// connection still in its accept queue resets it (the client then fails to write).
	t.Cleanup(func() { lis.Close() })
	go func() {
		conn, err := lis.Accept()
		lis.Close()
		if err != nil {
			return
		}
		defer conn.Close()
		serve(conn)
	}()
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestAwaitAnswerToARequestSentInPart: a request that outgrew the tool connection's buffer went
// out in part before awaitAnswer, and a tool that answers its head at once (a 401) has that
// answer there before the read begins: awaitAnswer reads it rather than wait for more (the
// tool keeps the connection open, reading the rest), and did not send from within the read.
// A request bw holds whole is sent from within the read, and its answer read.
func TestAwaitAnswerToARequestSentInPart(t *testing.T) {
	for name, size := range map[string]int{"outgrew the buffer": 32 << 10, "whole in the buffer": 100} {
		t.Run(name, func(t *testing.T) {
			conn := dialTool(t, func(tool net.Conn) {
				br := bufio.NewReader(tool)
				if readHeadLines(br) != nil {
					return
				}
				_, _ = io.WriteString(tool, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
				_, _ = io.Copy(io.Discard, br)
			})
			pc, sentInRead := countSendsInRead(conn)
			_, _ = fmt.Fprintf(pc.bw, "POST /x HTTP/1.1\r\nHost: tool\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("b", size))
			time.Sleep(20 * time.Millisecond) // an answer to what went out comes, and is seen, first
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := pc.awaitAnswer(); err != nil {
				t.Fatalf("awaitAnswer: %v", err)
			}
			res, err := pc.readHead(&http.Request{Method: http.MethodPost})
			if err != nil || res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("answer: %v, %v", res, err)
			}
			if want := size < 4<<10; (*sentInRead == 1) != want {
				t.Errorf("sent from within the read %d times", *sentInRead)
			}
		})
	}
}

// TestAwaitAnswerSendsEveryRequestInTheRead: request after request on one tool connection, each
// whole in bw, is sent from within the read of its answer.
func TestAwaitAnswerSendsEveryRequestInTheRead(t *testing.T) {
	conn := dialTool(t, func(tool net.Conn) {
		br := bufio.NewReader(tool)
		for readHeadLines(br) == nil {
			if _, err := io.WriteString(tool, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	pc, sentInRead := countSendsInRead(conn)
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	const requests = 5
	for i := range requests {
		_, _ = io.WriteString(pc.bw, "GET /x HTTP/1.1\r\nHost: tool\r\n\r\n")
		if err := pc.awaitAnswer(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		res, err := pc.readHead(&http.Request{Method: http.MethodGet})
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %v, %v", i, res, err)
		}
		if body, err := io.ReadAll(io.LimitReader(pc.br, 2)); string(body) != "ok" {
			t.Fatalf("request %d: body %q, %v", i, body, err)
		}
	}
	if *sentInRead != requests {
		t.Errorf("%d of %d requests sent from within the read", *sentInRead, requests)
	}
}

// readHeadLines reads a request head's lines through its empty line.
func readHeadLines(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return err
		}
	}
}

// countSendsInRead is a direct connection over conn that counts the requests sent from within
// the read of their answer (the sends awaitAnswer leaves to it).
func countSendsInRead(conn net.Conn) (*directConn, *int) {
	pc := newDirectConn(directKey{}, conn, 64<<10)
	sent, flush := new(int), pc.sendRequest
	pc.sendRequest = func() error {
		*sent++
		return flush()
	}
	return pc, sent
}

// TestDirectTransportKeepsConnectorsConnectionsApart: a tool that sends bytes after an answer
// (here a forged answer after a HEAD's head, once the connection is back in the pool) has
// them read by the next request on that connection. That request is never another
// Connector's, nor another namespace's caller's of the same Connector (a shared one): its GET
// goes on a connection of its own and gets the tool's own answer.
func TestDirectTransportKeepsConnectorsConnectionsApart(t *testing.T) {
	for name, other := range map[string]poolOwner{
		"another Connector":                          {connector: "uid-of-tenant-b", caller: "tenant-b"},
		"another namespace's caller, same Connector": {connector: "uid-shared", caller: "tenant-b"},
	} {
		t.Run(name, func(t *testing.T) {
			tool := forgingtool.Start(t, "127.0.0.1")
			d, tr := newDirectTransport(4, time.Minute, 64<<10), newTestTransport()
			send := func(owner poolOwner, method string) string {
				req, err := http.NewRequest(method, "http://"+tool.Addr+"/x", nil)
				if err != nil {
					t.Fatal(err)
				}
				res, err := d.RoundTrip(tr, req, owner, nil)
				if err != nil {
					t.Fatal(err)
				}
				return readAll(t, res)
			}
			send(poolOwner{connector: "uid-shared", caller: "tenant-a"}, http.MethodHead)
			close(tool.Forge)
			<-tool.Forged
			if got := send(other, http.MethodGet); got != "real" {
				t.Fatalf("%+v's GET was answered %q: it was sent on the first owner's connection", other, got)
			}
			if n := tool.Connections(); n != 2 {
				t.Errorf("the tool saw %d connections, want one per owner", n)
			}
		})
	}
}

// uploadOf is a body the client is still sending, as the fast lane's uploadBody is.
type uploadOf struct{ io.Reader }

func (uploadOf) Close() error { return nil }
func (uploadOf) Abort()       {}

// writeCounter counts the writes on a connection.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestDirectTransportWritesAChunkedUploadAChunkAtATime: a chunked upload reaches the tool
// whole, each of net/http's pieces (32 KiB at most) in one write with its size line and CRLF
// (uploadWriters), where the connection's 4 KiB writer made three.
func TestDirectTransportWritesAChunkedUploadAChunkAtATime(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: 32 pieces
	srv, _ := startCounted(t, func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(got, body) || len(r.TransferEncoding) != 1 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Write([]byte("whole"))
	})
	var writes atomic.Int64
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCounter{conn, &writes}, nil
	}}
	req, err := http.NewRequest("POST", srv.URL+"/upload", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Body, req.ContentLength, req.TransferEncoding = uploadOf{bytes.NewReader(body)}, -1, []string{"chunked"}
	d := newDirectTransport(4, time.Minute, 64<<10)
	if !d.takes(tr, req) {
		t.Fatal("the direct transport does not take a chunked upload")
	}
	res, err := d.RoundTrip(tr, req, poolOwner{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res); res.StatusCode != http.StatusOK || got != "whole" {
		t.Fatalf("the tool answered %d %q", res.StatusCode, got)
	}
	if pieces := int64(len(body) / (32 << 10)); writes.Load() > pieces+2 {
		t.Errorf("%d writes for a body of %d pieces, want at most %d", writes.Load(), pieces, pieces+2)
	}
}

// rawTool is a tool on loopback that answers every connection's first request with answer.
func rawTool(t *testing.T, answer func(w *bufio.Writer)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if readHeadLines(bufio.NewReader(conn)) != nil {
					return
				}
				w := bufio.NewWriter(conn)
				answer(w)
				_ = w.Flush()
			}()
		}
	}()
	return "http://" + lis.Addr().String()
}

// TestDirectTransportBoundsAnswerHeads: an answer's head, its informational heads counted
// with it, is read within the transport's bound; a tool sending more (a tenant's own server)
// gets an error naming the bound, not the node's memory.
func TestDirectTransportBoundsAnswerHeads(t *testing.T) {
	const bound = 64 << 10
	padded := func(w *bufio.Writer) {
		w.WriteString("HTTP/1.1 200 OK\r\n")
		for range 4 << 10 { // 4 MiB of header lines
			w.WriteString("X-Pad: " + strings.Repeat("a", 1017) + "\r\n")
		}
		w.WriteString("Content-Length: 2\r\n\r\nok")
	}
	informational := func(w *bufio.Writer) {
		for range 100_000 {
			w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		}
		w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
	within := func(w *bufio.Writer) {
		w.WriteString("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("a", bound/2) + "\r\nContent-Length: 2\r\n\r\nok")
	}
	for name, tc := range map[string]struct {
		answer func(*bufio.Writer)
		fails  bool
	}{"header lines past the bound": {padded, true}, "informational heads past the bound": {informational, true}, "within the bound": {within, false}} {
		t.Run(name, func(t *testing.T) {
			d, tr := newDirectTransport(4, time.Minute, bound), newTestTransport()
			res, err := directGet(t, d, tr, context.Background(), "GET", rawTool(t, tc.answer)+"/x")
			switch {
			case tc.fails && (err == nil || !strings.Contains(err.Error(), "larger than 65536 bytes")):
				t.Fatalf("got %v, %v; want the bound's error", res, err)
			case !tc.fails && err != nil:
				t.Fatal(err)
			case !tc.fails:
				if got := readAll(t, res); got != "ok" {
					t.Fatalf("body %q", got)
				}
			}
		})
	}
}
