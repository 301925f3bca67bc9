package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/test/testca"
)

// laneTool is the tool behind the fast lane's tests: answers of known length, small and large,
// a streamed answer with a trailer, a redirect within its address, an echo of a POST body,
// and an answer that waits until its client goes away (which it reports on left).
func laneTool(t *testing.T) (srv *httptest.Server, stalled, left <-chan struct{}) {
	large := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	large = append(large, "tail..."...)
	stalledCh, leftCh, testEnded := make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Basic "+basic("bot", "lane-secret") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/small":
			w.Header().Set("Content-Length", "1024")
			_, _ = w.Write(bytes.Repeat([]byte("s"), 1024))
		case "/large":
			w.Header().Set("Content-Length", fmt.Sprint(len(large)))
			_, _ = w.Write(large)
		case "/streamed":
			w.Header().Set("Trailer", "X-Checksum")
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
			w.Header().Set("X-Checksum", "three-parts")
		case "/moved":
			http.Redirect(w, r, "http://"+r.Host+"/small", http.StatusFound)
		case "/echo":
			_, _ = io.Copy(w, r.Body)
		case "/stall", "/stall-mid-answer":
			if r.URL.Path == "/stall-mid-answer" {
				w.Header().Set("Content-Length", "1000")
				_, _ = w.Write([]byte("the first of 1000 bytes"))
				w.(http.Flusher).Flush()
			}
			stalledCh <- struct{}{}
			select {
			case <-r.Context().Done():
				leftCh <- struct{}{}
			case <-testEnded:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(testEnded) }) // first: a handler still stalled lets srv.Close end
	return srv, stalledCh, leftCh
}

// basicTool makes the Connector "tool" at address in a new namespace, with a basic-auth
// Secret (user bot), lets ServiceAccount builder use it, and publishes a volume of it to the Pod
// "client"; it returns the namespace, the class and the volume's files. with, if given,
// completes the Connector before it is created, in its namespace.
func basicTool(t *testing.T, env *proxyEnv, address, password string, with ...func(ns string, c *v1alpha1.Connector)) (ns, class string, files map[string]string) {
	t.Helper()
	ns = newNamespace(t)
	createSecret(t, ns, "cred", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": password})
	class = newClass(t, "basic")
	c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "tool", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: address,
			Auth: &v1alpha1.ConnectorAuth{SecretRef: &v1alpha1.SecretRef{Name: "cred"}}}}
	for _, complete := range with {
		complete(ns, c)
	}
	create(t, c)
	allowConnectors(t, ns, "builder", "tool")
	pod := podWithVolume(t, env.kubelet, ns, "client", map[string]string{"connectors": "tool"}, nil)
	if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	return ns, class, visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))
}

// dialProxy opens a raw client connection to the proxy listener.
func dialProxy(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// writeRaw writes raw bytes of HTTP to the proxy on conn.
func writeRaw(t *testing.T, conn net.Conn, raw string) {
	t.Helper()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
}

// within waits for ch, failing the test after a minute.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not happen", what)
	}
}

// notLaneHeaders are a request's header lines that keep it out of the fast lane: a header the
// Connection header names (hop-by-hop for this hop only), which net/http's path removes.
const notLaneHeaders = "Connection: x-hop\r\nX-Hop: 1\r\n"

