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

// New is a controller-runtime NewQueue (controller.Options) whose items wait in turns by
// namespace. urgent, when not nil, tells the items that go first within their namespace's turns
// (something waits on them, such as a publish on a request never evaluated). Urgency never
// takes a turn from another namespace: were urgent items served before all others, a tenant
// creating objects faster than they are reconciled would hold every other tenant's work back.
func New(urgent func(reconcile.Request) bool) func(string, workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	return func(name string, limiter workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
		order := newTurns(func(r reconcile.Request) string { return r.Namespace }, urgent)
		queue := workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[reconcile.Request]{Name: name, Queue: order})
		delaying := workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[reconcile.Request]{Name: name, Queue: queue})
		return workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name, DelayingQueue: delaying})
	}
}

// turns orders waiting items: one item of each key in turn, and within a key the urgent ones
// first, each kind first in first out. The work queue calls it under its lock.
type turns[T comparable] struct {
	keyOf  func(T) string
	urgent func(T) bool
	// waiting holds the items of each key that has some; ring the keys in the order of their
	// turns.
	waiting map[string]*keyItems[T]
	ring    []string
	len     int
}

// keyItems are one key's waiting items: the urgent ones, then the rest.
type keyItems[T comparable] struct {
	urgent, rest []T
}

var _ workqueue.Queue[reconcile.Request] = (*turns[reconcile.Request])(nil)

func newTurns[T comparable](keyOf func(T) string, urgent func(T) bool) *turns[T] {
	return &turns[T]{keyOf: keyOf, urgent: urgent, waiting: map[string]*keyItems[T]{}}
}

// Touch: an item added again while it waits keeps its place.
func (t *turns[T]) Touch(T) {}

func (t *turns[T]) Push(item T) {
	key := t.keyOf(item)
	k, ok := t.waiting[key]
	if !ok {
		k = &keyItems[T]{}
		t.waiting[key] = k
		t.ring = append(t.ring, key)
	}
	if t.urgent != nil && t.urgent(item) {
		k.urgent = append(k.urgent, item)
	} else {
		k.rest = append(k.rest, item)
	}
	t.len++
}

func (t *turns[T]) Len() int { return t.len }

// Pop takes the next item; the work queue calls it only when Len is not 0.
func (t *turns[T]) Pop() T {
	key := t.ring[0]
	t.ring[0] = ""
	t.ring = t.ring[1:]
	k := t.waiting[key]
	var item T
	if len(k.urgent) > 0 {
		item, k.urgent = first(k.urgent)
	} else {
		item, k.rest = first(k.rest)
	}
	if len(k.urgent)+len(k.rest) == 0 {
		delete(t.waiting, key)
	} else {
		t.ring = append(t.ring, key)
	}
	t.len--
	return item
}

// first takes a slice's first item, letting go of its slot.
func first[T any](items []T) (T, []T) {
	item := items[0]
	var zero T
	items[0] = zero
	return item, items[1:]
}
