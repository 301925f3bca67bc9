package objectcache

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/singlecall"
)

// Requests is a node's cache of its own AccessRequests: each one it made or found for a Pod of
// its volumes is watched by name, which the API server's watch cache indexes (follower). A
// watch of the kind selected by the node's label would be one more watcher of every
// AccessRequest change in the cluster, at each of 5,000 nodes, filtered only there.
//
// A request is watched from when the node finds or makes it (Lookup, Follow) and held (Hold)
// while a volume's record names it, until the node revokes it (Release); one not held, a
// pending publish's, is dropped when no publish read it for the idle period. A name not
// watched reads as not found: the proxy reads by names its callers choose, and starts no watch.
type Requests struct {
	client client.WithWatch
	idle   time.Duration
	now    func() time.Time
	// OnChange, set before the first use, is told of every change of a watched request: what
	// it became, or what it was before it was deleted (waiting publishes wake up; the proxy
	// drops the Pod's cached decisions).
	OnChange func(*v1alpha1.AccessRequest)

	mu      sync.Mutex
	watched map[types.NamespacedName]*watchedRequest
	lookups singleflight.Group
	// missing remembers the names Lookup found no request of (see Lookup).
	missing *expirable.LRU[types.NamespacedName, struct{}]
}

// A name Lookup found no request of is not listed again for missingRequestTTL, of at most
// missingRequests names: a request of a name the node gives its Pods' requests comes into
// being by the node (Follow, which forgets the name here) or by whoever else may create
// requests, whose request of that name the node need not see (it would not use it without a
// check of its spec anyway). Each publish of an ungated Pod's volume (kubelet's full
// republish, every --republish-recheck-interval) would otherwise list its request's name.
const (
	missingRequestTTL = time.Hour
	missingRequests   = 8192
)

type watchedRequest struct {
	// obj is the request as the node keeps it (keptRequest), nil when there is none, once
	// synced is closed.
	obj atomic.Pointer[v1alpha1.AccessRequest]
	entry
	held bool
}

// NewRequests returns a cache watching through c; Run must run for requests not held to be
// dropped after idle.
func NewRequests(c client.WithWatch, idle time.Duration) *Requests {
	r := &Requests{client: c, idle: idle, now: time.Now, watched: map[types.NamespacedName]*watchedRequest{},
		missing: expirable.NewLRU[types.NamespacedName, struct{}](missingRequests, nil, missingRequestTTL)}
	cachemetrics.Register("accessrequests", r.len)
	return r
}

func (r *Requests) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.watched)
}

// Get reads a watched request (a shallow copy: its maps and slices are shared with the cache
// and must not be changed); one not watched, or whose watch has not listed it yet, is not
// found: Get never waits (the proxy reads with its callers' requests, and a watch the API
// server keeps failing would hold each of them). A request list is refused: the node keeps no
// list of its requests.
func (r *Requests) Get(ctx context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	ar, ok := obj.(*v1alpha1.AccessRequest)
	if !ok {
		return fmt.Errorf("the node's request cache holds AccessRequests only, not %T", obj)
	}
	w := r.reading(key)
	if w == nil || !w.listed() {
		return requestNotFound(key)
	}
	got, err := w.read(ctx, key)
	if err == nil {
		*ar = *got
	}
	return err
}

// List is refused: the node keeps its requests by name.
func (r *Requests) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("the node's request cache keeps requests by name and lists none")
}

// Lookup reads the request, watched or not: one not watched is listed once (a consistent list,
// which the API server serves from its watch cache once that has caught up: a request the
// node made before it restarted, and the controller granted since, must be found, or the
// Pod's grant would be taken without the request, which the volume's record would then not
// name for unpublish to revoke; concurrent lookups of a name share the list) and watched from
// that list only if it exists; that it does not is remembered (missingRequestTTL) until the
// node follows a request of the name.
func (r *Requests) Lookup(ctx context.Context, nn types.NamespacedName) (*v1alpha1.AccessRequest, error) {
	w := r.reading(nn)
	if _, missing := r.missing.Get(nn); w == nil && missing {
		return nil, requestNotFound(nn)
	}
	if w == nil {
		var err error
		w, err = singlecall.Do(ctx, &r.lookups, nn.String(), lookupTimeout, func(ctx context.Context) (*watchedRequest, error) {
			if w := r.reading(nn); w != nil {
				return w, nil
			}
			found, rv, err := listOne(ctx, r.client, nn, &v1alpha1.AccessRequestList{})
			if err == nil && found == nil {
				r.missing.Add(nn, struct{}{})
			}
			if err != nil || found == nil {
				return nil, err
			}
			return r.follow(nn, found.(*v1alpha1.AccessRequest), rv, false), nil
		})
		if err != nil {
			return nil, fmt.Errorf("lookup of AccessRequest %s: %w", nn, err)
		}
	}
	if w == nil {
		return nil, requestNotFound(nn)
	}
	return w.read(ctx, nn)
}

// Follow watches the request from ar, as the node read or wrote it just now (at its resource
// version), unless it is watched already.
func (r *Requests) Follow(ar *v1alpha1.AccessRequest) {
	r.follow(client.ObjectKeyFromObject(ar), ar.DeepCopy(), ar.ResourceVersion, false)
}

// Hold keeps the request watched until Release: a volume's record names it. One not watched
// yet (at the node's start, for the records it finds) is listed and watched.
func (r *Requests) Hold(nn types.NamespacedName) {
	r.follow(nn, nil, "", true)
}

