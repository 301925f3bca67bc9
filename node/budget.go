package node

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/render"
)

// volumeBudget bounds the memory the node's volumes hold. A volume's files live in a tmpfs the
// driver writes, and the kernel charges tmpfs pages to the memory cgroup of whoever wrote them:
// the driver's container, not the Pod whose volume it is, nor its namespace's quota. Without a
// bound, one tenant's Pods (thousands of small volumes, or parameters a template multiplies
// into megabytes) would take the driver past its memory limit, and every Pod of the node its
// volumes and its proxy with it. So the new volumes of the node may take it to MaxBytes
// together, and those of one namespace to half of that, so that one tenant that reaches its
// share leaves room for the others. Written here because no library counts tmpfs pages by tenant.
type volumeBudget struct {
	max, namespaceMax int64

	mu          sync.Mutex
	total       int64
	byNamespace map[string]int64
	byVolume    map[string]volumeUse
}

type volumeUse struct {
	namespace string
	bytes     int64
}

// newVolumeBudget bounds the volumes at max bytes together (0: no bound), counting those the
// records say the node holds already (a restart keeps their pages).
func newVolumeBudget(max int64, held []*records.Record) *volumeBudget {
	b := &volumeBudget{max: max, namespaceMax: max / 2, byNamespace: map[string]int64{}, byVolume: map[string]volumeUse{}}
	for _, rec := range held {
		b.set(rec.VolumeID, rec.Pod.Namespace, rec.Bytes)
	}
	return b
}

// take makes bytes the volume's use, unless its growth would put the node's volumes, or its
// namespace's, over the bound: ResourceExhausted then, naming which (kubelet retries). A mounted
// volume's growth is counted whatever it takes when it is a renewal (a new token, which the
// Pod needs, or a class or proxy CA an administrator changed) or when its use before is not
// known (published before the budget came); growth the tenant drives (its Connector, its
// approval: a rejected volume holds an error file alone) is bounded as a new volume is, or a
// tenant's small volumes could all grow past every bound. undo gives the volume its use
// before, for files that could not be written.
func (b *volumeBudget) take(volumeID, namespace string, bytes int64, mounted, renewal bool) (undo func(), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	was, known := b.byVolume[volumeID]
	before := was.bytes
	unbounded := mounted && (renewal || !known)
	if b.max > 0 && bytes > before && !unbounded {
		more := bytes - before
		if b.total+more > b.max {
			return nil, status.Errorf(codes.ResourceExhausted, "the Connectors volumes of this node would hold %d bytes of memory, more than the %d they may (--node-volumes-max-bytes)",
				b.total+more, b.max)
		}
		if b.byNamespace[namespace]+more > b.namespaceMax {
			return nil, status.Errorf(codes.ResourceExhausted, "the Connectors volumes of namespace %s on this node would hold %d bytes of memory, more than its share, %d (half of --node-volumes-max-bytes)",
				namespace, b.byNamespace[namespace]+more, b.namespaceMax)
		}
	}
	b.set(volumeID, namespace, bytes)
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.set(volumeID, was.namespace, was.bytes)
	}, nil
}

// release forgets the volume's use.
func (b *volumeBudget) release(volumeID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(volumeID, "", 0)
}

// set records the volume's use; b.mu is held (or b not yet shared).
func (b *volumeBudget) set(volumeID, namespace string, bytes int64) {
	if old, ok := b.byVolume[volumeID]; ok {
		b.total -= old.bytes
		if b.byNamespace[old.namespace] -= old.bytes; b.byNamespace[old.namespace] <= 0 {
			delete(b.byNamespace, old.namespace)
		}
		delete(b.byVolume, volumeID)
	}
	if bytes <= 0 {
		return
	}
	b.byVolume[volumeID] = volumeUse{namespace: namespace, bytes: bytes}
	b.byNamespace[namespace] += bytes
	b.total += bytes
}

// tmpfsPage is the unit a tmpfs holds file content in.
const tmpfsPage = 4096

// footprint estimates the memory a volume of these files holds: each file's content in whole
// pages, and the inodes and directory entries of each file and its link (atomicdir), about
// 1 KiB, and of the volume's directories, 4 KiB (8 built-in files measured 36 KiB).
func footprint(files render.Files) int64 {
	return 4<<10 + contentPages(files) + int64(len(files))<<10
}

// contentPages is what the files' content takes of a tmpfs's size: whole pages.
func contentPages(files render.Files) int64 {
	n := int64(0)
	for _, content := range files {
		n += (int64(len(content)) + tmpfsPage - 1) / tmpfsPage * tmpfsPage
	}
	return n
}