// TestFastLane drives the proxy listener over raw keep-alive connections: GET and HEAD of
// the reverse proxy are served by the fast lane (known length, streamed large body, chunked
// with a trailer, a redirect rewritten, a refusal with its metrics counted once), as are POSTs
// with small bodies (one whose body comes late; one refused, its body never read as a
// request), a request it does not take on the same connection goes, with what followed it, to
// net/http's server, and a
// client that leaves while the tool has not answered releases the tool's request. With
// --proxy-fast-lane=false nothing goes through the fast lane.
func TestFastLane(t *testing.T) {
	tool, stalled, left := laneTool(t)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns, class, files := basicTool(t, env, tool.URL, "lane-secret")
	token := files["context.token"]
	host := strings.TrimPrefix(env.proxyURL, "http://")
	base := "/namespaces/" + ns + "/connectors/tool"
	get := func(method, path, auth string) string {
		return method + " " + base + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: " + auth + "\r\nUser-Agent: lane-test\r\n\r\n"
	}
	bearer := "Bearer " + token
	served := series("connectors_proxy_fast_lane_total", map[string]string{"outcome": "served"})
	inPlace := series("connectors_proxy_fast_lane_total", map[string]string{"outcome": "served_in_place"})
	handed := series("connectors_proxy_fast_lane_total", map[string]string{"outcome": "handed_over"})
	unauthorized := series("connectors_proxy_requests_total", map[string]string{"connector_namespace": "", "connector": "", "class": "", "mode": "reverse", "code": "401"})
	before := scrape(t, metricsAddr)

	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	send := func(raw string) {
		t.Helper()
		writeRaw(t, conn, raw)
	}
	read := func(method string) (*http.Response, string) {
		t.Helper()
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, string(body)
	}

	send(get("GET", "/small", bearer))
	if res, body := read("GET"); res.StatusCode != 200 || body != strings.Repeat("s", 1024) || res.ContentLength != 1024 || res.Header.Get("Date") == "" {
		t.Fatalf("GET /small: %d, %d bytes, length %d, headers %v", res.StatusCode, len(body), res.ContentLength, res.Header)
	}
	send(get("HEAD", "/small", bearer))
	if res, body := read("HEAD"); res.StatusCode != 200 || body != "" || res.ContentLength != 1024 {
		t.Fatalf("HEAD /small: %d, body %q, length %d", res.StatusCode, body, res.ContentLength)
	}
	send(get("GET", "/large", bearer))
	if res, body := read("GET"); res.StatusCode != 200 || len(body) != 3<<20+len("tail...") || !strings.HasSuffix(body, "ef0123456789abcdeftail...") {
		t.Fatalf("GET /large: %d, %d bytes", res.StatusCode, len(body))
	}
	send(get("GET", "/streamed", bearer))
	if res, body := read("GET"); res.StatusCode != 200 || body != "part 0;part 1;part 2;" || res.Trailer.Get("X-Checksum") != "three-parts" {
		t.Fatalf("GET /streamed: %d, body %q, trailer %v", res.StatusCode, body, res.Trailer)
	}
	send(get("GET", "/moved", bearer))
	if res, _ := read("GET"); res.StatusCode != http.StatusFound || res.Header.Get("Location") != env.proxyURL+base+"/small" {
		t.Fatalf("GET /moved: %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	send(get("GET", "/small", "Bearer not-a-token"))
	if res, body := read("GET"); res.StatusCode != http.StatusUnauthorized || res.Header.Get("WWW-Authenticate") == "" ||
		!strings.Contains(body, "connectors proxy: token not accepted") || strings.Contains(body, token) {
		t.Fatalf("a bad token: %d, headers %v, body %q", res.StatusCode, res.Header, body)
	}
	// A POST with a small body and a GET sent behind it in one write: both the fast lane's
	// (the POST through net/http's parser, its body whole in the lane's buffer; the GET in
	// place, along the route the GETs before it left). Then a POST in place along the first
	// one's route, a PUT whose body comes after its head (the first PUT: parsed, its body
	// waited for), and a refused POST whose body is a request: that is the POST's body, never
	// served.
	withBody := func(method, auth, headers, body string) string {
		return method + " " + base + "/echo HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: " + auth + "\r\n" + headers + "\r\n" + body
	}
	post := func(auth, headers, body string) string { return withBody("POST", auth, headers, body) }
	send(post(bearer, "Content-Length: 5\r\n", "hello") + get("GET", "/small", bearer))
	if res, body := read("POST"); res.StatusCode != 200 || body != "hello" {
		t.Fatalf("POST /echo in the fast lane: %d %q", res.StatusCode, body)
	}
	if res, body := read("GET"); res.StatusCode != 200 || len(body) != 1024 {
		t.Fatalf("GET behind the POST: %d, %d bytes", res.StatusCode, len(body))
	}
	send(post(bearer, "Content-Length: 14\r\n", "hello in place"))
	if res, body := read("POST"); res.StatusCode != 200 || body != "hello in place" {
		t.Fatalf("POST /echo in place: %d %q", res.StatusCode, body)
	}
	send(withBody("PUT", bearer, "Content-Length: 11\r\n", ""))
	send("hello again")
	if res, body := read("PUT"); res.StatusCode != 200 || body != "hello again" {
		t.Fatalf("PUT /echo, its body sent after its head: %d %q", res.StatusCode, body)
	}
	smuggled := get("GET", "/moved", bearer)
	send(post("Bearer not-a-token", fmt.Sprintf("Content-Length: %d\r\n", len(smuggled)), smuggled) + get("GET", "/small", bearer))
	if res, _ := read("POST"); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a POST with a bad token: %d", res.StatusCode)
	}
	if res, body := read("GET"); res.StatusCode != 200 || len(body) != 1024 {
		t.Fatalf("the GET after a refused POST whose body is a request: %d, %d bytes (the body served as a request?)", res.StatusCode, len(body))
	}
	// A POST with a header its Connection header names (not the fast lane's) and a GET sent
	// behind it in one write: both go to net/http's server with the connection, in order.
	send(post(bearer, notLaneHeaders+"Content-Length: 5\r\n", "hello") + get("GET", "/small", bearer))
	if res, body := read("POST"); res.StatusCode != 200 || body != "hello" {
		t.Fatalf("a POST /echo the fast lane does not take: %d %q", res.StatusCode, body)
	}
	if res, body := read("GET"); res.StatusCode != 200 || len(body) != 1024 {
		t.Fatalf("GET behind the POST the fast lane does not take: %d, %d bytes", res.StatusCode, len(body))
	}
	// The forward proxy's absolute-form GET, three times on one connection (the second and
	// third from the remembered route, the third's path with an escape), and one to a host no
	// named Connector covers: pass-through's, handed over (refused here: the tool's loopback
	// address is not public).
	fwd := dialProxy(t, host)
	fbr := bufio.NewReader(fwd)
	toolHost := strings.TrimPrefix(tool.URL, "http://")
	proxyAuth := "Basic " + basic(ns+"/tool", token)
	for _, target := range []string{tool.URL + "/small", tool.URL + "/small?again=1", tool.URL + "/sm%61ll"} {
		if _, err := io.WriteString(fwd, "GET "+target+" HTTP/1.1\r\nHost: "+toolHost+"\r\nProxy-Authorization: "+proxyAuth+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(fbr, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || len(body) != 1024 {
			t.Fatalf("forward GET %s: %d, %d bytes", target, res.StatusCode, len(body))
		}
	}
	if _, err := io.WriteString(fwd, "GET http://127.0.0.9:1/x HTTP/1.1\r\nHost: 127.0.0.9:1\r\nProxy-Authorization: "+proxyAuth+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if res, err := http.ReadResponse(fbr, &http.Request{Method: "GET"}); err != nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("forward GET to a host of no Connector: %v %v", res, err)
	}

	// In place: the GET of /large after the HEAD (which changed the remembered method: along
	// the route the first GET shared, sharedMemos), those of /streamed and /moved after it, the
	// two GETs behind POSTs (the GETs' route remembered apart from the POSTs'), the second
	// POST, and the forward proxy's second and third GETs; the other five through net/http's
	// parsers (each first of its method on its connection; the refusals are counted by their
	// code).
	wants := map[string]float64{served: 5, inPlace: 8, handed: 2, unauthorized: 2,
		series("connectors_proxy_requests_total", map[string]string{"connector_namespace": ns, "connector": "tool", "class": class, "mode": "forward", "code": "200"}): 3,
		series("connectors_proxy_requests_total", map[string]string{"connector_namespace": ns, "connector": "tool", "class": class, "mode": "reverse", "code": "200"}): 11,
	}
	after := scrapeUntil(t, metricsAddr, before, wants)
	for s, want := range wants {
		if got := after[s] - before[s]; got != want {
			t.Errorf("%s grew by %v, want %v", s, got, want)
		}
	}

	// Connection: close is answered, then the connection closed (on a new connection: in place
	// or not, as the shared routes' second allows).
	closing := dialProxy(t, host)
	if _, err := io.WriteString(closing, strings.Replace(get("GET", "/small", bearer), "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)); err != nil {
		t.Fatal(err)
	}
	cbr := bufio.NewReader(closing)
	res, err := http.ReadResponse(cbr, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, res.Body); err != nil || res.StatusCode != 200 || !res.Close {
		t.Fatalf("GET with Connection: close: %d, close %v, %v", res.StatusCode, res.Close, err)
	}
	if _, err := cbr.ReadByte(); err != io.EOF {
		t.Fatalf("the connection stayed open after Connection: close (%v)", err)
	}
	// A client that leaves while the tool thinks, or while the tool stalls mid-answer: the
	// tool's request ends. Each on a new connection, through net/http's parsers (an
	// Authorization value of its own, which no shared route has), and after a first request on
	// it (its route remembered, the tool connection pooled: the lane's own heads).
	for _, path := range []string{"/stall", "/stall-mid-answer"} {
		for _, first := range []bool{false, true} {
			auth := bearer
			if !first {
				auth = "Basic " + basic("leaving"+path, token)
			}
			gone := dialProxy(t, host)
			if first {
				if _, err := io.WriteString(gone, get("GET", "/small", bearer)); err != nil {
					t.Fatal(err)
				}
				res, err := http.ReadResponse(bufio.NewReader(gone), &http.Request{Method: "GET"})
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("GET /small before %s: %v %v", path, res, err)
				}
				if _, err := io.Copy(io.Discard, res.Body); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := io.WriteString(gone, get("GET", path, auth)); err != nil {
				t.Fatal(err)
			}
			within(t, stalled, "GET "+path+" reaching the tool")
			gone.Close()
			within(t, left, "the tool's request for "+path+" ending after its client left")
		}
	}

	off := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = freeLoopbackAddr(t); o.ProxyWithoutFastLane = true })
	offBefore := scrape(t, metricsAddr)
	if code, body := do(t, noRedirects, newRequest(t, "GET", off.proxyURL+base+"/small", map[string]string{"Authorization": bearer})); code != 200 || len(body) != 1024 {
		t.Fatalf("with the fast lane off: %d, %d bytes", code, len(body))
	}
	// The counter is the process's, both drivers' (no other test runs meanwhile).
	offAfter := scrape(t, metricsAddr)
	if got := offAfter[served] + offAfter[inPlace] - offBefore[served] - offBefore[inPlace]; got != 0 {
		t.Errorf("the fast lane served %v requests with --proxy-fast-lane=false", got)
	}
}

// TestFastLaneToAnHTTPSTool: GET and HEAD of the reverse proxy to an https tool that offers
// HTTP/2 (its CA in the Connector's CA Secret) go through the fast lane, in place from the
// second request on, over one TLS connection of the proxy's own in HTTP/1.1, as does a POST
// with a small body; a POST the fast lane does not take (notLaneHeaders) on the same client
// connection goes to net/http's server and http.Transport, over HTTP/2.
func TestFastLaneToAnHTTPSTool(t *testing.T) {
	authority, cert := loopbackCert(t)
	var mu sync.Mutex
	var seen []string
	var conns atomic.Int64
	tool := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Proto)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Basic "+basic("bot", "tls-secret") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			_, _ = io.Copy(w, r.Body)
			return
		}
		w.Header().Set("Content-Length", "1024")
		_, _ = w.Write(bytes.Repeat([]byte("t"), 1024))
	}))
	tool.EnableHTTP2 = true
	tool.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	tool.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	tool.StartTLS()
	t.Cleanup(tool.Close)

	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns, class, files := basicTool(t, env, tool.URL, "tls-secret", withCA(t, authority))
	host := strings.TrimPrefix(env.proxyURL, "http://")
	head := func(method, extra string) string {
		return method + " /namespaces/" + ns + "/connectors/tool/x HTTP/1.1\r\nHost: " + host +
			"\r\nAuthorization: Bearer " + files["context.token"] + "\r\n" + extra + "\r\n"
	}
	served := series("connectors_proxy_fast_lane_total", map[string]string{"outcome": "served"})
	inPlace := series("connectors_proxy_fast_lane_total", map[string]string{"outcome": "served_in_place"})
	handed := series("connectors_proxy_fast_lane_total", map[string]string{"outcome": "handed_over"})
	before := scrape(t, metricsAddr)

	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	for i, method := range []string{"GET", "GET", "GET", "POST", "POST not the lane's"} {
		raw, want := head(method, ""), strings.Repeat("t", 1024)
		switch method {
		case "POST":
			raw, want = head(method, "Content-Length: 5\r\n")+"hello", "hello"
		case "POST not the lane's":
			method, raw, want = "POST", head("POST", notLaneHeaders+"Content-Length: 5\r\n")+"hello", "hello"
		}
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != 200 || string(body) != want {
			t.Fatalf("request %d (%s) to the https tool: %d, %d bytes, %v", i, method, res.StatusCode, len(body), err)
		}
	}
	after := scrapeUntil(t, metricsAddr, before, map[string]float64{served: 2, inPlace: 2})
	if got := [2]float64{after[served] - before[served], after[inPlace] - before[inPlace]}; got != [2]float64{2, 2} {
		t.Errorf("the fast lane served %v through net/http's parsers and %v in place, want 2 and 2", got[0], got[1])
	}
	mu.Lock()
	if want := []string{"GET HTTP/1.1", "GET HTTP/1.1", "GET HTTP/1.1", "POST HTTP/1.1", "POST HTTP/2.0"}; !slices.Equal(seen, want) {
		t.Errorf("the tool saw %q, want %q", seen, want)
	}
	seen = nil
	mu.Unlock()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections to the tool, want 2 (one pooled HTTP/1.1, one HTTP/2 of http.Transport)", n)
	}

	// Through a CONNECT tunnel: its GETs are the fast lane's (the first through net/http's
	// parsers, the next in place), as is a POST with a small body, over the same pooled
	// connection, the client's own Authorization replaced by the tool's credential; a POST the
	// fast lane does not take goes, with the rest of the tunnel, to the tunnel's net/http server.
	tunnelled := series("connectors_proxy_requests_total", map[string]string{"connector_namespace": ns, "connector": "tool", "class": class, "mode": "tunnelled", "code": "200"})
	before = scrape(t, metricsAddr)
	tn, status := openTunnel(t, host, strings.TrimPrefix(tool.URL, "https://"), ns+"/tool", files["context.token"], []byte(files["ca.crt"]))
	if tn == nil {
		t.Fatalf("CONNECT: %s", status)
	}
	for _, step := range []string{"GET", "GET", "POST", "GET", "POST not the lane's"} {
		raw := "GET /x HTTP/1.1\r\nHost: " + tn.host + "\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\n"
		switch step {
		case "POST":
			raw = "POST /x HTTP/1.1\r\nHost: " + tn.host + "\r\nContent-Length: 5\r\n\r\nhello"
		case "POST not the lane's":
			raw = "POST /x HTTP/1.1\r\nHost: " + tn.host + "\r\n" + notLaneHeaders + "Content-Length: 5\r\n\r\nhello"
		}
		if _, err := io.WriteString(tn.conn, raw); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(tn.r, &http.Request{Method: strings.Fields(step)[0]})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("%s in the tunnel: %d %q", step, res.StatusCode, body)
		}
	}
	after = scrapeUntil(t, metricsAddr, before, map[string]float64{served: 2, inPlace: 2, handed: 2, tunnelled: 5})
	// Handed over: the connection of the CONNECT itself, and the tunnel at its last POST.
	if got := [3]float64{after[served] - before[served], after[inPlace] - before[inPlace], after[handed] - before[handed]}; got != [3]float64{2, 2, 2} {
		t.Errorf("in the tunnel the fast lane served %v, in place %v, handed over %v; want 2, 2, 2", got[0], got[1], got[2])
	}
	if got := after[tunnelled] - before[tunnelled]; got != 5 {
		t.Errorf("%v tunnelled requests counted, want 5", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET HTTP/1.1", "GET HTTP/1.1", "POST HTTP/1.1", "GET HTTP/1.1", "POST HTTP/2.0"}; !slices.Equal(seen, want) {
		t.Errorf("through the tunnel the tool saw %q, want %q", seen, want)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections to the tool after the tunnel, want still 2", n)
	}
}

