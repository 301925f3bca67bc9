package objectcache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// follower keeps one object, by name: a list of it (a field selector on its name) and a watch
// from the list's resource version. The API server's watch cache indexes such a watch by
// namespace and name, so a change of an object goes only to the nodes that watch it; a watch
// selecting by label goes to every watcher of the kind, to be filtered there (with 5,000
// nodes, 5,000 times per change).
//
// Written here rather than with an informer (client-go's reflector, queue and controller),
// which for one object has nothing to queue, index or resync: an informer's watch runs seven
// goroutines (reflector, resync, controller loop, queue closer, a context's propagation and
// the watch stream's two), this loop with client-go's RetryWatcher, which carries the watch
// across its ends and restarts, four. A node has a watch per Connector its volumes use: with
// 200, that is 600 goroutines and about 4 MiB of memory less (docs/benchmarks.md).
type follower struct {
	client client.WithWatch
	nn     types.NamespacedName
	// kind names the object in logs; newList makes an empty list of its kind.
	kind    string
	newList func() client.ObjectList
	// set is told of the object (nil: there is none) after each list and at each event;
	// listed after each list.
	set    func(client.Object)
	listed func()
	// pause waits d before a watch attempt that follows a failed one (nil: a timer); tests
	// record it.
	pause func(ctx context.Context, d time.Duration) error
}

// run keeps the object until ctx ends: it lists it, unless it was listed at listedAt, and
// watches on from the list's resource version; when the watch cannot go on (the version is
// gone from the API server, a refusal) it lists again, after a backoff when that happens again
// soon.
func (f follower) run(ctx context.Context, listedAt string) {
	backoff, seen := followBackoff, listedAt
	for ctx.Err() == nil {
		began := time.Now()
		rv, err := listedAt, error(nil)
		if rv == "" {
			rv, err = f.list(ctx, seen)
		}
		listedAt = ""
		switch {
		case err != nil && ctx.Err() == nil:
			klog.FromContext(ctx).Error(err, "Could not list an object the node follows; trying again", "kind", f.kind, "object", f.nn)
			seen = "" // a version the API server cannot serve (an etcd restored from a backup): a consistent list next
		case err == nil:
			seen, err = f.watchFrom(ctx, rv)
			if !apierrors.IsGone(err) && !apierrors.IsResourceExpired(err) {
				// Only a 410 proves seen older than the serving watch cache (which then lists
				// at once). After another end (a 401 or 403 at a watch's start), seen may be
				// etcd's revision from a consistent list, which the watch cache of a kind with no
				// change since has not reached: a list not older than it waits, answers 504,
				// and client-go retries that for tens of seconds. A consistent list falls back
				// to etcd.
				seen = ""
			}
			if ctx.Err() == nil {
				klog.FromContext(ctx).V(2).Info("The watch of an object ended; listing it again", "kind", f.kind, "object", f.nn, "err", err)
			}
		}
		if ctx.Err() != nil {
			return
		}
		pause := backoff.Step()
		if time.Since(began) > followHealthy {
			// A watch that lasted ended, mostly because an API server restarted: every
			// follower of every node it served lists again, spread over followSpread.
			backoff = followBackoff
			pause = backoff.Step() + rand.N(followSpread)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// followBackoff spaces the lists of an object whose watch keeps ending, as client-go's
// reflector spaces its own (0.8 s doubling up to 30 s, jittered); followHealthy is how long a
// list and watch must have lasted for the next to start without waiting.
var followBackoff = wait.Backoff{Duration: 800 * time.Millisecond, Factor: 2, Jitter: 1, Steps: math.MaxInt32, Cap: 30 * time.Second}

const followHealthy = 2 * time.Minute

// followSpread is how long the watches a restarted API server ended start again over (and
// the lists after them): with 5,000 nodes of a few hundred followers each, a million within
// a second otherwise. An object's change in the meantime is seen when its watch starts again
// from the version it saw.
const followSpread = 5 * time.Second

// list reads the object into set, tells listed, and returns the list's resource version. The
// first list is a consistent one (no resource version): an object read right after it was
// created is found, and the API server serves it from its watch cache (consistent reads from
// cache, on by default since Kubernetes 1.31) once that has caught up. A list again, after a
// watch ended (an API server restarted: every follower of every node lists at once), is of a
// version not older than the one seen last, which the watch cache serves as it is, without a
// read of etcd's current version first.
func (f follower) list(ctx context.Context, seen string) (resourceVersion string, err error) {
	found, resourceVersion, err := listOneNotOlderThan(ctx, f.client, f.nn, f.newList(), seen)
	if err != nil {
		return "", err
	}
	f.set(found)
	f.listed()
	return resourceVersion, nil
}

// anyVersion asks a list for whatever version the API server's watch cache holds.
const anyVersion = "0"

// listOne lists the object nn into list (a field selector on its name, a consistent list) with
// r: nil when there is none.
func listOne(ctx context.Context, r client.Reader, nn types.NamespacedName, list client.ObjectList) (client.Object, string, error) {
	return listOneNotOlderThan(ctx, r, nn, list, "")
}

// listOneNotOlderThan is listOne of a version not older than seen ("": a consistent list;
// anyVersion: whatever the watch cache holds, without waiting for it to catch up with one).
func listOneNotOlderThan(ctx context.Context, r client.Reader, nn types.NamespacedName, list client.ObjectList, seen string) (client.Object, string, error) {
	if nn.Namespace == "" {
		// InNamespace("") would list every namespace's objects of the name.
		return nil, "", fmt.Errorf("no namespace for %s", nn.Name)
	}
	raw := metav1.ListOptions{FieldSelector: nameSelector(nn)}
	switch seen {
	case "":
	case anyVersion:
		raw.ResourceVersion = anyVersion
	default:
		raw.ResourceVersion, raw.ResourceVersionMatch = seen, metav1.ResourceVersionMatchNotOlderThan
	}
	if err := r.List(ctx, list, client.InNamespace(nn.Namespace), &client.ListOptions{Raw: &raw}); err != nil {
		return nil, "", err
	}
	var found client.Object
	err := meta.EachListItem(list, func(obj runtime.Object) error {
		if o, ok := obj.(client.Object); ok && found == nil && isObject(o, nn) {
			found = o
		}
		return nil
	})
	return found, list.GetResourceVersion(), err
}

// watchFrom follows the object's changes from resourceVersion into set until ctx ends or the
// watch cannot go on (its error), and returns the last resource version it saw. RetryWatcher starts a watch again a second after one that
// could not start (the API server away, a 429, a 5xx), every second, without jitter: with
// thousands of objects followed per node, an outage would be thousands of attempts a second
// from every node at once. So an attempt after a failed one waits followBackoff's next step
// first (jittered, doubling to 30 s); one that started resets it. An attempt after a watch that
// ended waits up to followSpread, at random.
func (f follower) watchFrom(ctx context.Context, resourceVersion string) (seen string, err error) {
	seen = resourceVersion
	backoff, failed, started := followBackoff, false, false
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		pause := time.Duration(0)
		switch {
		case failed:
			pause = backoff.Step()
		case started: // the watch ended (an API server restarted: every watch it served at once)
			pause = rand.N(followSpread)
		}
		started = true
		if pause > 0 {
			if err := f.wait(ctx, pause); err != nil {
				return nil, err
			}
		}
		opts.FieldSelector = nameSelector(f.nn)
		w, err := f.client.Watch(ctx, f.newList(), client.InNamespace(f.nn.Namespace), &client.ListOptions{Raw: &opts})
		if failed = err != nil; !failed {
			backoff = followBackoff
		}
		return w, err
	}}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, resourceVersion, lw)
	if err != nil {
		return seen, err
	}
	defer rw.Stop()
	for event := range rw.ResultChan() {
		obj, isObj := event.Object.(client.Object)
		if isObj && event.Type != watch.Error && obj.GetResourceVersion() != "" {
			seen = obj.GetResourceVersion()
		}
		switch event.Type {
		case watch.Added, watch.Modified:
			if isObj && isObject(obj, f.nn) {
				f.set(obj)
			}
		case watch.Deleted:
			if !isObj || isObject(obj, f.nn) {
				f.set(nil)
			}
		case watch.Error:
			return seen, apierrors.FromObject(event.Object)
		}
	}
	return seen, errors.New("the watch stopped")
}

