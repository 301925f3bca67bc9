package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/record"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
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
	republish := func(errs ...error) {
		for _, err := range errs {
			if _, got := s.answer(context.Background(), "vol", vr, true, err); got != nil {
				t.Fatalf("a republish that keeps its content failed: %v", got)
			}
		}
	}
	republish(outage, outage, outage, nil, outage, outage)
	if n := len(events.Events); n != 2 {
		t.Fatalf("%d Events for two outages, want 2", n)
	}
	if _, err := s.answer(context.Background(), "fresh", vr, false, outage); status.Code(err) != codes.Unavailable {
		t.Fatalf("a first publish during an outage: %v, want Unavailable", err)
	}
	// A request found revoked during the outage going on is told, once; so is the outage after.
	revoked := &revokedError{status.New(codes.FailedPrecondition, "AccessRequest team/r grants nothing: it was revoked")}
	republish(outage, revoked, revoked, outage)
	if n := len(events.Events); n != 4 {
		t.Fatalf("%d Events after a revocation and an outage again, want 4 in all", n)
	}
	if _, err := s.answer(context.Background(), "fresh", vr, false, revoked); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a first publish of a revoked request: %v, want FailedPrecondition", err)
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

// revocations records what an Approver was asked to revoke: the Pods, each with whether its
// record was lost.
type revocations struct{ pods []string }

func (*revocations) Admit(context.Context, records.Pod, *v1alpha1.Connector) (*Admission, error) {
	return &Admission{Granted: true}, nil
}
func (*revocations) Revoke(context.Context, []string) error { return nil }
func (*revocations) Hold([]string)                          {}
func (r *revocations) RevokePod(_ context.Context, uid string, recordLost bool) error {
	r.pods = append(r.pods, fmt.Sprintf("%s lost=%v", uid, recordLost))
	return nil
}

// TestAnUnreadableRecordRevokesItsPodsRequests: a volume whose record came back unreadable, or
// did not come back at all (a power loss) while the volume is mounted, is unpublished, and what
// it held is found by its Pod, whose UID kubelet's target path names: this node's requests of
// that Pod are revoked, all the API server has. A volume never published (no record, nothing
// mounted: the Pod deleted while its publish waited) revokes those the node watches.
func TestAnUnreadableRecordRevokesItsPodsRequests(t *testing.T) {
	state := t.TempDir()
	store, err := records.NewStore(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(&records.Record{VolumeID: "vol"}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(state, "volumes", "*.json"))
	if len(files) != 1 || os.Truncate(files[0], 0) != nil {
		t.Fatalf("record files %v", files)
	}
	store, _ = records.NewStore(state) // a new driver's: nothing in memory
	approver := &revocations{}
	s := NewServer(Server{Events: record.NewFakeRecorder(10), Mounter: mount.NewDirectories(), Records: store, Approval: approver})
	target := func(uid string) string {
		return filepath.Join(t.TempDir(), "pods", uid, "volumes", "kubernetes.io~csi", "connectors", "mount")
	}
	if _, err := s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "vol", TargetPath: target("6b1f0c1e-uid")}); err != nil {
		t.Fatal(err)
	}
	// A record that did not reach the disk at all, its volume mounted: the same.
	lost := target("9d0e2a44-uid")
	if err := os.MkdirAll(lost, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := s.Mounter.MountTmpfs(lost, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "lost", TargetPath: lost}); err != nil {
		t.Fatal(err)
	}
	// Never published.
	if _, err := s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "waited", TargetPath: target("0a1b2c3d-uid")}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"6b1f0c1e-uid lost=true", "9d0e2a44-uid lost=true", "0a1b2c3d-uid lost=false"}; !slices.Equal(approver.pods, want) {
		t.Errorf("revoked the requests of Pods %v, want %v", approver.pods, want)
	}
}

// TestARepublishKeepsTheRequestsItsRecordNamed: a republish admitted without a request the
// volume held (the approval flag turned off meanwhile) keeps it in the record, for unpublish to
// revoke; one admitted by a new request adds it.
func TestARepublishKeepsTheRequestsItsRecordNamed(t *testing.T) {
	store, err := records.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(&records.Record{VolumeID: "vol", AccessRequests: []string{"ns/a"}}); err != nil {
		t.Fatal(err)
	}
	s := &Server{Records: store}
	for _, tc := range []struct {
		volume         string
		admitted, want []string
	}{
		{"vol", nil, []string{"ns/a"}},
		{"vol", []string{"ns/a", "ns/b"}, []string{"ns/a", "ns/b"}},
		{"new", []string{"ns/b"}, []string{"ns/b"}},
	} {
		if got := s.stillHeld(tc.volume, tc.admitted); !slices.Equal(got, tc.want) {
			t.Errorf("%s admitted by %v: holds %v, want %v", tc.volume, tc.admitted, got, tc.want)
		}
	}
}