// TestFastLaneToAnHTTP2OnlyTool: an https tool that refuses HTTP/1.1 in the TLS handshake
// gets the fast lane's GET through http.Transport over HTTP/2 instead, and so every request
// after it (the proxy remembers the tool).
func TestFastLaneToAnHTTP2OnlyTool(t *testing.T) {
	authority, cert := loopbackCert(t)
	var mu sync.Mutex
	var seen []string
	tool := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Proto)
		mu.Unlock()
		_, _ = w.Write([]byte("h2 only"))
	}))
	tool.EnableHTTP2 = true
	only := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2-only"}}
	tool.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if !slices.Contains(hello.SupportedProtos, "h2") {
				return only, nil // no HTTP/1.1 fallback, as some servers
			}
			return nil, nil
		}}
	tool.StartTLS()
	t.Cleanup(tool.Close)

	env := startProxyDriver(t, nil)
	ns, _, files := basicTool(t, env, tool.URL, "h2-secret", withCA(t, authority))
	host := strings.TrimPrefix(env.proxyURL, "http://")
	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	for i := range 2 {
		if _, err := io.WriteString(conn, "GET /namespaces/"+ns+"/connectors/tool/x HTTP/1.1\r\nHost: "+host+
			"\r\nAuthorization: Bearer "+files["context.token"]+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != 200 || string(body) != "h2 only" {
			t.Fatalf("GET %d to a tool of HTTP/2 only: %d %q %v", i, res.StatusCode, body, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []string{"HTTP/2.0", "HTTP/2.0"}) {
		t.Errorf("the tool saw %q, want two HTTP/2 requests", seen)
	}
}

// loopbackCert is a new CA and a serving certificate of it for 127.0.0.1.
func loopbackCert(t *testing.T) (*testca.CA, tls.Certificate) {
	t.Helper()
	authority, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := authority.ServerCert([]net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	return authority, cert
}

// withCA completes a Connector (basicTool) with a CA Secret of authority.
func withCA(t *testing.T, authority *testca.CA) func(ns string, c *v1alpha1.Connector) {
	return func(ns string, c *v1alpha1.Connector) {
		createSecret(t, ns, "tool-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(authority.PEM)})
		c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: "tool-ca"}
	}
}

// laneTestSetup is a tool that records what reaches it, a proxy driver whose metrics are at
// metricsAddr, and a new namespace.
func laneTestSetup(t *testing.T) (tool *headerRecorder, rec *recorder, env *proxyEnv, metricsAddr, ns string) {
	tool = &headerRecorder{}
	rec = startRecorder(t, tool.handle)
	metricsAddr = freeLoopbackAddr(t)
	env = startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	return tool, rec, env, metricsAddr, newNamespace(t)
}

// laneSeries is the fast lane's counter of outcome.
func laneSeries(outcome string) string {
	return series("connectors_proxy_fast_lane_total", map[string]string{"outcome": outcome})
}

// laneWants are the fast lane's counters scrapeUntil waits for: served, served in place,
// handed over (increments).
func laneWants(served, inPlace, handed float64) map[string]float64 {
	return map[string]float64{laneSeries("served"): served, laneSeries("served_in_place"): inPlace, laneSeries("handed_over"): handed}
}

// laneCounts are the fast lane's served, served in place and handed over, after less before.
func laneCounts(before, after map[string]float64) [3]float64 {
	var c [3]float64
	for i, outcome := range []string{"served", "served_in_place", "handed_over"} {
		c[i] = after[laneSeries(outcome)] - before[laneSeries(outcome)]
	}
	return c
}

// exchange sends raw GET heads, one after the other, on one new connection to the proxy at
// host and returns the answers (their bodies read).
func exchange(t *testing.T, host string, heads ...string) []*http.Response {
	t.Helper()
	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	var answers []*http.Response
	for _, head := range heads {
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		answers = append(answers, res)
	}
	return answers
}

func statusCodes(answers []*http.Response) []int {
	var codes []int
	for _, res := range answers {
		codes = append(codes, res.StatusCode)
	}
	return codes
}

// TestFastLaneByAConnectorsOwnHost: requests to a Connector's own host (the host resolver's
// c-<name>.<ns>.svc.<domain>) are the fast lane's, the whole path under the Connector's address
// (also one that looks like the reverse proxy's), in place from the second on, a redirect
// rewritten to that host; another Connector's host on the same connection does not ride the
// remembered route (the caller may not use it: refused before the tool).
func TestFastLaneByAConnectorsOwnHost(t *testing.T) {
	tool := &headerRecorder{}
	rec := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/base/moved" {
			http.Redirect(w, r, "http://"+r.Host+"/base/new", http.StatusFound)
			return
		}
		tool.handle(w, r)
	})
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns, _, files := basicTool(t, env, rec.URL+"/base", "own-host-secret")
	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	_, port, _ := net.SplitHostPort(proxyAddr)
	own := "c-tool." + ns + ".svc.cluster.local:" + port
	head := func(host, path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\n"
	}
	before, reached := scrape(t, metricsAddr), tool.count()
	answers := exchange(t, proxyAddr, head(own, "/x?y=1"), head(own, "/namespaces/other/connectors/z/q"), head(own, "/moved"),
		head("c-other."+ns+".svc.cluster.local:"+port, "/x"))
	after := scrapeUntil(t, metricsAddr, before, laneWants(1, 2, 0))
	if codes := statusCodes(answers); !slices.Equal(codes, []int{200, 200, 302, 403}) {
		t.Fatalf("answers %v, want 200, 200, 302, 403", codes)
	}
	if loc := answers[2].Header.Get("Location"); loc != "http://"+own+"/new" {
		t.Errorf("the redirect's Location %q, want it on the Connector's own host", loc)
	}
	got := tool.since(reached)
	if len(got) != 2 || got[0].URL.RequestURI() != "/base/x?y=1" || got[1].URL.RequestURI() != "/base/namespaces/other/connectors/z/q" {
		t.Fatalf("the tool got %d requests: %v", len(got), got)
	}
	for i, r := range got {
		if r.Header.Get("Authorization") != "Basic "+basic("bot", "own-host-secret") || carries(r, files["context.token"]) {
			t.Errorf("request %d: the tool got Authorization %q, or the Pod token", i, r.Header.Get("Authorization"))
		}
	}
	// Served: the first (through net/http's parsers); in place: the next two; the other host's
	// refusal is answered, not served.
	if c := laneCounts(before, after); c != [3]float64{1, 2, 0} {
		t.Errorf("the fast lane served %v, in place %v, handed over %v; want 1, 2, 0", c[0], c[1], c[2])
	}
}

