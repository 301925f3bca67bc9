package e2e

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/test/netfault"
)

// apiServerURL is the test API server's URL.
func apiServerURL(t *testing.T) *url.URL {
	t.Helper()
	u, err := url.Parse(cp.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// apiServerLink is a link to the test API server that the test can cut and restore.
func apiServerLink(t *testing.T) *netfault.Forwarder {
	t.Helper()
	link, err := netfault.New(apiServerURL(t).Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	return link
}

// TestRepublishSurvivesAPIServerOutage cuts the driver off from the API server (every
// connection closed, new ones refused) between publish and republish.
func TestRepublishSurvivesAPIServerOutage(t *testing.T) {
	link := apiServerLink(t)
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) {
		o.Kubeconfig = kubeconfigVia(t, link.Addr())
		o.AuthzAllowTTL = 0    // every republish asks the API server, so the outage is felt
		o.RepublishRecheck = 0 // (an unchanged republish would not)
	})
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	newConnector(t, ns, "github", gitClass(t), "https://github.com")
	allowConnectors(t, ns, "builder", "github")
	mounted := podWithVolume(t, k, ns, "mounted", map[string]string{"connectors": "github"}, nil)
	fresh := podWithVolume(t, k, ns, "fresh", map[string]string{"connectors": "github"}, nil)

	// kubelet holds its tokens; the requests are made while the API server is up.
	first, err := k.PublishRequest(ctx, mounted, "connectors")
	if err != nil {
		t.Fatal(err)
	}
	republish, err := k.PublishRequest(ctx, mounted, "connectors")
	if err != nil {
		t.Fatal(err)
	}
	firstOfFresh, err := k.PublishRequest(ctx, fresh, "connectors")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Node.NodePublishVolume(ctx, first); err != nil {
		t.Fatal(err)
	}
	before := visibleFiles(t, first.TargetPath)

	if err := link.Cut(); err != nil {
		t.Fatal(err)
	}

	if _, err := k.Node.NodePublishVolume(ctx, republish); err != nil {
		t.Fatalf("republish during the outage failed: %v", err)
	}
	if got := visibleFiles(t, first.TargetPath); got["context.token"] != before["context.token"] || len(got) != len(before) {
		t.Fatal("republish during the outage changed the volume")
	}
	if n := mountCount(t, d, first.TargetPath); n != 1 {
		t.Fatalf("%d mounts after the republish during the outage, want 1", n)
	}
	_, err = k.Node.NodePublishVolume(ctx, firstOfFresh)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("first publish during the outage: %v, want Unavailable", err)
	}
	if n := mountCount(t, d, firstOfFresh.TargetPath); n != 0 {
		t.Fatalf("a failed first publish left %d mounts", n)
	}

	if err := link.Restore(); err != nil {
		t.Fatal(err)
	}
	ok := kubelet.WaitUntil(60*time.Second, func() bool {
		_, err := k.Node.NodePublishVolume(ctx, republish)
		return err == nil && visibleFiles(t, first.TargetPath)["context.token"] != before["context.token"]
	})
	if !ok {
		t.Fatal("after the API server came back, republish never wrote the new token")
	}
	if err := k.Unpublish(ctx, mounted, "connectors"); err != nil {
		t.Fatal(err)
	}
}

// TestADriverStartedInAnOutageStaysAlive: a node driver (re)started while the API server does
// not answer waits for it and says meanwhile that it is alive and not ready (/healthz 200,
// /readyz 503): a failing liveness probe would restart it in a loop, and kubelet's back-off
// would keep the node without CSI and proxy for minutes after the API server is back. Once it
// answers, the driver serves.
func TestADriverStartedInAnOutageStaysAlive(t *testing.T) {
	link := apiServerLink(t)
	if err := link.Cut(); err != nil {
		t.Fatal(err)
	}
	status := startNodeDriverBehind(t, link.Addr(), 0)
	// Past its grace a start that still hangs is not alive: the liveness probe restarts it.
	stuck := startNodeDriverBehind(t, link.Addr(), time.Nanosecond)
	if !kubelet.WaitUntil(15*time.Second, func() bool { return status("/healthz") == http.StatusOK }) {
		t.Fatalf("/healthz during the outage: %d, want 200", status("/healthz"))
	}
	if code := status("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage: %d, want 503", code)
	}
	if !kubelet.WaitUntil(15*time.Second, func() bool { return stuck("/healthz") == http.StatusServiceUnavailable }) {
		t.Errorf("/healthz past --startup-grace during the outage: %d, want 503", stuck("/healthz"))
	}
	if err := link.Restore(); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(60*time.Second, func() bool { return status("/readyz") == http.StatusOK }) {
		t.Fatalf("/readyz after the outage: %d, want 200", status("/readyz"))
	}
	if code := status("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after the outage (the CSI socket probed): %d, want 200", code)
	}
}

// startNodeDriverBehind runs a node driver whose API server is behind apiAddr, with
// --startup-grace grace (0: the default), and returns the status its metrics listener answers
// for a path (0: no answer).
func startNodeDriverBehind(t *testing.T, apiAddr string, grace time.Duration) func(path string) int {
	t.Helper()
	socketDir, err := os.MkdirTemp("", "csi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(socketDir) })
	metrics := freeLoopbackAddr(t)
	opts := testOptions()
	opts.Role, opts.Kubeconfig, opts.MetricsListen, opts.StartupGrace = driver.RoleNode, kubeconfigVia(t, apiAddr), metrics, grace
	opts.Endpoint, opts.StateDir, opts.Mounter = "unix://"+filepath.Join(socketDir, "csi.sock"), t.TempDir(), mount.NewDirectories()
	runDriver(t, opts)
	probes := &http.Client{Timeout: 2 * time.Second}
	return func(path string) int {
		res, err := probes.Get("http://" + metrics + path)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
}