// entry is what the caches keep of each object they watch besides the object: when its first
// list ended, how to stop its watch, and when a reader last read it.
type entry struct {
	synced   chan struct{}
	stop     context.CancelFunc
	lastRead time.Time
}

func (e *entry) base() *entry { return e }

// marked returns nn's entry of m, marked read at now, or nil when there is none; mu guards m.
func marked[E interface{ base() *entry }](mu *sync.Mutex, m map[types.NamespacedName]E, nn types.NamespacedName, now func() time.Time) E {
	mu.Lock()
	defer mu.Unlock()
	e, ok := m[nn]
	if ok {
		e.base().lastRead = now()
	}
	return e
}

// start makes e follow nn with a follower that tells set of the object (nil: none): from
// listed, at listedAt, when that is set (e is synced at once), else from a list. The kind is
// T's: a Connector or an AccessRequest, the objects a node follows one by one.
func start[T client.Object](e *entry, c client.WithWatch, nn types.NamespacedName, listed T, listedAt string, set func(T)) {
	ctx, stop := context.WithCancel(context.Background())
	e.synced, e.stop = make(chan struct{}), stop
	if listedAt != "" {
		set(listed)
		close(e.synced)
	}
	kind, newList := kindOf(listed)
	f := follower{client: c, nn: nn, kind: kind, newList: newList,
		set: func(obj client.Object) {
			t, _ := obj.(T)
			set(t)
		},
		listed: func() { closeOnce(e.synced) }}
	go f.run(ctx, listedAt)
}

// kindOf names the kind of a T, and makes its lists.
func kindOf(obj client.Object) (string, func() client.ObjectList) {
	switch obj.(type) {
	case *v1alpha1.AccessRequest:
		return "AccessRequest", func() client.ObjectList { return &v1alpha1.AccessRequestList{} }
	default:
		return "Connector", func() client.ObjectList { return &v1alpha1.ConnectorList{} }
	}
}

// closeOnce closes ch unless it is closed already (by the one goroutine that may close it).
func closeOnce(ch chan struct{}) {
	if !isClosed(ch) {
		close(ch)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// listed tells whether e's first list ended.
func (e *entry) listed() bool { return isClosed(e.synced) }

// waitSynced waits for e's first list, or fails naming what (kind and name) when ctx ends first.
func (e *entry) waitSynced(ctx context.Context, what string) error {
	select {
	case <-e.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("watch of %s did not sync: %w", what, ctx.Err())
	}
}

// isObject tells whether obj is nn: what a list or watch of nn returns is checked, not trusted.
func isObject(obj client.Object, nn types.NamespacedName) bool {
	return obj.GetName() == nn.Name && obj.GetNamespace() == nn.Namespace
}

// wait waits d, or until ctx ends (its error).
func (f follower) wait(ctx context.Context, d time.Duration) error {
	if f.pause != nil {
		return f.pause(ctx, d)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func nameSelector(nn types.NamespacedName) string {
	return fields.OneTermEqualSelector("metadata.name", nn.Name).String()
}
