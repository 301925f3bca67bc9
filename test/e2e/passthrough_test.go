package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/proxy"
)

// TestForwardPassthrough: a build step that sources .env and then fetches from a host of no
// Connector. The names resolve, through the driver's test resolver, to a public address
// (203.0.113.10, documentation range) and a private one (10.1.2.3); the dial hook leads the
// public one to loopback servers and fails the test if anything else non-loopback is dialed,
// so no packet leaves the machine. Under public (the default) the public host is reached over
// plain HTTP without any credential or Proxy-* header (the client's own Authorization kept) and
// over a CONNECT that is a plain tunnel (the client sees the server's own certificate, not a
// leaf of the proxy CA); the private one is refused before any dial, and so are a CONNECT to a
// port other than 443, plain HTTP to one other than 80, and an upgrade. Under none both hosts
// are refused; under all the private one is reached.
func TestForwardPassthrough(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	conns := map[string]bool{} // the plain server's client connections, by remote address
	record := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		conns[r.RemoteAddr] = true
		mu.Unlock()
		fmt.Fprintf(w, "hello from %s", r.Host)
	}
	plain := httptest.NewServer(http.HandlerFunc(record))
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(http.HandlerFunc(record))
	t.Cleanup(secure.Close)
	public, private := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.1.2.3")
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "localhost":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "public.example":
			return []netip.Addr{public}, nil
		case "private.example":
			return []netip.Addr{private}, nil
		}
		return nil, fmt.Errorf("test: %s is not looked up", host)
	}
	// The private address is dialed (to loopback) only in the "all" case; anywhere else the
	// hook fails the test if the proxy tries it.
	var privateAllowed atomic.Bool
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		ap := netip.MustParseAddrPort(address)
		var d net.Dialer
		switch {
		case ap.Addr().IsLoopback():
			return d.DialContext(ctx, network, address)
		case ap.Port() == 80 && (ap.Addr() == public || ap.Addr() == private && privateAllowed.Load()):
			return d.DialContext(ctx, network, plain.Listener.Addr().String())
		case ap.Port() == 443 && ap.Addr() == public:
			return d.DialContext(ctx, network, secure.Listener.Addr().String())
		}
		t.Errorf("dialed %s: no test connection may leave loopback", address)
		return nil, fmt.Errorf("test: %s is not dialed", address)
	}
	tool := startGitServer(t, false)

	run := func(mode string) (client *http.Client, token string) {
		env := startProxyDriver(t, func(o *driver.Options) {
			o.ForwardPassthrough, o.Resolve, o.Dial = mode, resolve, dial
		})
		ns := newNamespace(t)
		gitConnector(t, ns, "tool", gitClass(t), tool)
		allowConnectors(t, ns, "builder", "tool")
		pod := podWithVolume(t, env.kubelet, ns, "build", map[string]string{"connectors": "tool"}, nil)
		if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
		files := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))
		forward, err := url.Parse(files["http.proxy"])
		if err != nil {
			t.Fatal(err)
		}
		// The test client trusts anything: what it checks is which certificate it was shown.
		return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(forward),
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}, files["context.token"] //nolint:gosec
	}
	get := func(client *http.Client, target string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", target, nil)
		req.Header.Set("Authorization", "Bearer the-client-s-own")
		res, err := client.Do(req)
		if err != nil {
			return nil, err.Error()
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}

	t.Run("public: a public host is reached, without credentials", func(t *testing.T) {
		client, token := run(proxy.PassthroughPublic)
		for range 2 {
			res, body := get(client, "http://public.example/dependency.tar.gz")
			if res == nil || res.StatusCode != 200 || body != "hello from public.example" {
				t.Fatalf("plain HTTP pass-through: %v %s", res, body)
			}
		}
		// Pass-through keeps no connection to a public host: a server that mis-frames requests
		// would otherwise let one tenant's smuggled request answer another tenant's next one.
		mu.Lock()
		if len(conns) != 2 {
			t.Errorf("two plain requests passed through on %d connections, want one each", len(conns))
		}
		mu.Unlock()
		res, body := get(client, "https://public.example/base-image")
		if res == nil || res.StatusCode != 200 {
			t.Fatalf("CONNECT pass-through: %v %s", res, body)
		}
		if got := res.TLS.PeerCertificates[0]; !bytes.Equal(got.Raw, secure.Certificate().Raw) {
			t.Errorf("the tunnel showed %s, not the server's own certificate: it was intercepted", got.Subject)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, h := range seen {
			for name, values := range h {
				if strings.HasPrefix(name, "Proxy-") || strings.Contains(strings.Join(values, " "), token) {
					t.Errorf("the public host got %s: %v", name, values)
				}
			}
			if h.Get("Authorization") != "Bearer the-client-s-own" {
				t.Errorf("the client's own Authorization did not pass: %q", h.Get("Authorization"))
			}
		}
		// A tunnel is opaque: pass-through opens one to port 443 only (the dial hook fails the
		// test if 8443 is dialed).
		if res, body := get(client, "https://public.example:8443/"); res != nil || !strings.Contains(body, http.StatusText(http.StatusForbidden)) {
			t.Errorf("CONNECT pass-through to port 8443: %v %s, want 403", res, body)
		}
		// Plain HTTP goes to port 80 only: a body is whatever the client writes, which a server
		// of another protocol reads as its commands (the hook fails the test if 25 is dialed).
		if res, body := get(client, "http://public.example:25/"); res == nil || res.StatusCode != http.StatusForbidden ||
			!strings.Contains(body, "only to ports 80") {
			t.Errorf("plain HTTP pass-through to port 25: %v %s, want 403 naming the ports", res, body)
		}
		// Nor does it switch protocols: the connection would then carry anything, as a tunnel.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		upgrade, _ := http.NewRequestWithContext(ctx, "GET", "http://public.example/socket", nil)
		upgrade.Header.Set("Connection", "Upgrade")
		upgrade.Header.Set("Upgrade", "websocket")
		if res, err := client.Do(upgrade); err != nil || res.StatusCode != http.StatusForbidden {
			t.Errorf("an upgrade through pass-through: %v %v, want 403", res, err)
		} else {
			res.Body.Close()
		}
		for _, target := range []string{"http://private.example/", "https://private.example/"} {
			// A refused CONNECT reaches Go's client as the error "Forbidden".
			res, body := get(client, target)
			switch {
			case res == nil && !strings.Contains(body, http.StatusText(http.StatusForbidden)):
				t.Errorf("%s under public: %s, want 403", target, body)
			case res != nil && (res.StatusCode != http.StatusForbidden || !strings.Contains(body, "private address")):
				t.Errorf("%s under public: %d %s, want 403 saying why", target, res.StatusCode, body)
			}
		}
	})
	t.Run("none: no pass-through", func(t *testing.T) {
		client, _ := run(proxy.PassthroughNone)
		if res, body := get(client, "http://public.example/"); res == nil || res.StatusCode != http.StatusForbidden {
			t.Errorf("under none: %v %s, want 403", res, body)
		}
	})
	t.Run("all: a private host too", func(t *testing.T) {
		privateAllowed.Store(true)
		client, _ := run(proxy.PassthroughAll)
		if res, body := get(client, "http://private.example/"); res == nil || res.StatusCode != 200 {
			t.Errorf("under all: %v %s", res, body)
		}
	})
}

// TestTenancyADroppedRequestLeavesNoDialBehind: a tenant names (or points a Connector at) a
// name of many addresses that never answer, and sends and drops requests. http.Transport dials
// on a context that a request's end does not cancel; through the proxy, the dial of a dropped
// request ends with it, after no more than a few of the addresses: the plain pass-through's,
// and a Connector's request that net/http's transport sends (a method the proxy's own
// connections do not take).
func TestTenancyADroppedRequestLeavesNoDialBehind(t *testing.T) {
	slow := make([]netip.Addr, 64) // documentation addresses: public to the policy, never dialed
	for i := range slow {
		slow[i] = netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
	}
	var dials atomic.Int32
	started, ended := make(chan struct{}, 64), make(chan error, 64)
	env := startProxyDriver(t, func(o *driver.Options) {
		// The node alone: no status controller probes the Connector with the hooks below.
		o.Role = driver.RoleNode
		o.ForwardPassthrough = proxy.PassthroughPublic
		o.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
			if host == "slow.example" || host == "elsewhere.example" {
				return slow, nil
			}
			return nil, fmt.Errorf("test: %s is not looked up", host)
		}
		o.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			started <- struct{}{}
			<-ctx.Done() // an address that never answers
			ended <- ctx.Err()
			return nil, ctx.Err()
		}
	})
	ns := newNamespace(t)
	git := gitClass(t)
	newConnector(t, ns, "slow", git, "http://slow.example")
	newConnector(t, ns, "other", git, "http://other.example") // named, and covers nothing asked
	// Later tests' drivers probe every Connector with the real resolver.
	t.Cleanup(func() {
		for _, name := range []string{"slow", "other"} {
			_ = cp.Client.Delete(context.Background(), &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})
		}
	})
	allowConnectors(t, ns, "builder", "slow", "other")
	token := proxyToken(t, ns, "builder")
	for name, send := range map[string]func(ctx context.Context) error{
		"pass-through": func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://elsewhere.example/x", nil)
			_, err := forwardClient(env.proxyURL, ns+"/other", token).Do(req)
			return err
		},
		"a Connector's request through net/http's transport": func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "PROPFIND", env.proxyURL+"/namespaces/"+ns+"/connectors/slow/x", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			_, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			before := dials.Load()
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-started
				cancel() // the client goes away while the first address is being dialed
			}()
			if err := send(ctx); err == nil {
				t.Fatal("the request was answered")
			}
			select {
			case err := <-ended:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("the dial ended with %v, want its request's end", err)
				}
			case <-time.After(time.Minute): // a bound on a hang, not a timing
				t.Fatal("the dial went on after its request ended")
			}
			if n := dials.Load() - before; n > 4 {
				t.Errorf("%d of the name's 64 addresses dialed, want at most 4", n)
			}
		})
	}
}
