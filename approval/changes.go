package approval

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Changes tells the publishes waiting on an AccessRequest that it changed. The node's cache of
// its own AccessRequests (objectcache.Requests, a watch of each by name) feeds it, so a
// waiting publish needs no watch of its own.
type Changes struct {
	mu   sync.Mutex
	subs map[types.NamespacedName]map[chan struct{}]struct{}
}

// NewChanges returns an empty Changes.
func NewChanges() *Changes {
	return &Changes{subs: map[types.NamespacedName]map[chan struct{}]struct{}{}}
}

// Subscribe returns a channel that receives (without blocking the sender) after each change of
// the request, and a function to unsubscribe.
func (c *Changes) Subscribe(nn types.NamespacedName) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	if c.subs[nn] == nil {
		c.subs[nn] = map[chan struct{}]struct{}{}
	}
	c.subs[nn][ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs[nn], ch)
		if len(c.subs[nn]) == 0 {
			delete(c.subs, nn)
		}
		c.mu.Unlock()
	}
}

// Notify wakes the subscribers of a request.
func (c *Changes) Notify(nn types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.subs[nn] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}
