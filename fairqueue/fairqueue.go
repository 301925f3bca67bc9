// Package fairqueue is a controller's work queue that hands its items out in turns by
// namespace, so that a tenant with many items to reconcile delays another tenant's by about one
// reconcile per worker, not by its whole backlog.
//
// It is client-go's work queue (which keeps an item once while it waits, and never to two workers
// at once), its delays and its rate limits, with only the order of waiting items chosen here:
// client-go lets that part be replaced (workqueue.Queue) and has no fair order of its own, and
// controller-runtime's priority queue, its default, is first-in first-out within a priority.
package fairqueue

import (
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Placement is where a waiting item goes within its namespace's turns.
type Placement struct {
	// Within names a turn inside the namespace's: the requests of every tenant that uses a
	// shared Connector live in the Connector's namespace, and take turns there by their Pods'.
	Within string
	// Urgent items go first within their turn (something waits on them, such as a publish on
	// a request never evaluated). Urgency takes no turn from another: were urgent items served
	// before all others, a tenant creating objects faster than they are reconciled would hold
	// every other tenant's work back.
	Urgent bool
}

// New is a controller-runtime NewQueue (controller.Options) whose items wait in turns by
// namespace, and within a namespace's by place(item).Within (nil: one turn per namespace).
// place is called under the work queue's lock: it must be quick and must not add to the queue.
func New(place func(reconcile.Request) Placement) func(string, workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	return func(name string, limiter workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
		order := &turns{place: place}
		queue := workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[reconcile.Request]{Name: name, Queue: order})
		delaying := workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[reconcile.Request]{Name: name, Queue: queue})
		return workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name, DelayingQueue: delaying})
	}
}

// turns orders waiting items: one item of each namespace in turn, within a namespace one of
// each Within in turn, within that the urgent ones first, each kind first in first out. The work
// queue calls it under its lock.
type turns struct {
	place      func(reconcile.Request) Placement
	namespaces rotation[rotation[waiting]]
	len        int
}

var _ workqueue.Queue[reconcile.Request] = (*turns)(nil)

// waiting are the items of one turn: the urgent ones, then the rest.
type waiting struct {
	urgent, rest []reconcile.Request
}

func (w *waiting) empty() bool { return len(w.urgent)+len(w.rest) == 0 }

// Touch: an item added again while it waits keeps its place.
func (t *turns) Touch(reconcile.Request) {}

func (t *turns) Push(item reconcile.Request) {
	var p Placement
	if t.place != nil {
		p = t.place(item)
	}
	w := t.namespaces.entry(item.Namespace).entry(p.Within)
	if p.Urgent {
		w.urgent = append(w.urgent, item)
	} else {
		w.rest = append(w.rest, item)
	}
	t.len++
}

func (t *turns) Len() int { return t.len }

// Pop takes the next item; the work queue calls it only when Len is not 0.
func (t *turns) Pop() reconcile.Request {
	ns := t.namespaces.take()
	w := ns.take()
	var item reconcile.Request
	if len(w.urgent) > 0 {
		item, w.urgent = first(w.urgent)
	} else {
		item, w.rest = first(w.rest)
	}
	ns.pass(w.empty())
	t.namespaces.pass(ns.empty())
	t.len--
	return item
}

// rotation holds entries by key, and the keys with something waiting in the order of their
// turns. take gives the entry whose turn it is; pass ends that turn, keeping the key's place at
// the end unless its entry is empty.
type rotation[V any] struct {
	entries map[string]*V
	order   []string
}

func (r *rotation[V]) entry(key string) *V {
	if r.entries == nil {
		r.entries = map[string]*V{}
	}
	e, ok := r.entries[key]
	if !ok {
		e = new(V)
		r.entries[key] = e
		r.order = append(r.order, key)
	}
	return e
}

func (r *rotation[V]) take() *V { return r.entries[r.order[0]] }

func (r *rotation[V]) pass(empty bool) {
	key := r.order[0]
	r.order[0] = ""
	r.order = r.order[1:]
	if empty {
		delete(r.entries, key)
	} else {
		r.order = append(r.order, key)
	}
}

func (r *rotation[V]) empty() bool { return len(r.order) == 0 }

// first takes a slice's first item, letting go of its slot.
func first[T any](items []T) (T, []T) {
	item := items[0]
	var zero T
	items[0] = zero
	return item, items[1:]
}
