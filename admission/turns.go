package admission

import (
	"context"
	"time"

	"github.com/kube-connectors/connectors-csi/turns"
)

// Live reads of each namespace: at most liveReadsPerNamespace a second, a burst of twice that;
// Secret reviews (secretReadable) at most secretReviewsPerNamespace a second, a burst of
// secretReviewBurst (a kubectl apply of a namespace's Connectors at once).
//
// Anyone who may create a Connector may have reviews sent (a server-side dry run writes nothing
// and still calls the webhook), and a loop of one tenant's naming classes the cache has not
// seen would otherwise spend the Live rate limit that every tenant's applies share: a Connector
// applied with its new class would then be refused.
const (
	liveReadsPerNamespace     = 1
	secretReviewsPerNamespace = 2
	secretReviewBurst         = 20
)

// turnWait is how long a review waits for its namespace's turn: within the API server's
// timeout of the webhook (10 s in deploy/), so that a review whose turn would come later is
// answered that it had none, rather than the API server's timeout.
const turnWait = 8 * time.Second

// waitTurn waits for the namespace's next turn, or says at once it would not come within
// turnWait (or before ctx ends).
func waitTurn(ctx context.Context, t *turns.ByNamespace, namespace string) error {
	ctx, cancel := context.WithTimeout(ctx, turnWait)
	defer cancel()
	return t.Wait(ctx, namespace)
}
