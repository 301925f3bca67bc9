package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// bodyRecorder is a tool that keeps the bodies it is sent and answers each with its length.
type bodyRecorder struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (b *bodyRecorder) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodPost {
		b.mu.Lock()
		b.bodies = append(b.bodies, body)
		b.mu.Unlock()
	}
	_, _ = io.WriteString(w, strconv.Itoa(len(body)))
}

func (b *bodyRecorder) got() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.bodies)
}

// TestFastLaneReadsSmallUploadsWhole: POSTs whose bodies do not fit in the fast lane's 4 KiB
// buffer, up to --proxy-fast-lane-max-body-bytes, are served by the fast lane, one of them
// sent in two parts, and the connection stays in the fast lane; a larger one goes to net/http's
// server, as does one read whole that the fast lane then does not take (no token: net/http's
// path answers it) and one whose body stopped coming within the header timeout, each with
// nothing of it lost (the tool gets every body whole) and the connection's next request
// answered after it.
func TestFastLaneReadsSmallUploadsWhole(t *testing.T) {
	tool := &bodyRecorder{}
	srv := httptest.NewServer(http.HandlerFunc(tool.handle))
	t.Cleanup(srv.Close)
	metricsAddr := freeLoopbackAddr(t)
	const maxBody = 32 << 10
	env := startProxyDriver(t, func(o *driver.Options) {
		o.MetricsListen, o.ProxyLaneMaxBodyBytes = metricsAddr, maxBody
	})
	ns, _, files := basicTool(t, env, srv.URL, "upload-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	post := func(body []byte, auth bool) string {
		head := "POST /namespaces/" + ns + "/connectors/tool/upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
		if auth {
			head += "Authorization: Bearer " + files["context.token"] + "\r\n"
		}
		return head + "\r\n" + string(body)
	}
	get := "GET /namespaces/" + ns + "/connectors/tool/after HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\n"
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}

	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	send := func(raw string) {
		t.Helper()
		writeRaw(t, conn, raw)
	}
	answer := func(method, want string) {
		t.Helper()
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if got := strconv.Itoa(res.StatusCode) + " " + string(body); !strings.HasPrefix(got, want) {
			t.Fatalf("answered %q, want %q", got, want)
		}
	}

	// In the fast lane: 1 KiB, 10 KiB, just over the buffer (the rest of the body is read
	// through the buffer the head was in), the maximum, and 20 KiB sent in two parts.
	sent := [][]byte{random(1 << 10), random(10 << 10), random(4<<10 + 300), random(maxBody), random(20 << 10)}
	before := scrape(t, metricsAddr)
	for _, body := range sent[:4] {
		send(post(body, true))
		answer("POST", "200 "+strconv.Itoa(len(body)))
	}
	split := post(sent[4], true)
	send(split[:len(split)-15<<10])
	send(split[len(split)-15<<10:])
	answer("POST", "200 20480")
	send(get)
	answer("GET", "200 0")
	// Through net/http's parsers: the first POST and the GET (another method's route); in
	// place, along the POST's remembered route: the next four, their bodies read out whole.
	if c := laneCountsWhen(t, metricsAddr, before, 6, 0); c != [3]float64{2, 4, 0} {
		t.Errorf("the fast lane served %v, in place %v, handed over %v; want 2, 4, 0", c[0], c[1], c[2])
	}

	// Over the maximum: to net/http's server, which serves the connection from then on.
	over := random(maxBody + 1)
	sent = append(sent, over)
	send(post(over, true) + get)
	answer("POST", "200 "+strconv.Itoa(len(over)))
	answer("GET", "200 0")
	if c := laneCountsWhen(t, metricsAddr, before, 6, 1); c[2] != 1 {
		t.Errorf("a body over the maximum: %v connections handed over, want 1", c[2])
	}

	// Read whole, then not taken: net/http's server gets the request again, whole.
	other := dialProxy(t, host)
	br = bufio.NewReader(other)
	conn = other
	send(post(random(8<<10), false) + get)
	answer("POST", "401")
	answer("GET", "200 0")
	if c := laneCountsWhen(t, metricsAddr, before, 6, 2); c[2] != 2 {
		t.Errorf("a request read whole and not taken: %v connections handed over, want 2", c[2])
	}

	checkLaneBodiesReleased(t, metricsAddr)
	if got := tool.got(); len(got) != len(sent) {
		t.Fatalf("the tool got %d bodies, want %d", len(got), len(sent))
	} else {
		for i := range sent {
			if !bytes.Equal(got[i], sent[i]) {
				t.Errorf("body %d: the tool got %d bytes, not the %d sent", i, len(got[i]), len(sent[i]))
			}
		}
	}
}

