package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
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

// uploadTool starts tool, a proxy driver whose fast lane reads bodies whole up to maxBody, and
// a Connector "tool" to it in a new namespace: the namespace, the proxy's host:port, a Pod's
// token for the Connector, and the driver's metrics address.
func uploadTool(t *testing.T, tool http.Handler, maxBody int) (ns, host, token, metricsAddr string) {
	srv := httptest.NewServer(tool)
	t.Cleanup(srv.Close)
	metricsAddr = freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) {
		o.MetricsListen, o.ProxyLaneMaxBodyBytes = metricsAddr, maxBody
	})
	ns, _, files := basicTool(t, env, srv.URL, "upload-secret")
	return ns, strings.TrimPrefix(env.proxyURL, "http://"), files["context.token"], metricsAddr
}

// randomBytes is n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func (b *bodyRecorder) got() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.bodies)
}

// TestFastLaneReadsSmallUploadsWhole: POSTs whose bodies do not fit in the fast lane's 4 KiB
// buffer, up to --proxy-fast-lane-max-body-bytes, are served by the fast lane, one of them
// sent in two parts, and the connection stays in the fast lane, as it does after a larger one
// (streamed: TestFastLaneStreamsUploads); one read whole that the fast lane then does not take
// (no token: net/http's path answers it) goes to net/http's server, as does one whose body
// stopped coming within the header timeout, each with nothing of it lost (the tool gets every
// body whole) and the connection's next request answered after it.
func TestFastLaneReadsSmallUploadsWhole(t *testing.T) {
	tool := &bodyRecorder{}
	const maxBody = 32 << 10
	ns, host, token, metricsAddr := uploadTool(t, http.HandlerFunc(tool.handle), maxBody)
	post := func(body []byte, auth bool) string {
		head := "POST /namespaces/" + ns + "/connectors/tool/upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
		if auth {
			head += "Authorization: Bearer " + token + "\r\n"
		}
		return head + "\r\n" + string(body)
	}
	get := "GET /namespaces/" + ns + "/connectors/tool/after HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + token + "\r\n\r\n"

	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	send := func(raw string) {
		t.Helper()
		writeRaw(t, conn, raw)
	}
	answer := func(method, want string) {
		t.Helper()
		if _, got := readAnswer(t, br, method); !strings.HasPrefix(got, want) {
			t.Fatalf("answered %q, want %q", got, want)
		}
	}

	// In the fast lane: 1 KiB, 10 KiB, just over the buffer (the rest of the body is read
	// through the buffer the head was in), the maximum, and 20 KiB sent in two parts.
	sent := [][]byte{randomBytes(1 << 10), randomBytes(10 << 10), randomBytes(4<<10 + 300), randomBytes(maxBody), randomBytes(20 << 10)}
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

	// Over the maximum: streamed, and the connection stays in the fast lane.
	over := randomBytes(maxBody + 1)
	sent = append(sent, over)
	send(post(over, true) + get)
	answer("POST", "200 "+strconv.Itoa(len(over)))
	answer("GET", "200 0")
	if c := laneCountsWhen(t, metricsAddr, before, 8, 0); c[0]+c[1] != 8 || c[2] != 0 {
		t.Errorf("a body over the maximum: the fast lane served %v, in place %v, handed over %v; want 8 in all, 0 handed over", c[0], c[1], c[2])
	}

	// Read whole, then not taken: net/http's server gets the request again, whole.
	other := dialProxy(t, host)
	br = bufio.NewReader(other)
	conn = other
	send(post(randomBytes(8<<10), false) + get)
	answer("POST", "401")
	answer("GET", "200 0")
	if c := laneCountsWhen(t, metricsAddr, before, 8, 1); c[2] != 1 {
		t.Errorf("a request read whole and not taken: %v connections handed over, want 1", c[2])
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

// TestFastLaneStreamsUploads: bodies over --proxy-fast-lane-max-body-bytes, and chunked ones,
// are read from the client as the tool's connection is written, in the fast lane, and the
// connection stays there: the tool gets each body whole and nothing is handed over. A tool that answers before
// the body's end gets its answer to the client, and the connection then closes; a client
// that leaves mid-body breaks the tool's connection (the tool's read of the body fails at
// once); a refused upload is answered, and its connection closed, without its body being read.
func TestFastLaneStreamsUploads(t *testing.T) {
	tool := &bodyRecorder{}
	broken := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/upload", tool.handle)
	mux.HandleFunc("/early", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large for this tool", http.StatusRequestEntityTooLarge)
	})
	mux.HandleFunc("/left", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		broken <- err
	})
	const maxBody = 32 << 10
	ns, host, token, metricsAddr := uploadTool(t, mux, maxBody)
	head := func(method, path string, n int, token string) string {
		return method + " /namespaces/" + ns + "/connectors/tool/" + path + " HTTP/1.1\r\nHost: " + host +
			"\r\nContent-Length: " + strconv.Itoa(n) + "\r\nAuthorization: Bearer " + token + "\r\n\r\n"
	}
	t.Run("whole, the connection kept", func(t *testing.T) {
		before := scrape(t, metricsAddr)
		conn := dialProxy(t, host)
		br := bufio.NewReader(conn)
		sent := [][]byte{randomBytes(1 << 20), randomBytes(300 << 10), randomBytes(maxBody + 1)}
		for i, body := range sent {
			method := []string{"POST", "PUT", "POST"}[i]
			writeRaw(t, conn, head(method, "upload", len(body), token))
			// In pieces, so that the body is read from the connection as it comes.
			for part := range slices.Chunk(body, 100<<10) {
				writeRaw(t, conn, string(part))
				time.Sleep(5 * time.Millisecond)
			}
			if _, got := readAnswer(t, br, method); got != "200 "+strconv.Itoa(len(body)) {
				t.Fatalf("upload %d answered %q", i, got)
			}
		}
		// Chunked, in chunks of 100 KiB, 7 bytes and 200 KiB, with a trailer, and the GET
		// behind it in the same write as its end.
		chunked := randomBytes(300<<10 + 7)
		sent = append(sent, chunked)
		writeRaw(t, conn, "POST /namespaces/"+ns+"/connectors/tool/upload HTTP/1.1\r\nHost: "+host+
			"\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer "+token+"\r\n\r\n")
		for _, part := range [][]byte{chunked[:100<<10], chunked[100<<10 : 100<<10+7], chunked[100<<10+7:]} {
			writeRaw(t, conn, strconv.FormatInt(int64(len(part)), 16)+"\r\n"+string(part)+"\r\n")
			time.Sleep(5 * time.Millisecond)
		}
		writeRaw(t, conn, "0\r\nX-Checksum: none\r\n\r\n"+
			"GET /namespaces/"+ns+"/connectors/tool/upload HTTP/1.1\r\nHost: "+host+"\r\nAuthorization: Bearer "+token+"\r\n\r\n")
		if _, got := readAnswer(t, br, "POST"); got != "200 "+strconv.Itoa(len(chunked)) {
			t.Fatalf("the chunked upload answered %q", got)
		}
		if _, got := readAnswer(t, br, "GET"); got != "200 0" {
			t.Fatalf("the GET after the uploads answered %q", got)
		}
		if c := laneCountsWhen(t, metricsAddr, before, 5, 0); c[0]+c[1] != 5 || c[2] != 0 {
			t.Errorf("the fast lane served %v, in place %v, handed over %v; want 5 in all, none handed over", c[0], c[1], c[2])
		}
		got := tool.got()
		if len(got) != 3 { // the PUT is answered, not kept
			t.Fatalf("the tool kept %d POST bodies, want 3", len(got))
		}
		for i, want := range [][]byte{sent[0], sent[2], sent[3]} {
			if !bytes.Equal(got[i], want) {
				t.Errorf("POST %d: the tool got %d bytes, not the %d sent", i, len(got[i]), len(want))
			}
		}
	})

	// The client sends its body on while it reads the answer; its writes fail once the
	// proxy closes the connection.
	sendOn := func(conn net.Conn, raw string) {
		go func() { _, _ = io.WriteString(conn, raw) }()
	}

	t.Run("the tool answers first", func(t *testing.T) {
		before := scrape(t, metricsAddr)
		conn := dialProxy(t, host)
		br := bufio.NewReader(conn)
		body := randomBytes(8 << 20)
		sendOn(conn, head("POST", "early", len(body), token)+string(body))
		res, got := readAnswer(t, br, "POST")
		if got != "413 too large for this tool\n" {
			t.Fatalf("answered %q, want the tool's 413", got)
		}
		closedAfter(t, conn, br, res)
		if c := laneCountsWhen(t, metricsAddr, before, 1, 0); c[2] != 0 {
			t.Errorf("handed over %v, want 0", c[2])
		}
	})

	t.Run("the client leaves mid-body", func(t *testing.T) {
		conn := dialProxy(t, host)
		body := randomBytes(1 << 20)
		writeRaw(t, conn, head("POST", "left", len(body), token)+string(body[:len(body)/2]))
		time.Sleep(100 * time.Millisecond) // the tool is reading the body
		conn.Close()
		select {
		case err := <-broken:
			if err == nil {
				t.Error("the tool read the body to an end, want it broken off")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the tool still waits for the rest of the body after the client left")
		}
	})

	t.Run("refused unread", func(t *testing.T) {
		conn := dialProxy(t, host)
		br := bufio.NewReader(conn)
		kept := len(tool.got())
		body := randomBytes(4 << 20)
		sendOn(conn, head("POST", "upload", len(body), "not-a-token")+string(body))
		res, got := readAnswer(t, br, "POST")
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("answered %q, want 401", got)
		}
		closedAfter(t, conn, br, res)
		if n := len(tool.got()); n != kept {
			t.Errorf("the tool got %d bodies more", n-kept)
		}
	})
	checkLaneBodiesReleased(t, metricsAddr)
}

