package approval

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func evaluatedRequest(name string) *v1alpha1.AccessRequest {
	return evaluatedRequestIn("ns", name)
}

func evaluatedRequestIn(ns, name string) *v1alpha1.AccessRequest {
	return &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}}}
}

// dispatched runs turns' dispatcher until the test ends and returns the queue it brings the
// rechecks given their turns to.
func dispatched(t *testing.T, turns *recheckTurns) queue {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	to := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	t.Cleanup(func() { cancel(); to.ShutDown() })
	if err := turns.dispatcher(ctx, to); err != nil {
		t.Fatal(err)
	}
	return to
}

// given takes the next recheck the dispatcher gave a turn.
func given(t *testing.T, to queue) string {
	t.Helper()
	got := make(chan reconcile.Request, 1)
	go func() {
		req, _ := to.Get()
		to.Done(req)
		got <- req
	}()
	select {
	case req := <-got:
		return req.String()
	case <-time.After(10 * time.Second):
		t.Fatal("no recheck was given a turn")
		return ""
	}
}

func TestRecheckTurns(t *testing.T) {
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	var turns recheckTurns
	turns.paced(rate.NewLimiter(rate.Every(time.Hour), 1), 5*time.Minute, nil)
	turns.now = func() time.Time { return now }
	to := dispatched(t, &turns)
	key := func(ar *v1alpha1.AccessRequest) types.NamespacedName { return client.ObjectKeyFromObject(ar) }

	if recheck, wait, deferred := turns.turn(&v1alpha1.AccessRequest{}, false); recheck || wait != 0 || deferred {
		t.Errorf("a request never evaluated: recheck %v, wait %v, deferred %v; want an evaluation now", recheck, wait, deferred)
	}
	a, b := evaluatedRequest("a"), evaluatedRequest("b")
	if recheck, wait, deferred := turns.turn(a, false); !recheck || wait != 0 || !deferred {
		t.Errorf("a recheck: recheck %v, wait %v, deferred %v; want it deferred to its turn", recheck, wait, deferred)
	}
	if got := given(t, to); got != "ns/a" {
		t.Fatalf("the dispatcher gave %s its turn, want ns/a (the burst)", got)
	}
	if recheck, wait, deferred := turns.turn(a, false); !recheck || wait != 0 || deferred {
		t.Errorf("a recheck given its turn: recheck %v, wait %v, deferred %v; want it now", recheck, wait, deferred)
	}
	if _, _, deferred := turns.turn(b, false); !deferred {
		t.Fatal("a recheck past the pace was not deferred")
	}
	if _, _, deferred := turns.turn(b, false); !deferred || turns.waiting.Len() > 1 {
		t.Errorf("a deferred recheck that came back early: deferred %v, %d waiting; want it waiting once", deferred, turns.waiting.Len())
	}
	if recheck, wait, deferred := turns.turn(b, true); recheck || wait != 0 || deferred {
		t.Errorf("a woken request: recheck %v, wait %v, deferred %v; want an evaluation now", recheck, wait, deferred)
	}
	if turns.wants(key(b)) {
		t.Error("a woken request kept its place among the deferred")
	}
	// The request's jittered timer, set by an evaluation before the woken one, comes a
	// minute after it: it waits for the interval from that evaluation, deferring nothing.
	now = now.Add(time.Minute)
	if recheck, wait, deferred := turns.turn(b, false); !recheck || wait != 4*time.Minute || deferred {
		t.Errorf("a timer set before the last evaluation: recheck %v, wait %v, deferred %v; want 4m", recheck, wait, deferred)
	}
	turns.retry(key(a))
	if recheck, _, _ := turns.turn(a, turns.takeWoken(key(a))); recheck {
		t.Error("a retry was taken for a recheck")
	}
	unpublished := evaluatedRequest("c")
	unpublished.Annotations = map[string]string{AnnotationRevoked: "2026-12-06T20:00:00Z"}
	if recheck, wait, deferred := turns.turn(unpublished, false); recheck || wait != 0 || deferred {
		t.Errorf("a request to revoke, listed rather than watched: recheck %v, wait %v, deferred %v; want an evaluation now", recheck, wait, deferred)
	}
	now = now.Add(10 * time.Minute)
	if _, _, deferred := turns.turn(b, false); !deferred {
		t.Fatal("b's recheck was not deferred")
	}
	turns.forget(key(b))
	if _, kept := turns.evaluated[key(b)]; kept || turns.wants(key(b)) {
		t.Errorf("after a deletion: evaluated %v, deferred %v; want b's gone", turns.evaluated, turns.deferred)
	}
	unpaced := recheckTurns{}
	if recheck, wait, deferred := unpaced.turn(a, false); !recheck || wait != 0 || deferred {
		t.Errorf("without a pace: recheck %v, wait %v, deferred %v; want a recheck now", recheck, wait, deferred)
	}
}

// TestRecheckTurnsByNamespace: deferred rechecks are given their turns by namespace, not as
// they came: a tenant's one recheck deferred after another tenant's many goes second, not
// last. Within a namespace, first come first served.
func TestRecheckTurnsByNamespace(t *testing.T) {
	var turns recheckTurns
	turns.paced(rate.NewLimiter(rate.Inf, 0), time.Minute, nil)
	var names []string
	for _, ar := range []*v1alpha1.AccessRequest{evaluatedRequestIn("many", "1"), evaluatedRequestIn("many", "2"),
		evaluatedRequestIn("many", "3"), evaluatedRequestIn("many", "4"), evaluatedRequestIn("one", "1")} {
		if _, _, deferred := turns.turn(ar, false); !deferred {
			t.Fatalf("%s/%s was not deferred", ar.Namespace, ar.Name)
		}
	}
	to := dispatched(t, &turns)
	for range 5 {
		names = append(names, given(t, to))
	}
	if want := []string{"many/1", "one/1", "many/2", "many/3", "many/4"}; !slices.Equal(names, want) {
		t.Errorf("turns given to %v, want %v", names, want)
	}
}

// TestWakingHandlerSkipsWhatChangesNothing: an informer's initial list (a new leader's start)
// and its resyncs wake no request; a change does.
func TestWakingHandlerSkipsWhatChangesNothing(t *testing.T) {
	var turns recheckTurns
	request := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "r"}}
	h := turns.handler(func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{request} })
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	policy := func(rv string) client.Object {
		return &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", ResourceVersion: rv}}
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		send func()
		woke bool
	}{
		{"initial list", func() { h.Create(ctx, event.CreateEvent{Object: policy("1"), IsInInitialList: true}, q) }, false},
		{"resync", func() { h.Update(ctx, event.UpdateEvent{ObjectOld: policy("1"), ObjectNew: policy("1")}, q) }, false},
		{"create", func() { h.Create(ctx, event.CreateEvent{Object: policy("1")}, q) }, true},
		{"update", func() { h.Update(ctx, event.UpdateEvent{ObjectOld: policy("1"), ObjectNew: policy("2")}, q) }, true},
		{"delete", func() { h.Delete(ctx, event.DeleteEvent{Object: policy("2")}, q) }, true},
	} {
		c.send()
		if woke := turns.takeWoken(request.NamespacedName); woke != c.woke {
			t.Errorf("%s: woke %v, want %v", c.name, woke, c.woke)
		}
		if q.Len() != 1 {
			t.Errorf("%s: %d queued, want the request", c.name, q.Len())
		}
	}
}