// Release lets the request go once no publish read it for the idle period: the node revoked
// it.
func (r *Requests) Release(nn types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.watched[nn]; ok {
		w.held, w.lastRead = false, r.now()
	}
}

// Watched returns the requests the cache holds (shared with it: do not change them), in no
// particular order.
func (r *Requests) Watched() []*v1alpha1.AccessRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*v1alpha1.AccessRequest
	for _, w := range r.watched {
		if ar := w.obj.Load(); ar != nil {
			out = append(out, ar)
		}
	}
	return out
}

// reading returns the request's watch, marked read, or nil when there is none.
func (r *Requests) reading(nn types.NamespacedName) *watchedRequest {
	return marked(&r.mu, r.watched, nn, r.now)
}

// follow returns the request's watch, marked read (and held, with hold), starting it when
// there is none: from listed, at listedAt, when that is set, else with a list.
func (r *Requests) follow(nn types.NamespacedName, listed *v1alpha1.AccessRequest, listedAt string, hold bool) *watchedRequest {
	r.missing.Remove(nn)
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.watched[nn]; ok {
		w.lastRead, w.held = r.now(), w.held || hold
		return w
	}
	w := &watchedRequest{entry: entry{lastRead: r.now()}, held: hold}
	start(&w.entry, r.client, nn, listed, listedAt, func(ar *v1alpha1.AccessRequest) { r.set(w, ar) })
	r.watched[nn] = w
	return w
}

// set makes ar (nil: none) the request w holds, as the node keeps it, and tells OnChange of
// a change.
func (r *Requests) set(w *watchedRequest, ar *v1alpha1.AccessRequest) {
	if ar != nil {
		ar = keptRequest(ar)
	}
	had := w.obj.Swap(ar)
	changed := ar
	switch {
	case ar == nil && had == nil:
		return
	case ar == nil:
		changed = had
	case had != nil && had.ResourceVersion == ar.ResourceVersion:
		return
	}
	if r.OnChange != nil {
		r.OnChange(changed)
	}
}

// read returns the request once its watch synced.
func (w *watchedRequest) read(ctx context.Context, nn types.NamespacedName) (*v1alpha1.AccessRequest, error) {
	if err := w.waitSynced(ctx, "AccessRequest "+nn.String()); err != nil {
		return nil, err
	}
	ar := w.obj.Load()
	if ar == nil {
		return nil, requestNotFound(nn)
	}
	copied := *ar
	return &copied, nil
}

func requestNotFound(nn types.NamespacedName) error {
	return apierrors.NewNotFound(v1alpha1.GroupVersion.WithResource("accessrequests").GroupResource(), nn.Name)
}

// Run drops the requests not held that no publish read for the idle period, until ctx is
// done; then it stops every watch.
func (r *Requests) Run(ctx context.Context) {
	tick := time.NewTicker(max(r.idle/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			r.dropWhere(func(*watchedRequest) bool { return true })
			return
		case <-tick.C:
			now := r.now()
			r.dropWhere(func(w *watchedRequest) bool { return !w.held && now.Sub(w.lastRead) > r.idle })
		}
	}
}

func (r *Requests) dropWhere(drop func(*watchedRequest) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for nn, w := range r.watched {
		if drop(w) {
			w.stop()
			delete(r.watched, nn)
		}
	}
}

// keptRequest is what the node keeps of an AccessRequest, which it reads (spec, status
// conditions, the labels a node gives its requests): not its managed fields; nor its
// annotations, owners, finalizers or other labels, which whoever may write the request could
// fill up to the API server's 256 KiB of annotations, and more of the others; nor the copies
// of the matched AccessPolicies in its status (the controller's), as large as a tenant's
// policy, times every request of the node's Pods that policy gates. The schema bounds the
// spec's strings; a spec larger than those bounds allow (a request written before them) is
// kept empty, which names no Pod and so is no request of the node's.
func keptRequest(ar *v1alpha1.AccessRequest) *v1alpha1.AccessRequest {
	ar.ManagedFields, ar.Annotations, ar.Status.Policies = nil, nil, nil
	ar.OwnerReferences, ar.Finalizers, ar.GenerateName = nil, nil, ""
	maps.DeleteFunc(ar.Labels, func(key, _ string) bool { return !slices.Contains(requestLabelKeys, key) })
	if specBytes(&ar.Spec) > maxRequestSpecBytes {
		ar.Spec = v1alpha1.AccessRequestSpec{}
	}
	return ar
}

// maxRequestSpecBytes is more than the strings of a spec within the schema's bounds add up to
// (apiVersion, uid, resourceVersion and fieldPath 256 each at most, names 253, namespaces 63,
// kinds and groups fewer than 320).
const maxRequestSpecBytes = 4 << 10

// specBytes adds up the lengths of a request spec's strings.
func specBytes(s *v1alpha1.AccessRequestSpec) int {
	o := s.Context.ObjectRef
	return len(s.Subject.Kind) + len(s.Subject.APIGroup) + len(s.Subject.Name) + len(s.Subject.Namespace) +
		len(s.ConnectorRef.Name) + len(o.APIVersion) + len(o.Kind) + len(o.Name) + len(o.Namespace) + len(o.UID) +
		len(o.ResourceVersion) + len(o.FieldPath)
}

// requestLabelKeys are the labels a node gives the requests it makes (approval.Gate).
var requestLabelKeys = []string{v1alpha1.LabelNode, v1alpha1.LabelAccessRequestConnector,
	v1alpha1.LabelContextObjectKind, v1alpha1.LabelContextObjectNamespace, v1alpha1.LabelContextObjectName}
