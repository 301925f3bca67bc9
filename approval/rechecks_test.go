package approval

import (
	"context"
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
	return &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}}}
}

func TestRecheckTurns(t *testing.T) {
	now := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	turns := recheckTurns{limit: rate.NewLimiter(rate.Every(time.Hour), 1), every: 5 * time.Minute, now: func() time.Time { return now }}
	key := func(ar *v1alpha1.AccessRequest) types.NamespacedName { return client.ObjectKeyFromObject(ar) }

	if recheck, wait := turns.turn(&v1alpha1.AccessRequest{}, false); recheck || wait != 0 {
		t.Errorf("a request never evaluated: recheck %v, wait %v; want an evaluation now", recheck, wait)
	}
	a, b := evaluatedRequest("a"), evaluatedRequest("b")
	if recheck, wait := turns.turn(a, false); !recheck || wait != 0 {
		t.Errorf("the first recheck: recheck %v, wait %v; want now (the burst)", recheck, wait)
	}
	recheck, wait := turns.turn(b, false)
	if !recheck || wait < 59*time.Minute {
		t.Fatalf("a recheck past the pace: recheck %v, wait %v; want about an hour", recheck, wait)
	}
	if _, again := turns.turn(b, false); again > wait {
		t.Errorf("a recheck that came back early reserved another turn: %v after %v", again, wait)
	}
	if recheck, wait := turns.turn(b, true); recheck || wait != 0 {
		t.Errorf("a woken request: recheck %v, wait %v; want an evaluation now", recheck, wait)
	}
	if len(turns.reserved) != 0 {
		t.Errorf("a woken request kept its reserved turn: %v", turns.reserved)
	}
	// The deferred recheck's timer, still in the work queue, comes a minute after the woken
	// evaluation: it waits for the interval from that evaluation, reserving nothing.
	now = now.Add(time.Minute)
	if recheck, wait := turns.turn(b, false); !recheck || wait != 4*time.Minute || turns.reserved[key(b)] != nil {
		t.Errorf("a timer set before the last evaluation: recheck %v, wait %v, reserved %v; want 4m, none", recheck, wait, turns.reserved[key(b)])
	}
	turns.retry(key(a))
	if recheck, _ := turns.turn(a, turns.takeWoken(key(a))); recheck {
		t.Error("a retry was taken for a recheck")
	}
	unpublished := evaluatedRequest("c")
	unpublished.Annotations = map[string]string{AnnotationRevoked: "2026-12-06T20:00:00Z"}
	if recheck, wait := turns.turn(unpublished, false); recheck || wait != 0 {
		t.Errorf("a request to revoke, listed rather than watched: recheck %v, wait %v; want an evaluation now", recheck, wait)
	}
	turns.forget(key(b))
	if _, kept := turns.evaluated[key(b)]; kept || len(turns.reserved) != 0 {
		t.Errorf("after a deletion: evaluated %v, reserved %v; want b's gone", turns.evaluated, turns.reserved)
	}
	unpaced := recheckTurns{}
	if recheck, wait := unpaced.turn(a, false); !recheck || wait != 0 {
		t.Errorf("without a pace: recheck %v, wait %v; want a recheck now", recheck, wait)
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
