// Package turns paces work by namespace: each namespace has a rate limiter of its own, so that
// one tenant's loop spends its own turns and not a rate every tenant shares. Written here: a
// limiter per key, over x/time/rate, for a bounded number of keys, is a few lines that no
// library keeps in this form.
package turns

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// namespaces bounds the namespaces whose limiters are kept (the most recently used): one
// pushed out starts again with a full burst, which bounds memory, not a tenant's rate, and a
// tenant cannot make namespaces of its own to get more.
const namespaces = 4096

// ByNamespace is a rate limiter of each namespace.
type ByNamespace struct {
	mu       sync.Mutex
	limiters *lru.Cache[string, *rate.Limiter]
	perSec   rate.Limit
	burst    int
}

// New paces each namespace at perSec, with a burst.
func New(perSec float64, burst int) *ByNamespace {
	limiters, _ := lru.New[string, *rate.Limiter](namespaces)
	return &ByNamespace{limiters: limiters, perSec: rate.Limit(perSec), burst: burst}
}

func (t *ByNamespace) limiter(namespace string) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.limiters.Get(namespace)
	if !ok {
		l = rate.NewLimiter(t.perSec, t.burst)
		t.limiters.Add(namespace, l)
	}
	return l
}

// Wait waits for the namespace's next turn, or says at once that it would not come before ctx
// ends.
func (t *ByNamespace) Wait(ctx context.Context, namespace string) error {
	return t.limiter(namespace).Wait(ctx)
}

// AllowWith takes a turn of the namespace and one of shared (a bound over all namespaces) now,
// or neither: a namespace's turn is not spent when the shared one is not there, nor the shared
// one for a namespace whose turn is not.
func (t *ByNamespace) AllowWith(namespace string, shared *rate.Limiter) bool {
	now := time.Now()
	own := t.limiter(namespace).ReserveN(now, 1)
	if !own.OK() || own.DelayFrom(now) > 0 {
		own.CancelAt(now)
		return false
	}
	if all := shared.ReserveN(now, 1); !all.OK() || all.DelayFrom(now) > 0 {
		all.CancelAt(now)
		own.CancelAt(now)
		return false
	}
	return true
}
