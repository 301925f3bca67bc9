package e2e

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestSanity runs csi-sanity against the driver's real gRPC server. This is a node-only plugin
// (no CONTROLLER_SERVICE capability), so the Controller Server specs do not apply; csi-sanity
// runs them whenever the controller address answers, so they are skipped by name.
func TestSanity(t *testing.T) {
	if err := flag.Set("ginkgo.skip", `\[Controller Server\]`); err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, t.TempDir(), nil)
	cfg := sanity.NewTestConfig()
	cfg.Address = d.socket
	base := t.TempDir()
	cfg.TargetPath = filepath.Join(base, "target")
	cfg.StagingPath = filepath.Join(base, "staging")
	cfg.CreateTargetDir = func(p string) (string, error) { return p, os.MkdirAll(p, 0o750) }
	cfg.CreateStagingDir = cfg.CreateTargetDir
	sanity.Test(t, cfg)
}

// TestProbeReflectsSync checks the Identity service once the informers have synced.
func TestProbeReflectsSync(t *testing.T) {
	d := startDriver(t, t.TempDir(), nil)
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ids := csi.NewIdentityClient(conn)
	ready := func() bool {
		res, err := ids.Probe(context.Background(), &csi.ProbeRequest{})
		return err == nil && res.GetReady().GetValue()
	}
	if !kubelet.WaitUntil(30*time.Second, ready) {
		t.Fatal("Probe never reported ready")
	}
	info, err := ids.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != driverName || info.GetVendorVersion() == "" {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
}
