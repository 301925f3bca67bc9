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
// namespace. urgent, when not nil, tells the items that go before every other (something waits
// on them, such as a publish on a request never evaluated); the turns are kept among them too.
func New(urgent func(reconcile.Request) bool) func(string, workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	return func(name string, limiter workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
		order := newTurns(func(r reconcile.Request) string { return r.Namespace }, urgent)
		queue := workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[reconcile.Request]{Name: name, Queue: order})
		delaying := workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[reconcile.Request]{Name: name, Queue: queue})
		return workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name, DelayingQueue: delaying})
	}
}

// turns orders waiting items: the urgent ones first, and within each of the two levels one item
// of each key in turn, first in first out within a key. The work queue calls it under its lock.
type turns[T comparable] struct {
	keyOf  func(T) string
	urgent func(T) bool
	levels [2]level[T]
}

var _ workqueue.Queue[reconcile.Request] = (*turns[reconcile.Request])(nil)

func newTurns[T comparable](keyOf func(T) string, urgent func(T) bool) *turns[T] {
	t := &turns[T]{keyOf: keyOf, urgent: urgent}
	for i := range t.levels {
		t.levels[i].waiting = map[string][]T{}
	}
	return t
}

// Touch: an item added again while it waits keeps its place.
func (t *turns[T]) Touch(T) {}

func (t *turns[T]) Push(item T) {
	l := &t.levels[1]
	if t.urgent != nil && t.urgent(item) {
		l = &t.levels[0]
	}
	l.push(t.keyOf(item), item)
}

func (t *turns[T]) Len() int { return t.levels[0].len + t.levels[1].len }

// Pop takes the next item; the work queue calls it only when Len is not 0.
func (t *turns[T]) Pop() T {
	if t.levels[0].len > 0 {
		return t.levels[0].pop()
	}
	return t.levels[1].pop()
}

// level holds waiting items by key, and the keys with items in the order of their turns.
type level[T comparable] struct {
	waiting map[string][]T
	ring    []string
	len     int
}

func (l *level[T]) push(key string, item T) {
	items, ok := l.waiting[key]
	if !ok {
		l.ring = append(l.ring, key)
	}
	l.waiting[key] = append(items, item)
	l.len++
}

func (l *level[T]) pop() T {
	key := l.ring[0]
	l.ring[0] = ""
	l.ring = l.ring[1:]
	items := l.waiting[key]
	item := items[0]
	var zero T
	items[0] = zero // let the popped item go
	if len(items) == 1 {
		delete(l.waiting, key)
	} else {
		l.waiting[key] = items[1:]
		l.ring = append(l.ring, key)
	}
	l.len--
	return item
}
