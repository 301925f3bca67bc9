package node

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/record"

	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// TestKeptRepublishIsReportedOncePerOutage: kubelet republishes every minute; a Pod must get one
// Event when its volume starts keeping old content, not one a minute, and a new one after the
// volume recovered and failed again.
func TestKeptRepublishIsReportedOncePerOutage(t *testing.T) {
	events := record.NewFakeRecorder(10)
	s := NewServer(Server{Events: events})
	vr := &volumeRequest{pod: records.Pod{Namespace: "ns", Name: "p", UID: "u"}}
	outage := status.Error(codes.Unavailable, "the API server is away")
	for _, err := range []error{outage, outage, outage, nil, outage, outage} {
		if _, got := s.answer(context.Background(), "vol", vr, true, err); got != nil {
			t.Fatalf("a republish that keeps its content failed: %v", got)
		}
	}
	if n := len(events.Events); n != 2 {
		t.Fatalf("%d Events for two outages, want 2", n)
	}
	if _, err := s.answer(context.Background(), "fresh", vr, false, outage); status.Code(err) != codes.Unavailable {
		t.Fatalf("a first publish during an outage: %v, want Unavailable", err)
	}
}

// TestUnpublishForgetsAKeptVolume: a volume whose republishes kept old content and that then
// went (its Pod ended during the outage) is forgotten, not kept in memory for the driver's life.
func TestUnpublishForgetsAKeptVolume(t *testing.T) {
	store, err := records.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Server{Events: record.NewFakeRecorder(10), Mounter: mount.NewDirectories(), Records: store})
	vr := &volumeRequest{pod: records.Pod{Namespace: "ns", Name: "p", UID: "u"}}
	if _, err := s.answer(context.Background(), "vol", vr, true, status.Error(codes.Unavailable, "the API server is away")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "vol", TargetPath: filepath.Join(t.TempDir(), "target")}); err != nil {
		t.Fatal(err)
	}
	if _, kept := s.kept.Load("vol"); kept {
		t.Error("the unpublished volume is still remembered as kept")
	}
}