// TestFastLaneTakesPragma: Java's clients (Maven's) send Pragma: no-cache; such requests are
// the fast lane's, in place from the second on, and the tool gets them as through net/http's
// parsers: with the Cache-Control: no-cache net/http's reader adds when the head has none.
func TestFastLaneTakesPragma(t *testing.T) {
	tool, rec, env, metricsAddr, ns := laneTestSetup(t)
	createSecret(t, ns, "maven-auth", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "maven-secret"})
	newConnectorWithSecret(t, ns, "maven", gitClass(t), rec.URL, "basicAuth", "maven-auth")
	allowConnectors(t, ns, "builder", "maven")
	token := proxyToken(t, ns, "builder")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	head := func(path, headers string) string {
		return "GET /namespaces/" + ns + "/connectors/maven" + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + token +
			"\r\nUser-Agent: Apache-Maven/3.9.9 (Java 21.0.5; Linux)\r\n" + headers + "\r\n"
	}
	before, reached := scrape(t, metricsAddr), tool.count()
	codes := statusCodes(exchange(t, host, head("/a.pom", "Pragma: no-cache\r\n"), head("/a.jar", "Pragma: no-cache\r\n"),
		head("/a.jar.sha1", "Pragma: no-cache\r\nCache-Control: max-age=0\r\n")))
	after := scrapeUntil(t, metricsAddr, before, laneWants(1, 2, 0))
	got := tool.since(reached)
	if !slices.Equal(codes, []int{200, 200, 200}) || len(got) != 3 {
		t.Fatalf("three GETs with Pragma: %v, %d reached the tool", codes, len(got))
	}
	for i, want := range []string{"no-cache", "no-cache", "max-age=0"} {
		if cc := got[i].Header.Values("Cache-Control"); len(cc) != 1 || cc[0] != want || got[i].Header.Get("Pragma") != "no-cache" {
			t.Errorf("request %d: the tool got Cache-Control %q and Pragma %q, want %q and no-cache", i, cc, got[i].Header.Get("Pragma"), want)
		}
		if got[i].Header.Get("Authorization") != "Basic "+basic("bot", "maven-secret") || carries(got[i], token) {
			t.Errorf("request %d: the tool got Authorization %q, or the Pod token", i, got[i].Header.Get("Authorization"))
		}
	}
	if c := laneCounts(before, after); c != [3]float64{1, 2, 0} {
		t.Errorf("the fast lane served %v, in place %v, handed over %v; want 1, 2, 0", c[0], c[1], c[2])
	}
}

