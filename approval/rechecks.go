package approval

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
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
// read through a client of their own (RecheckReader); an evaluation an event woke (a change of
// a check object, a policy, a Connector, a template, the request itself), a request never
// evaluated and one a node marked unpublished go as before. Past the rate, rechecks come
// further apart, each in its reserved turn; the Pod's end is still seen at once through its
// unpublish and its token.

// rechecksDeferred counts rechecks put off to a later turn.
var rechecksDeferred = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "connectors_accessrequest_rechecks_deferred_total",
	Help: "Rechecks of live AccessRequests (nothing woke them) put off to a later turn of --accessrequest-pod-recheck-qps.",
})

func init() { prometheus.MustRegister(rechecksDeferred) }

// recheckTurns hands out the rechecks' turns of limit (nil: no pace), every interval, and
// remembers which requests an event woke.
type recheckTurns struct {
	limit *rate.Limiter
	every time.Duration
	now   func() time.Time
	// woken holds the requests an event woke since their last evaluation began.
	woken sync.Map // types.NamespacedName → struct{}
	mu    sync.Mutex
	// reserved holds the turn a deferred recheck reserved, taken when it comes back.
	reserved map[types.NamespacedName]*rate.Reservation
	// evaluated holds when each live request's last evaluation began.
	evaluated map[types.NamespacedName]time.Time
}

// stale is the part of the interval within which a recheck after an evaluation is a timer set
// before it (a deferred turn, or the recheck of an evaluation an event then woke: the work
// queue keeps the earlier of two delays), not yet due: rechecks are jittered by up to a fifth.
const stale = 0.8

// wake marks a request as woken.
func (r *recheckTurns) wake(req reconcile.Request) {
	r.woken.Store(req.NamespacedName, struct{}{})
}

// takeWoken tells whether an event woke the request since its last evaluation began, and
// forgets it: taken before the request is read, an event of a change after that read is kept
// for the next evaluation, which the work queue brings.
func (r *recheckTurns) takeWoken(key types.NamespacedName) bool {
	_, woken := r.woken.LoadAndDelete(key)
	return woken
}

// waking is h marking what it enqueues as woken, but for the events that change nothing: an
// informer's initial list (a new leader's start) and resyncs.
func (r *recheckTurns) waking(h handler.EventHandler) handler.EventHandler {
	return wakingHandler{EventHandler: h, turns: r}
}

// handler is EnqueueRequestsFromMapFunc(fn), waking.
func (r *recheckTurns) handler(fn handler.MapFunc) handler.EventHandler {
	return r.waking(handler.EnqueueRequestsFromMapFunc(fn))
}

type wakingHandler struct {
	handler.EventHandler
	turns *recheckTurns
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

func (h wakingHandler) Create(ctx context.Context, e event.CreateEvent, q queue) {
	h.EventHandler.Create(ctx, e, h.waking(q, !e.IsInInitialList))
}

func (h wakingHandler) Update(ctx context.Context, e event.UpdateEvent, q queue) {
	h.EventHandler.Update(ctx, e, h.waking(q, e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion()))
}

func (h wakingHandler) Delete(ctx context.Context, e event.DeleteEvent, q queue) {
	h.EventHandler.Delete(ctx, e, h.waking(q, true))
}

func (h wakingHandler) Generic(ctx context.Context, e event.GenericEvent, q queue) {
	h.EventHandler.Generic(ctx, e, h.waking(q, true))
}

// waking is q, marking what is added to it as woken when change.
func (h wakingHandler) waking(q queue, change bool) queue {
	if !change {
		return q
	}
	return wakingQueue{queue: q, turns: h.turns}
}

// wakingQueue marks each request as woken before it adds it.
type wakingQueue struct {
	queue
	turns *recheckTurns
}

func (q wakingQueue) Add(req reconcile.Request) {
	q.turns.wake(req)
	q.queue.Add(req)
}

// turn tells whether the evaluation of ar beginning now is a recheck (nothing woke it; it was
// evaluated before, is live and not to be revoked: a node's unpublish that a new leader lists
// rather than watches is no recheck) and, for one, how long to wait for its turn (0: now). A
// recheck that comes back for its reserved turn takes it; a timer set before the last
// evaluation waits for the interval from it, reserving nothing; an evaluation an event woke
// gives back a turn its request reserved.
func (r *recheckTurns) turn(ar *v1alpha1.AccessRequest, woken bool) (recheck bool, wait time.Duration) {
	key := client.ObjectKeyFromObject(ar)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock()
	reserved := r.reserved[key]
	if woken || len(ar.Status.Conditions) == 0 || revoked(ar) || ar.Annotations[AnnotationRevoked] != "" {
		r.release(key)
		if !revoked(ar) {
			r.began(key, now)
		}
		return false, 0
	}
	if r.limit == nil {
		r.began(key, now)
		return true, 0
	}
	if last, ok := r.evaluated[key]; ok && reserved == nil && now.Sub(last) < time.Duration(stale*float64(r.every)) {
		return true, last.Add(r.every).Sub(now)
	}
	if reserved == nil {
		reserved = r.limit.ReserveN(now, 1)
	}
	if wait = reserved.DelayFrom(now); wait > 0 {
		if r.reserved == nil {
			r.reserved = map[types.NamespacedName]*rate.Reservation{}
		}
		r.reserved[key] = reserved
		rechecksDeferred.Inc()
		return true, wait
	}
	delete(r.reserved, key)
	r.began(key, now)
	return true, 0
}

func (r *recheckTurns) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// began records that an evaluation of key begins at now.
func (r *recheckTurns) began(key types.NamespacedName, now time.Time) {
	if r.evaluated == nil {
		r.evaluated = map[types.NamespacedName]time.Time{}
	}
	r.evaluated[key] = now
}

// release gives back the turn key reserved and forgets its last evaluation; r.mu is held.
func (r *recheckTurns) release(key types.NamespacedName) {
	if reserved := r.reserved[key]; reserved != nil {
		reserved.Cancel()
		delete(r.reserved, key)
	}
	delete(r.evaluated, key)
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
	r.release(key)
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
