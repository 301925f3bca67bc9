package driver

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// panickingNode is a Node service whose publish panics.
type panickingNode struct{ csi.UnimplementedNodeServer }

func (panickingNode) NodePublishVolume(context.Context, *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	panic("a bug in a publish")
}

// probeOnly is an Identity service that answers Probe.
type probeOnly struct {
	csi.UnimplementedIdentityServer
}

func (probeOnly) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// TestACSICallThatPanicsFailsAlone: a panic in a CSI call is that call's Internal error, over
// the real socket, and the process goes on serving (unrecovered, it would end, and with it the
// proxy of every Pod on the node).
func TestACSICallThatPanicsFailsAlone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	socket := filepath.Join(t.TempDir(), "csi.sock")
	served := make(chan error, 1)
	go func() { served <- serveCSI(ctx, socket, probeOnly{}, panickingNode{}) }()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = csi.NewNodeClient(conn).NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v"}, grpc.WaitForReady(true))
	if status.Code(err) != codes.Internal {
		t.Fatalf("a publish that panicked: %v, want Internal", err)
	}
	if err := probeCSI(ctx, socket); err != nil {
		t.Errorf("the driver stopped serving after a call panicked: %v", err)
	}
	select {
	case err := <-served:
		t.Fatalf("the CSI server ended: %v", err)
	default:
	}
}