// TestGitInTheFastLane: a real git clone and push through the reverse proxy (.gitconfig) and
// the forward proxy (.env), on a real Git server: every request, the POSTs of git-upload-pack
// and git-receive-pack with their bodies included (and the chunked one of a push of 3 MiB),
// is served by the fast lane, and so is the
// 407 to curl's first try at the forward proxy without Proxy-Authorization; no connection
// goes to net/http's server.
func TestGitInTheFastLane(t *testing.T) {
	s := startGitServer(t, false)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns := newNamespace(t)
	gitConnector(t, ns, "repo", gitClass(t), s)
	allowConnectors(t, ns, "builder", "repo")
	pod := podWithVolume(t, env.kubelet, ns, "git", map[string]string{"connectors": "repo", "configuration.names": "gitconfig"}, nil)
	if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	vol := env.kubelet.TargetPath(pod, "connectors")
	before, from := scrape(t, metricsAddr), len(s.Requests())

	cloneAndPush(t, s.URL, []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")})
	cloneAndPush(t, s.URL, envFile(t, filepath.Join(vol, ".env")))
	// A pack larger than http.postBuffer (1 MiB), which git sends chunked.
	pushCommit(t, s.URL, []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")}, randomBytes(3<<20))

	reqs := proxiedRequests(s, from)
	var posts []string
	chunked := 0
	for _, r := range reqs {
		if r.Method == http.MethodPost {
			posts = append(posts, r.Path)
		}
		if r.Chunked && r.Path == "/repo.git/git-receive-pack" {
			chunked++
		}
	}
	if !slices.Contains(posts, "/repo.git/git-upload-pack") || !slices.Contains(posts, "/repo.git/git-receive-pack") {
		t.Fatalf("the Git server saw the POSTs %q, want git-upload-pack's and git-receive-pack's", posts)
	}
	if chunked != 1 {
		t.Errorf("%d chunked pushes reached the Git server, want the large one", chunked)
	}
	if c := laneCountsWhen(t, metricsAddr, before, float64(len(reqs)), 0); c[0]+c[1] != float64(len(reqs)) || c[2] != 0 {
		t.Errorf("the fast lane served %v requests and handed %v connections over to net/http's server; the Git server saw %d requests", c[0]+c[1], c[2], len(reqs))
	}
}

// laneCountsWhen waits (a while) for the fast lane to have served lane requests, through
// net/http's parsers or in place (counted once the answer is out), and handed handed
// connections over since before, and returns the counts it saw last (laneCounts).
func laneCountsWhen(t *testing.T, metricsAddr string, before map[string]float64, lane, handed float64) [3]float64 {
	t.Helper()
	var c [3]float64
	kubelet.WaitUntil(10*time.Second, func() bool {
		c = laneCounts(before, scrape(t, metricsAddr))
		return c[0]+c[1] == lane && c[2] == handed
	})
	return c
}

// TestFastLaneSendsABodyOnce: a POST along a remembered route whose pooled tool connection
// the tool closed while it was idle goes on a new connection (the closed one found so before
// anything is written), and reaches the tool once. A GET on such a connection (not checked
// first: it is sent, from within the read of its answer, and the tool's reset ends that read)
// is sent again on a new one, through net/http's parsers and in place.
func TestFastLaneSendsABodyOnce(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	var closed atomic.Int64
	tool := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.Method+" "+string(b))
		mu.Unlock()
		_, _ = w.Write(b)
	}))
	tool.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	tool.Start()
	t.Cleanup(tool.Close)
	env := startProxyDriver(t, nil)
	ns, _, files := basicTool(t, env, tool.URL, "once-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	closeToolConns := func() {
		before := closed.Load()
		tool.CloseClientConnections()
		kubelet.WaitUntil(10*time.Second, func() bool { return closed.Load() > before })
	}
	steps := []struct {
		method, body string
		closeFirst   bool
	}{{"POST", "first", false}, {"POST", "second", false}, {"POST", "third", true}, {"GET", "", true}, {"GET", "", true}}
	for i, step := range steps {
		if step.closeFirst {
			closeToolConns()
		}
		raw := step.method + " /namespaces/" + ns + "/connectors/tool/x HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + files["context.token"] + "\r\n"
		if step.body != "" {
			raw += "Content-Length: " + fmt.Sprint(len(step.body)) + "\r\n"
		}
		if _, err := io.WriteString(conn, raw+"\r\n"+step.body); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, &http.Request{Method: step.method})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(got) != step.body {
			t.Fatalf("%s %d: %d %q", step.method, i, res.StatusCode, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"POST first", "POST second", "POST third", "GET ", "GET "}; !slices.Equal(bodies, want) {
		t.Errorf("the tool read %q, want %q", bodies, want)
	}
}

