package admission

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Live reads of each namespace: at most liveReadsPerNamespace a second, a burst of twice that;
// Secret reviews (secretReadable) at most secretReviewsPerNamespace a second, a burst of
// secretReviewBurst (a kubectl apply of a namespace's Connectors at once); for the Connectors
// of up to liveTurnNamespaces namespaces at once.
const (
	liveReadsPerNamespace     = 1
	secretReviewsPerNamespace = 2
	secretReviewBurst         = 20
	liveTurnNamespaces        = 4096
)

// namespaceTurns paces each namespace's live class reads (or Secret reviews). Anyone who may create a Connector
// may have reviews sent (a server-side dry run writes nothing and still calls the webhook),
// and a loop of one tenant's naming classes the cache has not seen would otherwise spend the
// Live rate limit that every tenant's applies share: a Connector applied with its new class
// would then be refused. Written here: a keyed limiter is a few lines over x/time/rate.
type namespaceTurns struct {
	mu       sync.Mutex
	limiters *lru.Cache[string, *rate.Limiter]
	perSec   rate.Limit
	burst    int
}

func newNamespaceTurns(perSec float64, burst int) *namespaceTurns {
	limiters, _ := lru.New[string, *rate.Limiter](liveTurnNamespaces)
	return &namespaceTurns{limiters: limiters, perSec: rate.Limit(perSec), burst: burst}
}

// turnWait is how long a review waits for its namespace's turn: within the API server's
// timeout of the webhook (10 s in deploy/), so that a review whose turn would come later is
// answered that it had none, rather than the API server's timeout.
const turnWait = 8 * time.Second

// wait waits for the namespace's next turn, or says at once it would not come within turnWait
// (or before ctx ends).
func (t *namespaceTurns) wait(ctx context.Context, namespace string) error {
	ctx, cancel := context.WithTimeout(ctx, turnWait)
	defer cancel()
	t.mu.Lock()
	l, ok := t.limiters.Get(namespace)
	if !ok {
		l = rate.NewLimiter(t.perSec, t.burst)
		t.limiters.Add(namespace, l)
	}
	t.mu.Unlock()
	return l.Wait(ctx)
}
