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
	"github.com/kube-connectors/connectors-csi/fairqueue"
)

// A recheck is an evaluation of a live request that nothing woke: its PodRecheck came due, or
// the cache listed it again (a new leader's start, a resync). Every evaluation reads the Pod
// and its Tekton owners from the API server, which is nothing for one request and, at 10,000
// live gated Pods and a 5-minute interval, about 100 reads a second: past --kube-api-qps, with
// every approval waiting behind them in the client's rate limiter. Rechecks therefore take
// turns of their own (Controller.Rechecks: a token each, in turns by namespace, never waited
// for by a worker) and read through a client of their own (RecheckReader). An evaluation an
// event woke (a change of a check object, a policy, a Connector, a template, the request
// itself), a request never evaluated and one a node marked unpublished go as before. Past the
// rate, rechecks come further apart; the Pod's end is still seen at once through its unpublish
// and its token.

// rechecksDeferred counts rechecks put off to a later turn.
var rechecksDeferred = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "connectors_accessrequest_rechecks_deferred_total",
	Help: "Rechecks of live AccessRequests (nothing woke them) put off to a later turn of --accessrequest-pod-recheck-qps.",
})

func init() { prometheus.MustRegister(rechecksDeferred) }

// recheckTurns hands out the rechecks' turns of limit (nil: no pace), every interval, and
// remembers which requests an event woke. A deferred recheck waits in waiting, in turns by
// namespace (and within one by the same turns as the controller's queue): the dispatcher gives
// the next in turn its turn of limit and brings it back to the controller's queue. Turns given
// as they come (a reservation each) would put a tenant's recheck behind every other tenant's
// already deferred, so that one tenant with many live Pods would push back every tenant's: the
// rechecks are the backstop for a Pod that ends without its unpublish (a lost node).
type recheckTurns struct {
	limit *rate.Limiter
	every time.Duration
	now   func() time.Time
	// woken holds the requests an event woke since their last evaluation began.
	woken sync.Map // types.NamespacedName → struct{}
	// waiting is where deferred rechecks wait for their turns (fairqueue's order).
	waiting queue
	mu      sync.Mutex
	// deferred holds the rechecks waiting for a turn, granted those given one and not yet
	// evaluated: an item of waiting that is in neither was woken meanwhile, and is passed over.
	deferred, granted map[types.NamespacedName]bool
	// evaluated holds when each live request's last evaluation began.
	evaluated map[types.NamespacedName]time.Time
}

// recheckQueueName names the deferred rechecks' queue in the work queue metrics
// (workqueue_depth{name="accessrequest_rechecks"}: how many wait for a turn).
const recheckQueueName = "accessrequest_rechecks"

// paced sets the pace, and the waiting rechecks' queue in turns as place orders them.
func (r *recheckTurns) paced(limit *rate.Limiter, every time.Duration, place func(reconcile.Request) fairqueue.Placement) {
	r.limit, r.every = limit, every
	if limit != nil {
		r.waiting = fairqueue.New(place)(recheckQueueName, workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	}
}

// dispatcher is the controller's source of rechecks given their turns: until ctx ends, it
// takes the next deferred recheck in turn, waits for a turn of the pace and adds it to the
// controller's queue.
func (r *recheckTurns) dispatcher(ctx context.Context, to queue) error {
	if r.waiting == nil {
		return nil
	}
	go func() {
		<-ctx.Done()
		r.waiting.ShutDown()
	}()
	go func() {
		for {
			req, shutdown := r.waiting.Get()
			if shutdown {
				return
			}
			if r.wants(req.NamespacedName) && r.paceWait(ctx) && r.give(req.NamespacedName) {
				to.Add(req)
			}
			r.waiting.Done(req)
		}
	}()
	return nil
}

// paceWait waits for a turn of the pace; false only when ctx ended. A limiter that cannot give
// one (a burst of 0) gives the turn at once rather than leave the recheck deferred for good.
func (r *recheckTurns) paceWait(ctx context.Context) bool {
	if r.limit.Tokens() < 1 {
		rechecksDeferred.Inc() // no turn free now: this one comes later than it was due
	}
	err := r.limit.Wait(ctx)
	return err == nil || ctx.Err() == nil
}

// wants tells whether key still waits for a turn.
func (r *recheckTurns) wants(key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deferred[key]
}

// give gives key its turn, unless it was woken while the dispatcher waited for the pace.
func (r *recheckTurns) give(key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.deferred[key] {
		return false
	}
	delete(r.deferred, key)
	r.granted = setKey(r.granted, key)
	return true
}

func setKey(m map[types.NamespacedName]bool, key types.NamespacedName) map[types.NamespacedName]bool {
	if m == nil {
		m = map[types.NamespacedName]bool{}
	}
	m[key] = true
	return m
}

// stale is the part of the interval within which a recheck after an evaluation is a timer set
// before it (the recheck of an evaluation an event then woke: the work queue keeps the earlier
// of two delays), not yet due: rechecks are jittered by up to a fifth.
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
// rather than watches is no recheck) and, for one, whether it goes now, after wait (a timer set
// before the last evaluation waits for the interval from it), or deferred: the dispatcher
// brings it back in its turn. A recheck given its turn takes it; an evaluation an event woke
// drops its request's place among the deferred.
func (r *recheckTurns) turn(ar *v1alpha1.AccessRequest, woken bool) (recheck bool, wait time.Duration, deferred bool) {
	key := client.ObjectKeyFromObject(ar)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock()
	if woken || len(ar.Status.Conditions) == 0 || revoked(ar) || ar.Annotations[AnnotationRevoked] != "" {
		r.release(key)
		if !revoked(ar) {
			r.began(key, now)
		}
		return false, 0, false
	}
	if r.waiting == nil || r.granted[key] {
		delete(r.granted, key)
		r.began(key, now)
		return true, 0, false
	}
	if r.deferred[key] {
		return true, 0, true // already waiting: its timer came again, or a resync
	}
	if last, ok := r.evaluated[key]; ok && now.Sub(last) < time.Duration(stale*float64(r.every)) {
		return true, last.Add(r.every).Sub(now), false
	}
	r.deferred = setKey(r.deferred, key)
	r.waiting.Add(reconcile.Request{NamespacedName: key})
	return true, 0, true
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

// release drops key's place among the deferred, a turn given it, and its last evaluation;
// r.mu is held.
func (r *recheckTurns) release(key types.NamespacedName) {
	delete(r.deferred, key)
	delete(r.granted, key)
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