// TestFastLaneAnswersPipelinedRequests: a client that sends its next request before it has the
// answer to the one before (HTTP/1.1 pipelining) gets both answers, in order, served in place:
// the next request came while the tool was answering a request that followed another closely
// (so that its answer is sent from within the read of the next head), before the proxy began
// to wait for it (where the wait does not see it: awaitread.Reader), and is read once the
// reader's guard wakes that wait, not at the idle timeout (two minutes). A request pipelined
// with the one before in one write is served from what was read with it.
func TestFastLaneAnswersPipelinedRequests(t *testing.T) {
	rec := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			time.Sleep(20 * time.Millisecond) // under laneWatchDelay: no watcher reads the client
		}
		_, _ = io.WriteString(w, "ok")
	})
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns, _, files := basicTool(t, env, rec.URL+"/base", "pipelined-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	get := func(path string) string {
		return "GET /namespaces/" + ns + "/connectors/tool/" + path + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\n"
	}
	conn := dialProxy(t, host)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // well under the idle timeout
	br := bufio.NewReader(conn)
	read := func(what string) {
		t.Helper()
		res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: %d %q", what, res.StatusCode, body)
		}
	}
	writeRaw(t, conn, get("first")) // resolves the route the others follow in place
	read("the first answer")
	before := scrape(t, metricsAddr)
	const rounds = 3
	for i := 0; i < rounds; i++ {
		// A request right before the slow one: a client that pauses between requests has its
		// answers sent at once, not from within the next read (sendWithNextRead).
		writeRaw(t, conn, get("quick"))
		read(fmt.Sprintf("round %d: the quick answer", i))
		writeRaw(t, conn, get("slow"))
		time.Sleep(10 * time.Millisecond) // the proxy reads it and waits for the tool
		writeRaw(t, conn, get("after-slow"))
		read(fmt.Sprintf("round %d: the slow answer", i))
		read(fmt.Sprintf("round %d: the pipelined request's answer", i))
	}
	writeRaw(t, conn, get("one")+get("two"))
	read("the first of two sent at once")
	read("the second of two sent at once")
	if c := laneCountsWhen(t, metricsAddr, before, 3*rounds+2, 0); c[1] != 3*rounds+2 {
		t.Fatalf("served in place %v of %d (through the parsers %v, handed over %v)", c[1], 3*rounds+2, c[0], c[2])
	}
	var paths []string
	for _, r := range rec.proxied()[1:] {
		paths = append(paths, r.RequestURI)
	}
	want := []string{}
	for i := 0; i < rounds; i++ {
		want = append(want, "/base/quick", "/base/slow", "/base/after-slow")
	}
	if want = append(want, "/base/one", "/base/two"); !slices.Equal(paths, want) {
		t.Fatalf("the tool got %q, want %q", paths, want)
	}
}

