package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kube-connectors/connectors-csi/driver"
)

// received is what an upstream saw of one request, as compared between a direct request and
// the same request through the proxy.
type received struct {
	Method, EscapedPath, RawQuery, Body string
	Headers                             []string // "Name: value", sorted
	// ContentLength and TransferEncoding are the body's framing: -1 and "chunked" when it
	// came chunked.
	ContentLength    int64
	TransferEncoding string
}

// diffUpstream records every request's method, escaped path, query, headers and body digest.
type diffUpstream struct {
	mu   sync.Mutex
	seen []received
}

func (u *diffUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var headers []string
	for name, values := range r.Header {
		for _, v := range values {
			headers = append(headers, name+": "+v)
		}
	}
	sort.Strings(headers)
	sum := sha256.Sum256(body)
	u.mu.Lock()
	u.seen = append(u.seen, received{Method: r.Method, EscapedPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Body: fmt.Sprintf("%d:%x", len(body), sum[:8]), Headers: headers, ContentLength: r.ContentLength,
		TransferEncoding: strings.Join(r.TransferEncoding, ",")})
	u.mu.Unlock()
	w.Header().Set("X-Upstream", "1")
	_, _ = io.WriteString(w, "ok")
}

func (u *diffUpstream) last() received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[len(u.seen)-1]
}

