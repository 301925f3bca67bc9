package e2e

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/registration"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestKubeletRegistrationAndHealth plays kubelet's plugin watcher against the driver's own
// registration socket, and the liveness probe against /healthz.
func TestKubeletRegistrationAndHealth(t *testing.T) {
	regDir := t.TempDir()
	metrics := freeLoopbackAddr(t)
	const kubeletSees = "/var/lib/kubelet/plugins/connectors-csi/csi.sock"
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) {
		o.KubeletRegDir = regDir
		o.KubeletPluginSock = kubeletSees
		o.MetricsListen = metrics
	})
	socket := registration.SocketPath(regDir, driverName)
	if !kubelet.WaitUntil(10*time.Second, func() bool { _, err := os.Stat(socket); return err == nil }) {
		t.Fatal("no registration socket in the registry directory")
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reg := registerapi.NewRegistrationClient(conn)
	ctx := context.Background()
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != driverName || info.Endpoint != kubeletSees ||
		len(info.SupportedVersions) == 0 {
		t.Fatalf("GetInfo = %+v", info)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + metrics + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", res.StatusCode)
	}
	d.stop()
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("registration socket left after the driver stopped: %v", err)
	}
}