// TestFastLaneServesANewConnectionInPlace: a client that opens a connection per request (curl
// in a pipeline's step) has its requests served in place along the route another connection
// resolved for the same token, Connector (or destination) and method moments before: reverse,
// forward and by a Connector's own host. Another token, or another Connector, on a new
// connection is not: it is checked as ever (a bad token refused).
func TestFastLaneServesANewConnectionInPlace(t *testing.T) {
	tool, rec, env, metricsAddr, _ := laneTestSetup(t)
	ns, _, files := basicTool(t, env, rec.URL+"/base", "one-shot-secret")
	token := files["context.token"]
	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	_, port, _ := net.SplitHostPort(proxyAddr)
	toolHost := strings.TrimPrefix(rec.URL, "http://")
	reverse := func(auth string) string {
		return "GET /namespaces/" + ns + "/connectors/tool/x HTTP/1.1\r\nHost: " + proxyAddr + "\r\nAuthorization: " + auth + "\r\nConnection: close\r\n\r\n"
	}
	forward := "GET " + rec.URL + "/base/x HTTP/1.1\r\nHost: " + toolHost + "\r\nProxy-Authorization: Basic " + basic(ns+"/tool", token) + "\r\nConnection: close\r\n\r\n"
	own := "GET /x HTTP/1.1\r\nHost: c-tool." + ns + ".svc.cluster.local:" + port + "\r\nAuthorization: Bearer " + token + "\r\nConnection: close\r\n\r\n"
	for name, head := range map[string]string{"reverse": reverse("Bearer " + token), "forward": forward, "by the Connector's own host": own} {
		t.Run(name, func(t *testing.T) {
			reached := tool.count()
			// The second connection's request is in place unless over a second passed
			// between the two (laneMemoTTL: the first's route ended); then try again.
			var c [3]float64
			for try := 0; try < 5 && c[1] != 1; try++ {
				before := scrape(t, metricsAddr)
				for i := 0; i < 2; i++ {
					if codes := statusCodes(exchange(t, proxyAddr, head)); !slices.Equal(codes, []int{200}) {
						t.Fatalf("answers %v, want 200", codes)
					}
				}
				c = laneCountsWhen(t, metricsAddr, before, 2, 0)
			}
			if c[1] != 1 {
				t.Fatalf("the fast lane served %v, in place %v: the second connection's request not in place", c[0], c[1])
			}
			for i, r := range tool.since(reached) {
				if r.URL.RequestURI() != "/base/x" || r.Header.Get("Authorization") != "Basic "+basic("bot", "one-shot-secret") || carries(r, token) {
					t.Errorf("request %d: the tool got %s with Authorization %q, or the Pod token", i, r.URL.RequestURI(), r.Header.Get("Authorization"))
				}
			}
		})
	}
	// Right after a route was resolved for the token: a bad token, and the same token to a
	// Connector that does not exist (which the Pod may not use), each on a new connection.
	if codes := statusCodes(exchange(t, proxyAddr, reverse("Bearer "+token))); !slices.Equal(codes, []int{200}) {
		t.Fatalf("answers %v, want 200", codes)
	}
	reached := tool.count()
	bad := exchange(t, proxyAddr, reverse("Bearer not-a-token"))
	other := exchange(t, proxyAddr, strings.Replace(reverse("Bearer "+token), "/connectors/tool/", "/connectors/none/", 1))
	if bad[0].StatusCode != http.StatusUnauthorized || other[0].StatusCode != http.StatusForbidden {
		t.Fatalf("a bad token: %d, want 401; another Connector: %d, want 403", bad[0].StatusCode, other[0].StatusCode)
	}
	if got := tool.since(reached); len(got) != 0 {
		t.Fatalf("the tool got %d refused requests", len(got))
	}
}

