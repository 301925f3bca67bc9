package approval

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// A recheck is an evaluation of a live request that nothing woke: its PodRecheck came due, or
// the cache listed it again (a new leader's start, a resync). Every evaluation reads the Pod
// and its Tekton owners from the API server, which is nothing for one request and, at 10,000
// live gated Pods and a 5-minute interval, about 100 reads a second: past --kube-api-qps, with
// every approval waiting behind them in the client's rate limiter. Rechecks therefore take
// turns of their own (Controller.Rechecks: a token each, never waited for by a worker) and
// read through a client of their own (RecheckReader); an evaluation an event woke (a check
// object, a policy, a Connector, a template, the request itself) and a request never
// evaluated go as before. Past the rate, rechecks come further apart, each in its reserved
// turn; the Pod's end is still seen at once through its unpublish and its token.

// rechecksDeferred counts rechecks put off to a later turn.
var rechecksDeferred = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "connectors_accessrequest_rechecks_deferred_total",
	Help: "Rechecks of live AccessRequests (nothing woke them) put off to a later turn of --accessrequest-pod-recheck-qps.",
})

func init() { prometheus.MustRegister(rechecksDeferred) }

// recheckTurns hands out the rechecks' turns and remembers which requests an event woke.
type recheckTurns struct {
	// woken holds the requests an event woke since their last evaluation began.
	woken sync.Map // types.NamespacedName → struct{}
	mu    sync.Mutex
	// reserved holds the turn a deferred recheck reserved, taken when it comes back.
	reserved map[types.NamespacedName]*rate.Reservation
}

// wake marks the requests an event maps to as woken.
func (r *recheckTurns) wake(requests []reconcile.Request) []reconcile.Request {
	for _, req := range requests {
		r.woken.Store(req.NamespacedName, struct{}{})
	}
	return requests
}

// waking is fn marking what it returns as woken.
func (r *recheckTurns) waking(fn handler.MapFunc) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request { return r.wake(fn(ctx, o)) }
}

// wakeOnUpdate marks a request whose update passed as woken, unless it is the informer's
// resync (the same resourceVersion): that one is a recheck.
func (r *recheckTurns) wakeOnUpdate(e event.UpdateEvent, pass bool) bool {
	if pass && e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion() {
		r.wake([]reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(e.ObjectNew)}})
	}
	return pass
}

// turn tells whether the evaluation of ar beginning now is a recheck (nothing woke it; it was
// evaluated before, is live and not to be revoked: a node's unpublish that a new leader lists
// rather than watches is no recheck) and, for one, how long to wait for its turn of limit (0:
// now). A recheck that comes back for its reserved turn takes it; an evaluation an event woke
// gives back a turn its request reserved.
func (r *recheckTurns) turn(limit *rate.Limiter, ar *v1alpha1.AccessRequest) (recheck bool, wait time.Duration) {
	key := client.ObjectKeyFromObject(ar)
	_, woken := r.woken.LoadAndDelete(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	reserved := r.reserved[key]
	if woken || len(ar.Status.Conditions) == 0 || revoked(ar) || ar.Annotations[AnnotationRevoked] != "" {
		if reserved != nil {
			reserved.Cancel()
			delete(r.reserved, key)
		}
		return false, 0
	}
	if limit == nil {
		return true, 0
	}
	if reserved == nil {
		reserved = limit.Reserve()
	}
	if wait = reserved.Delay(); wait > 0 {
		if r.reserved == nil {
			r.reserved = map[types.NamespacedName]*rate.Reservation{}
		}
		r.reserved[key] = reserved
		rechecksDeferred.Inc()
		return true, wait
	}
	delete(r.reserved, key)
	return true, 0
}

// retry marks a request whose evaluation is to be tried again (an error, or a retry it asked
// for) as woken: a retry is not a recheck, and waits for no turn.
func (r *recheckTurns) retry(key types.NamespacedName) {
	r.woken.Store(key, struct{}{})
}

// forget drops what is kept of a deleted request.
func (r *recheckTurns) forget(key types.NamespacedName) {
	r.woken.Delete(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if reserved := r.reserved[key]; reserved != nil {
		reserved.Cancel()
		delete(r.reserved, key)
	}
}

// recheckReaderKey marks an evaluation's context as a recheck's: what it reads live (its Pod
// and owners; the grant a request that holds none deletes) is read through
// Controller.RecheckReader.
type recheckReaderKey struct{}

// readerFor is RecheckReader in a recheck's evaluation (ctx), else usual.
func readerFor(ctx context.Context, usual client.Reader) client.Reader {
	if r, ok := ctx.Value(recheckReaderKey{}).(client.Reader); ok {
		return r
	}
	return usual
}

// asRecheck is ctx for a recheck's evaluation.
func (c *Controller) asRecheck(ctx context.Context) context.Context {
	if c.RecheckReader == nil {
		return ctx
	}
	return context.WithValue(ctx, recheckReaderKey{}, c.RecheckReader)
}