// TestProxyDifferential sends 200 generated requests (methods, escaped paths, repeated and odd
// query parameters, repeated and custom headers, bodies up to 128 KiB: a third in the fast
// lane's buffer, a third read out whole, a third streamed; a quarter of them chunked, which the
// fast lane streams too) directly to an upstream
// with the Connector's credential, through the reverse proxy with the Pod token, and through the
// forward proxy configured only from http.proxy, and compares what the upstream received: the
// proxy may only swap the credential and add its hop marker. It is the safety net for work on
// the proxy's request path.
func TestProxyDifferential(t *testing.T) {
	upstream := &diffUpstream{}
	srv := httptest.NewServer(upstream)
	t.Cleanup(srv.Close)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns, _, files := basicTool(t, env, srv.URL, "diff-secret-7")
	token := files["context.token"]
	proxyBase := fmt.Sprintf("%s/namespaces/%s/connectors/tool", env.proxyURL, ns)
	credential := "Basic " + basic("bot", "diff-secret-7")

	forward, err := url.Parse(files["http.proxy"])
	if err != nil {
		t.Fatal(err)
	}
	noRedirects := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var client, viaForward *http.Client
	newClients := func() {
		client = &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}, CheckRedirect: noRedirects}
		viaForward = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(forward), DisableCompression: true}, CheckRedirect: noRedirects}
	}
	newClients()
	before := scrape(t, metricsAddr)
	var lane, notLane float64 // requests through the proxies the fast lane takes, and not
	rnd := rand.New(rand.NewPCG(42, 7))
	for i := range 200 {
		method, path, query, headers, body, chunked := generatedRequest(rnd, i)
		send := func(client *http.Client, base, auth string) {
			t.Helper()
			req, err := http.NewRequest(method, base+path+query, bytes.NewReader(body))
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if chunked {
				req.TransferEncoding, req.ContentLength = []string{"chunked"}, -1
			}
			for _, h := range headers {
				req.Header.Add(h[0], h[1])
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("request %d (%s %s): %v", i, method, path+query, err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || res.Header.Get("X-Upstream") != "1" {
				t.Fatalf("request %d (%s %s): %d, not the upstream's answer", i, method, path+query, res.StatusCode)
			}
		}
		send(client, srv.URL, credential)
		direct := upstream.last()
		send(client, proxyBase, "Bearer "+token) // the reverse proxy
		reverse := upstream.last()
		send(viaForward, srv.URL, "") // the forward proxy: Proxy-Authorization from http.proxy
		forwarded := upstream.last()
		// A DELETE with a body ends its tool connection (a tool may not read such a body).
		ignorableBody := method == "DELETE" && len(body) > 0
		if method == "OPTIONS" || ignorableBody {
			// Handed over with its connection to net/http's server: the next request on a
			// new client's connection, in the fast lane again (an old client's connection
			// may go back to its pool after CloseIdleConnections returns).
			notLane += 2
			client.CloseIdleConnections()
			viaForward.CloseIdleConnections()
			newClients()
		} else {
			lane += 2
		}
		for mode, got := range map[string]received{"reverse": reverse, "forward": forwarded} {
			// The proxy adds its hop marker; nothing else may differ, but that a body a tool
			// may ignore ends its connection.
			got.Headers = without(got.Headers, "Connectors-Proxy-Hop: 1")
			if ignorableBody {
				got.Headers = without(got.Headers, "Connection: close")
			}
			if d, p := fmt.Sprintf("%+v", direct), fmt.Sprintf("%+v", got); d != p {
				t.Errorf("request %d differs through the %s proxy\n direct:  %s\n proxied: %s", i, mode, d, p)
			}
		}
	}
	if c := laneCountsWhen(t, metricsAddr, before, lane, notLane); c[0]+c[1] != lane || c[2] != notLane {
		t.Errorf("the fast lane served %v requests and handed over %v connections, want %v and %v", c[0]+c[1], c[2], lane, notLane)
	}
}

// laneMaxBody is --proxy-fast-lane-max-body-bytes's default.
const laneMaxBody = 64 << 10

// generatedRequest is request i of the differential test: varied but reproducible. chunked:
// its body is sent so (a quarter of them).
func generatedRequest(rnd *rand.Rand, i int) (method, path, query string, headers [][2]string, body []byte, chunked bool) {
	methods := []string{"GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
	segments := []string{"repo.git", "info", "refs", "a%20b", "x%2Fy", "v2", "~user", "a+b", "c,d", "e=f", "@scope", "UPPER", "%C3%A9t%C3%A9", "_x-y"}
	queries := []string{"service=git-upload-pack", "q=a+b", "q=a%20b", "k=1&k=2", "empty=", "flag", "x=%2F%3F%26", "page=2&per_page=100", "s=%E2%9C%93"}
	method = methods[rnd.IntN(len(methods))]
	n := 1 + rnd.IntN(4)
	for range n {
		path += "/" + segments[rnd.IntN(len(segments))]
	}
	if rnd.IntN(3) == 0 {
		path += "/"
	}
	if rnd.IntN(2) == 0 {
		query = "?" + queries[rnd.IntN(len(queries))]
		if rnd.IntN(3) == 0 {
			query += "&" + queries[rnd.IntN(len(queries))]
		}
	}
	headers = [][2]string{{"User-Agent", fmt.Sprintf("diff/%d", i)}, {"X-Request-Index", fmt.Sprint(i)}}
	extra := [][2]string{{"Accept", "application/json"}, {"Accept-Encoding", "gzip"}, {"X-Multi", "one"}, {"X-Multi", "two"},
		{"Content-Type", "application/x-git-upload-pack-request"}, {"Cookie", "a=b; c=d"}, {"X-Empty", ""},
		{"If-None-Match", `"abc"`}, {"Range", "bytes=0-99"}, {"X-Unicode", "caf\u00e9"}, {"Git-Protocol", "version=2"}}
	for _, h := range extra {
		if rnd.IntN(3) == 0 {
			headers = append(headers, h)
		}
	}
	if method != "GET" && method != "HEAD" && method != "OPTIONS" && rnd.IntN(4) != 0 {
		var size int
		switch rnd.IntN(3) {
		case 0: // in the fast lane's 4 KiB buffer with the head (the forward proxy's carries the Pod token)
			size = rnd.IntN(1 << 10)
		case 1: // larger than the buffer: the fast lane reads it out whole
			size = 8<<10 + rnd.IntN(laneMaxBody-8<<10)
		default: // over --proxy-fast-lane-max-body-bytes: the fast lane streams it
			size = laneMaxBody + 1 + rnd.IntN(64<<10)
		}
		body = make([]byte, size)
		for j := range body {
			body[j] = byte(rnd.IntN(256))
		}
		chunked = rnd.IntN(4) == 0
	}
	return method, path, query, headers, body, chunked
}

func without(list []string, drop string) []string {
	var out []string
	for _, s := range list {
		if !strings.EqualFold(s, drop) {
			out = append(out, s)
		}
	}
	return out
}
