package approval

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// checkReads remembers what each live request's checks read at its last evaluation (each
// check's kind, the name it names if any, and its label selector), so that a change of a check
// object wakes only the requests whose checks select the object, not every live request of
// Pods of its namespace: in a namespace of many Pods (a CI tenant's), each change of one
// approval task would otherwise cost every request an evaluation, three reads of the API server
// (the Pod and its Tekton owners) and its checks' states.
//
// A request with nothing remembered wakes at every change, as every request did before: one
// not evaluated since this controller started (after a leader change too), and one whose last
// evaluation stopped before a check's selector was known (a template that does not render, the
// budget spent). While a request is evaluated, what its checks read is added to what it read
// before as each check comes to read, and replaces it when the evaluation ends: a change that
// the evaluation's own list did not see (the informer updates its store before it tells the
// handlers) wakes it by either, and changes of objects it reads neither before nor now do not
// (a tenant touching unrelated objects of its namespace does not keep its requests busy).
// What an evaluation renders a selector from (the Pod, its owners, the Connector, a check
// template) is read again at each evaluation; a change of those is seen at the request's next
// one, which a change of an object its checks select, the Connector or a policy, or the Pod's
// recheck interval starts.
type checkReads struct {
	mu        sync.Mutex
	byRequest map[types.NamespacedName][]checkRead
}

// checkRead is what one check read: objects of kind in the Pod's namespace, of name (any when
// empty), that selector matches.
type checkRead struct {
	kind     schema.GroupKind
	name     string
	selector labels.Selector
}

// selects tells whether obj is one the check read, or would read now.
func (r checkRead) selects(obj client.Object) bool {
	kind := obj.GetObjectKind().GroupVersionKind().GroupKind()
	return (kind.Empty() || kind == r.kind) && (r.name == "" || r.name == obj.GetName()) &&
		r.selector.Matches(labels.Set(obj.GetLabels()))
}

// add adds read to what request is known to read, while it is evaluated; a request not known
// stays so (it wakes at every change until an evaluation is remembered).
func (c *checkReads) add(request types.NamespacedName, read checkRead) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reads, known := c.byRequest[request]; known {
		c.byRequest[request] = append(reads[:len(reads):len(reads)], read)
	}
}

// forget makes request wake at every change again.
func (c *checkReads) forget(request types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byRequest, request)
}

// remember records what an evaluation of request that read every check read.
func (c *checkReads) remember(request types.NamespacedName, reads []checkRead) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byRequest == nil {
		c.byRequest = map[types.NamespacedName][]checkRead{}
	}
	c.byRequest[request] = reads
}

// wakes tells whether a change of obj (as it was, or as it is) should wake request.
func (c *checkReads) wakes(request types.NamespacedName, obj client.Object) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads, known := c.byRequest[request]
	if !known {
		return true
	}
	for _, r := range reads {
		if r.selects(obj) {
			return true
		}
	}
	return false
}

// ownWrites holds, by request, the statuses the controller is writing or wrote whose watch
// events have not come yet. A status is added before its write, since the event may come before
// the write returns, and one evaluation may write twice (the record before a grant, then the
// grant's status).
type ownWrites struct {
	mu        sync.Mutex
	byRequest map[types.NamespacedName][]*v1alpha1.AccessRequestStatus
}

// maxOwnWrites bounds the statuses kept per request: a write that failed, or an event lost to a
// relist, leaves its own.
const maxOwnWrites = 4

// add records a status about to be written for request.
func (w *ownWrites) add(request types.NamespacedName, status *v1alpha1.AccessRequestStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byRequest == nil {
		w.byRequest = map[types.NamespacedName][]*v1alpha1.AccessRequestStatus{}
	}
	statuses := append(w.byRequest[request], status)
	w.byRequest[request] = statuses[max(0, len(statuses)-maxOwnWrites):]
}

// seen tells whether status is one the controller wrote for request, and forgets it with those
// written before it.
func (w *ownWrites) seen(request types.NamespacedName, status *v1alpha1.AccessRequestStatus) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	statuses := w.byRequest[request]
	i := slices.IndexFunc(statuses, func(s *v1alpha1.AccessRequestStatus) bool { return apiequalityStatus(s, status) })
	switch {
	case i < 0:
		return false
	case i == len(statuses)-1:
		delete(w.byRequest, request)
	default:
		w.byRequest[request] = statuses[i+1:]
	}
	return true
}

// drop forgets status, added for request, whose write failed.
func (w *ownWrites) drop(request types.NamespacedName, status *v1alpha1.AccessRequestStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	statuses := slices.DeleteFunc(w.byRequest[request], func(s *v1alpha1.AccessRequestStatus) bool { return s == status })
	if len(statuses) == 0 {
		delete(w.byRequest, request)
		return
	}
	w.byRequest[request] = statuses
}

// forget drops what is kept of request.
func (w *ownWrites) forget(request types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byRequest, request)
}
