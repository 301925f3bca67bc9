package node

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/render"
)

// TestVolumeBudgetBoundsTheNodeAndEachNamespace: the node's volumes hold at most the bound
// together and one namespace's a quarter of it; a volume's new content replaces its old use,
// undo gives it back, a release frees it, and the records of a restarted driver count from
// the start.
func TestVolumeBudgetBoundsTheNodeAndEachNamespace(t *testing.T) {
	b := newVolumeBudget(400, []*records.Record{{VolumeID: "held", Pod: records.Pod{Namespace: "c"}, Bytes: 90}})
	exhausted := func(err error, want string) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want ResourceExhausted naming %q", err, want)
		}
	}
	if _, err := b.take("a1", "a", 100); err != nil {
		t.Fatal(err)
	}
	_, err := b.take("a2", "a", 1)
	exhausted(err, "namespace a on this node would hold 101 bytes of memory, more than its share, 100")
	undo, err := b.take("a1", "a", 60) // smaller content of the same volume
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.take("a2", "a", 40); err != nil {
		t.Errorf("the share a volume's smaller content left: %v", err)
	}
	undo()
	if b.byNamespace["a"] != 140 {
		t.Errorf("after undo namespace a holds %d, want 140", b.byNamespace["a"])
	}
	for _, ns := range []string{"b", "d"} {
		if _, err := b.take(ns, ns, 80); err != nil {
			t.Fatal(err)
		}
	}
	_, err = b.take("c2", "c", 20) // 140 + 90 (held) + 160 + 20 = 410 > 400
	exhausted(err, "the Connectors volumes of this node would hold 410 bytes of memory, more than the 400 they may (--node-volumes-max-bytes)")
	b.release("held")
	if _, err := b.take("c2", "c", 20); err != nil {
		t.Errorf("after a release: %v", err)
	}
	if unbounded := newVolumeBudget(0, nil); func() error { _, err := unbounded.take("x", "x", 1<<40); return err }() != nil {
		t.Error("a budget of 0 bounded a volume")
	}
}

// TestFootprintCountsPages: content is held in whole pages, and each file and volume costs
// inodes besides.
func TestFootprintCountsPages(t *testing.T) {
	got := footprint(render.Files{"a": make([]byte, 1), "b": make([]byte, 4097), "c": nil})
	if want := int64(8<<10 + (4096 + 2<<10) + (8192 + 2<<10) + 2<<10); got != want {
		t.Errorf("footprint %d, want %d", got, want)
	}
}