// TestFastLaneAnswersExpectContinue: a request that expects a 100 (Continue) before it sends
// its body (curl's over 1 MiB, Maven's PUTs) is an upload of the fast lane, small or large,
// of known length or chunked: the fast lane answers 100 once the request is checked and
// taken, the tool gets the body whole and no Expect, and the connection stays in the fast
// lane. A refused one gets its final answer without a 100, and its connection closes. Real
// curl's upload of 2 MiB goes the same way.
func TestFastLaneAnswersExpectContinue(t *testing.T) {
	mux := http.NewServeMux()
	var expects []string
	var mu sync.Mutex
	mux.HandleFunc("/expect", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		expects = append(expects, r.Header.Get("Expect"))
		mu.Unlock()
		_, _ = io.WriteString(w, strconv.Itoa(len(body)))
	})
	ns, host, token, metricsAddr := uploadTool(t, mux, 32<<10)
	target := "/namespaces/" + ns + "/connectors/tool/expect"
	head := func(framing, token string) string {
		return "POST " + target + " HTTP/1.1\r\nHost: " + host + "\r\nExpect: 100-continue\r\n" + framing +
			"Authorization: Bearer " + token + "\r\n\r\n"
	}

	t.Run("answered 100, the body after it", func(t *testing.T) {
		before := scrape(t, metricsAddr)
		conn := dialProxy(t, host)
		br := bufio.NewReader(conn)
		small, large := randomBytes(100), randomBytes(1<<20)
		chunk := func(b []byte) string {
			return strconv.FormatInt(int64(len(b)), 16) + "\r\n" + string(b) + "\r\n0\r\n\r\n"
		}
		for i, req := range []struct{ framing, body string }{
			{"Content-Length: 100\r\n", string(small)},
			{"Content-Length: " + strconv.Itoa(len(large)) + "\r\n", string(large)},
			{"Transfer-Encoding: chunked\r\n", chunk(small)},
		} {
			// The head alone: the body only once the 100 came.
			writeRaw(t, conn, head(req.framing, token))
			if res, got := readAnswer(t, br, "POST"); res.StatusCode != http.StatusContinue {
				t.Fatalf("request %d: first answer %q, want 100 Continue", i, got)
			}
			writeRaw(t, conn, req.body)
			want := "200 " + strconv.Itoa(len([][]byte{small, large, small}[i]))
			if _, got := readAnswer(t, br, "POST"); got != want {
				t.Fatalf("request %d: answered %q, want %q", i, got, want)
			}
		}
		if c := laneCountsWhen(t, metricsAddr, before, 3, 0); c[0]+c[1] != 3 || c[2] != 0 {
			t.Errorf("the fast lane served %v, in place %v, handed over %v; want 3 in all, none handed over", c[0], c[1], c[2])
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(expects, []string{"", "", ""}) {
			t.Errorf("the tool got Expect %q, want none", expects)
		}
	})

	t.Run("refused without a 100", func(t *testing.T) {
		conn := dialProxy(t, host)
		br := bufio.NewReader(conn)
		writeRaw(t, conn, head("Content-Length: 1048576\r\n", "not-a-token"))
		res, got := readAnswer(t, br, "POST")
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("answered %q, want 401 (and no 100 before it)", got)
		}
		closedAfter(t, conn, br, res)
	})

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Fatal("curl not found (apt-get install curl)")
		}
		file := filepath.Join(t.TempDir(), "artifact.bin")
		if err := os.WriteFile(file, randomBytes(2<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		before := scrape(t, metricsAddr)
		cmd := exec.Command("curl", "-sS", "-v", "--fail", "--noproxy", "*", "-H", "Authorization: Bearer "+token,
			"--data-binary", "@"+file, "http://"+host+target)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stdout.String() != strconv.Itoa(2<<20) {
			t.Fatalf("curl: %v, answered %q\n%s", err, stdout.String(), redactToken(stderr.String(), token))
		}
		if !strings.Contains(stderr.String(), "> Expect: 100-continue") || !strings.Contains(stderr.String(), "< HTTP/1.1 100 Continue") {
			t.Fatalf("curl did not send Expect: 100-continue, or got no 100:\n%s", redactToken(stderr.String(), token))
		}
		if c := laneCountsWhen(t, metricsAddr, before, 1, 0); c[0]+c[1] != 1 || c[2] != 0 {
			t.Errorf("the fast lane served %v, in place %v, handed over %v; want curl's POST served", c[0], c[1], c[2])
		}
	})
	checkLaneBodiesReleased(t, metricsAddr)
}

// closedAfter checks that res, read whole from br, says its connection closes, and that it
// does.
func closedAfter(t *testing.T, conn net.Conn, br *bufio.Reader, res *http.Response) {
	t.Helper()
	if !res.Close {
		t.Error("the answer does not say the connection closes")
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := io.Copy(io.Discard, br); err != nil || n != 0 {
		t.Errorf("after the answer: %d bytes more, %v; want the connection closed", n, err)
	}
}

// readAnswer reads an answer to a request of method from br, its body whole, and gives it
// with its status code and body as one string ("200 ok").
func readAnswer(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	return res, strconv.Itoa(res.StatusCode) + " " + string(body)
}
