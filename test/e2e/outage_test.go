package e2e

import (
	"context"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/test/netfault"
)

// TestRepublishSurvivesAPIServerOutage cuts the driver off from the API server (every
// connection closed, new ones refused) between publish and republish.
func TestRepublishSurvivesAPIServerOutage(t *testing.T) {
	apiURL, err := url.Parse(cp.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	link, err := netfault.New(apiURL.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
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
