package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kube-connectors/connectors-csi/driver"
)

// TestProxyTimeouts: with --proxy-read-header-timeout, --proxy-idle-timeout and
// --proxy-upstream-idle-timeout set far below their defaults (30 s, 120 s, 90 s), the proxy
// closes a client that stops in the middle of a request's head, a kept-alive client that sends
// no next request, and its own idle connection to the tool, each well before the default
// would — through the fast lane and through net/http's server (--proxy-fast-lane=false).
func TestProxyTimeouts(t *testing.T) {
	for _, lane := range []bool{true, false} {
		name := "fast lane"
		if !lane {
			name = "net/http"
		}
		t.Run(name, func(t *testing.T) { checkProxyTimeouts(t, lane) })
	}
}

func checkProxyTimeouts(t *testing.T, lane bool) {
	toolClosed := make(chan struct{}, 16)
	tool := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	tool.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			toolClosed <- struct{}{}
		}
	}
	tool.Start()
	t.Cleanup(tool.Close)
	const short = 500 * time.Millisecond
	env := startProxyDriver(t, func(o *driver.Options) {
		o.ProxyWithoutFastLane = !lane
		o.ProxyReadHeaderTimeout, o.ProxyIdleTimeout, o.ProxyUpstreamIdleTimeout = short, short, short
	})
	ns, _, files := basicTool(t, env, tool.URL, "timeout-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	head := "GET /namespaces/" + ns + "/connectors/tool/x HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + files["context.token"] + "\r\n"

	// A kept-alive client: answered, then closed once it stayed idle.
	idle := dialProxy(t, host)
	if _, err := io.WriteString(idle, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("through the proxy: %d %q", res.StatusCode, body)
	}
	closedBeforeDefault(t, idle, br, "an idle kept-alive client connection")

	// The proxy's connection to the tool, idle in its pool since that answer, is closed too.
	select {
	case <-toolClosed:
	case <-time.After(10 * time.Second):
		t.Error("the proxy's idle connection to the tool was not closed within 10 s of --proxy-upstream-idle-timeout=500ms")
	}

	// A client that sends half a head and stops.
	slow := dialProxy(t, host)
	if _, err := io.WriteString(slow, head); err != nil {
		t.Fatal(err)
	}
	closedBeforeDefault(t, slow, bufio.NewReader(slow), "a client stopped in the middle of a request's head")
}

// closedBeforeDefault checks that the proxy closes conn within 10 s (the flags' defaults are
// 30 s and more), after at most an error answer.
func closedBeforeDefault(t *testing.T, conn net.Conn, br *bufio.Reader, what string) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("%s: the proxy had not closed it after 10 s", what)
	case err != nil:
		t.Errorf("%s: %v", what, err)
	case len(rest) > 0 && !strings.HasPrefix(string(rest), "HTTP/1.1 4"):
		t.Errorf("%s: the proxy wrote %q before closing it", what, rest)
	}
}
