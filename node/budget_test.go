package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/render"
)

// TestVolumeBudgetBoundsTheNodeAndEachNamespace: the node's new volumes take it to at most
// the bound together and one namespace's to half of it; a volume's new content replaces its
// old use, undo gives it back, a release frees it, a mounted volume's renewal (or one the
// budget does not know) is counted whatever it takes and other growth only within the
// bounds, and the records of a restarted driver count from the start.
func TestVolumeBudgetBoundsTheNodeAndEachNamespace(t *testing.T) {
	b := newVolumeBudget(400, []*records.Record{{VolumeID: "held", Pod: records.Pod{Namespace: "c"}, Bytes: 90}})
	exhausted := func(err error, want string) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want ResourceExhausted naming %q", err, want)
		}
	}
	take := func(volume, namespace string, bytes int64) error {
		_, err := b.take(volume, namespace, bytes, false, false)
		return err
	}
	if err := take("a1", "a", 150); err != nil {
		t.Fatal(err)
	}
	exhausted(take("a2", "a", 51), "namespace a on this node would hold 201 bytes of memory, more than its share, 200")
	undo, err := b.take("a1", "a", 100, true, false) // smaller content of the same volume
	if err != nil {
		t.Fatal(err)
	}
	if err := take("a2", "a", 50); err != nil {
		t.Errorf("the share a volume's smaller content left: %v", err)
	}
	undo()
	if b.byNamespace["a"] != 200 {
		t.Errorf("after undo namespace a holds %d, want 200", b.byNamespace["a"])
	}
	for ns, bytes := range map[string]int64{"b": 80, "d": 20} {
		if err := take(ns, ns, bytes); err != nil {
			t.Fatal(err)
		}
	}
	exhausted(take("c2", "c", 20), // 90 (held) + 200 + 80 + 20 + 20 = 410 > 400
		"the Connectors volumes of this node would hold 410 bytes of memory, more than the 400 they may (--node-volumes-max-bytes)")
	// A mounted volume the budget does not know (published before it came) is counted.
	if _, err := b.take("mounted", "a", 30, true, false); err != nil || b.byNamespace["a"] != 230 {
		t.Errorf("a mounted volume past the share: %v, namespace a holds %d, want 230", err, b.byNamespace["a"])
	}
	// A known one's renewal is counted whatever it takes; other content grows within the
	// bounds only, and a refusal leaves its use as it was.
	if _, err := b.take("mounted", "a", 34, true, true); err != nil || b.byNamespace["a"] != 234 {
		t.Errorf("a mounted volume's renewal past the share: %v, namespace a holds %d, want 234", err, b.byNamespace["a"])
	}
	exhausted(func() error { _, err := b.take("mounted", "a", 300, true, false); return err }(), "--node-volumes-max-bytes")
	if b.byNamespace["a"] != 234 {
		t.Errorf("after a refused growth namespace a holds %d, want 234", b.byNamespace["a"])
	}
	b.release("held")
	if err := take("c2", "c", 20); err != nil {
		t.Errorf("after a release: %v", err)
	}
	if unbounded := newVolumeBudget(0, nil); func() error { _, err := unbounded.take("x", "x", 1<<40, false, false); return err }() != nil {
		t.Error("a budget of 0 bounded a volume")
	}
}

// TestFootprintCountsPages: content is held in whole pages, and each file and volume costs
// inodes besides.
func TestFootprintCountsPages(t *testing.T) {
	got := footprint(render.Files{"a": make([]byte, 1), "b": make([]byte, 4097), "c": nil})
	if want := int64(4<<10 + (4096 + 1<<10) + (8192 + 1<<10) + 1<<10); got != want {
		t.Errorf("footprint %d, want %d", got, want)
	}
}

// TestARestartCountsTheMountedVolumes: a restarted driver counts the volumes its records name
// that are still mounted, not those whose targets went without an unpublish (a reboot).
func TestARestartCountsTheMountedVolumes(t *testing.T) {
	store, err := records.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mounter := mount.NewDirectories()
	mounted, gone := t.TempDir(), t.TempDir()
	if err := mounter.MountTmpfs(mounted, 1<<20); err != nil {
		t.Fatal(err)
	}
	for id, target := range map[string]string{"mounted": mounted, "gone": gone} {
		if err := store.Save(&records.Record{VolumeID: id, TargetPath: target, Pod: records.Pod{Namespace: "team"}, Bytes: 100}); err != nil {
			t.Fatal(err)
		}
	}
	s := NewServer(Server{Records: store, Mounter: mounter, Config: Config{VolumesMaxBytes: 1 << 20}})
	if got := s.budget.byNamespace["team"]; got != 100 {
		t.Errorf("after a restart the budget counts %d bytes, want the mounted volume's 100", got)
	}
}

// TestAVolumeOverTheBudgetMountsNothing: the budget takes a new volume's files before its target
// is created and mounted, so that a namespace at its share, its publishes retried by kubelet,
// costs no mount and unmount each; within the budget, the volume is mounted and written.
func TestAVolumeOverTheBudgetMountsNothing(t *testing.T) {
	store, err := records.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mounter := &countingMounter{Directories: mount.NewDirectories()}
	s := NewServer(Server{Mounter: mounter, Records: store, Config: Config{VolumesMaxBytes: 64 << 10}})
	target := filepath.Join(t.TempDir(), "target")
	rec := func(id string) *records.Record {
		return &records.Record{VolumeID: id, TargetPath: target, Pod: records.Pod{Namespace: "team", Name: "p", UID: "u"}}
	}
	large := render.Files{"big": bytes.Repeat([]byte("x"), 48<<10)} // over the namespace's half
	if err := s.write(target, false, false, large, nil, rec("large")); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a volume over the budget: %v, want ResourceExhausted", err)
	}
	if mounter.mounts != 0 {
		t.Errorf("a volume over the budget was mounted (%d mounts)", mounter.mounts)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("a volume over the budget left its target: %v", err)
	}
	if err := s.write(target, false, false, render.Files{"small": []byte("x")}, nil, rec("small")); err != nil {
		t.Fatalf("a volume within the budget: %v", err)
	}
	if mounted, _ := mounter.IsMountPoint(target); !mounted {
		t.Error("a volume within the budget was not mounted")
	}
}

// countingMounter counts the mounts asked of it.
type countingMounter struct {
	*mount.Directories
	mounts int
}

func (c *countingMounter) MountTmpfs(target string, size int64) error {
	c.mounts++
	return c.Directories.MountTmpfs(target, size)
}