// TestFastLaneJudgesASlowHeadWhenWhole: a head whose first byte came while its connection's
// remembered route was live, and whose rest came after that route's time and the caller's
// access were over, is judged when it is whole: refused, not served along the old route.
func TestFastLaneJudgesASlowHeadWhenWhole(t *testing.T) {
	tool, _, _ := laneTool(t)
	const decisionTTL = time.Second
	env := startProxyDriver(t, func(o *driver.Options) {
		o.AuthzAllowTTL, o.TokenCacheTTL, o.ProxyPermissionTTL = decisionTTL, decisionTTL, decisionTTL
	})
	ns, _, files := basicTool(t, env, tool.URL, "lane-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	head := "GET /namespaces/" + ns + "/connectors/tool/small HTTP/1.1\r\nHost: " + host +
		"\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\n"
	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	answer := func() (int, string) {
		t.Helper()
		res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(body)
	}
	writeRaw(t, conn, head)
	if code, body := answer(); code != http.StatusOK || len(body) != 1024 {
		t.Fatalf("the first GET: %d, %d bytes", code, len(body))
	}
	writeRaw(t, conn, head[:1])
	if err := cp.Kube.RbacV1().RoleBindings(ns).Delete(context.Background(), "use-connectors-builder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDecision(t, ns, "builder", "tool", false)
	// Past the remembered route's second and the proxy's cached decisions: not a bound on
	// anything measured, the time the rest of the head is held back.
	time.Sleep(2*decisionTTL + 500*time.Millisecond)
	writeRaw(t, conn, head[1:])
	if code, body := answer(); code != http.StatusForbidden || strings.Contains(body, "sss") {
		t.Fatalf("a head completed after the caller's access was removed: %d %q, want 403", code, body)
	}
}

// TestFastLaneFramesABareLFHeadAsNetHTTPDoes: a POST whose lines end in bare LFs, sent with
// a GET and five more bytes behind it in one write. net/http's parser ends the POST's head at
// its blank line, where the lane's search for CRLF CRLF finds the GET's end; the lane, taking
// the body from there, would send the last five bytes as the POST's body and drop the GET.
// It leaves such a head to net/http's server, which frames the stream one way: the POST's
// body is the five bytes after its blank line, and the GET is answered.
func TestFastLaneFramesABareLFHeadAsNetHTTPDoes(t *testing.T) {
	tool, _, _ := laneTool(t)
	env := startProxyDriver(t, nil)
	ns, _, files := basicTool(t, env, tool.URL, "lane-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	base := "/namespaces/" + ns + "/connectors/tool"
	auth := "Authorization: Bearer " + files["context.token"]
	conn := dialProxy(t, host)
	writeRaw(t, conn, "POST "+base+"/echo HTTP/1.1\nHost: "+host+"\n"+auth+"\nContent-Length: 5\n\nhello"+
		"GET "+base+"/small HTTP/1.1\r\nHost: "+host+"\r\n"+auth+"\r\n\r\n"+"WORLD")
	br := bufio.NewReader(conn)
	for _, want := range []struct {
		method string
		body   string
	}{{"POST", "hello"}, {"GET", strings.Repeat("s", 1024)}} {
		res, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatalf("the %s's answer: %v", want.method, err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || string(body) != want.body {
			t.Fatalf("the %s: %d %q, want 200 %q", want.method, res.StatusCode, body, want.body)
		}
	}
}