// TestFastLaneHandsOverAStalledUpload: a body larger than the fast lane's buffer that stops
// coming for longer than --proxy-read-header-timeout goes, with what came of it, to net/http's
// server, which reads the rest when it comes: the tool gets it whole. Both on a new connection
// (net/http's parsers) and after a POST whose route the connection remembers (in place).
func TestFastLaneHandsOverAStalledUpload(t *testing.T) {
	for _, remembered := range []bool{false, true} {
		name := "new connection"
		if remembered {
			name = "remembered route"
		}
		t.Run(name, func(t *testing.T) { checkStalledUpload(t, remembered) })
	}
}

func checkStalledUpload(t *testing.T, remembered bool) {
	tool := &bodyRecorder{}
	srv := httptest.NewServer(http.HandlerFunc(tool.handle))
	t.Cleanup(srv.Close)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) {
		o.MetricsListen, o.ProxyReadHeaderTimeout = metricsAddr, 300*time.Millisecond
	})
	ns, _, files := basicTool(t, env, srv.URL, "stalled-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<10)
	raw := "POST /namespaces/" + ns + "/connectors/tool/upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\n" + string(body)

	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	var sent int
	if remembered {
		small := "POST /namespaces/" + ns + "/connectors/tool/upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 5" +
			"\r\nAuthorization: Bearer " + files["context.token"] + "\r\n\r\nhello"
		writeRaw(t, conn, small)
		if res, err := http.ReadResponse(br, &http.Request{Method: "POST"}); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("the first POST: %v %v", res, err)
		} else {
			_, _ = io.Copy(io.Discard, res.Body)
		}
		sent = 1
	}
	before := scrape(t, metricsAddr)
	writeRaw(t, conn, raw[:len(raw)-5000])
	// The rest only once the fast lane gave up waiting and handed the connection over.
	laneCountsWhen(t, metricsAddr, before, 0, 1)
	writeRaw(t, conn, raw[len(raw)-5000:])
	res, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	answered, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(answered) != strconv.Itoa(len(body)) {
		t.Fatalf("answered %d %q", res.StatusCode, answered)
	}
	if got := tool.got(); len(got) != sent+1 || !bytes.Equal(got[sent], body) {
		t.Fatalf("the tool got %d bodies, want %d, the last the %d bytes sent", len(got), sent+1, len(body))
	}
	checkLaneBodiesReleased(t, metricsAddr)
}

// checkLaneBodiesReleased checks that the fast lane holds no body buffer once its requests
// are answered (connectors_proxy_fast_lane_body_bytes back at 0; tests run one at a time).
func checkLaneBodiesReleased(t *testing.T, metricsAddr string) {
	t.Helper()
	held := "connectors_proxy_fast_lane_body_bytes"
	var m map[string]float64
	kubelet.WaitUntil(10*time.Second, func() bool {
		m = scrape(t, metricsAddr)
		return m[held] == 0
	})
	if v, ok := m[held]; !ok || v != 0 {
		t.Errorf("%s is %v (served: %v), want 0 once every request is answered", held, v, ok)
	}
}
