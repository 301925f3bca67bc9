package approval

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func TestRecheckTurns(t *testing.T) {
	evaluated := func(name string) *v1alpha1.AccessRequest {
		return &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}}}
	}
	var turns recheckTurns
	limit := rate.NewLimiter(rate.Every(time.Hour), 1)

	if recheck, wait := turns.turn(limit, &v1alpha1.AccessRequest{}); recheck || wait != 0 {
		t.Errorf("a request never evaluated: recheck %v, wait %v; want an evaluation now", recheck, wait)
	}
	a, b := evaluated("a"), evaluated("b")
	if recheck, wait := turns.turn(limit, a); !recheck || wait != 0 {
		t.Errorf("the first recheck: recheck %v, wait %v; want now (the burst)", recheck, wait)
	}
	recheck, wait := turns.turn(limit, b)
	if !recheck || wait < 59*time.Minute {
		t.Fatalf("a recheck past the pace: recheck %v, wait %v; want about an hour", recheck, wait)
	}
	if _, again := turns.turn(limit, b); again > wait {
		t.Errorf("a recheck that came back early reserved another turn: %v after %v", again, wait)
	}
	turns.wake([]reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(b)}})
	if recheck, wait := turns.turn(limit, b); recheck || wait != 0 {
		t.Errorf("a woken request: recheck %v, wait %v; want an evaluation now", recheck, wait)
	}
	if len(turns.reserved) != 0 {
		t.Errorf("a woken request kept its reserved turn: %v", turns.reserved)
	}
	turns.retry(client.ObjectKeyFromObject(a))
	if recheck, _ := turns.turn(limit, a); recheck {
		t.Error("a retry was taken for a recheck")
	}
	if recheck, _ := turns.turn(nil, a); !recheck {
		t.Error("without a pace, an evaluation nothing woke is not a recheck")
	}
	unpublished := evaluated("c")
	unpublished.Annotations = map[string]string{AnnotationRevoked: "2026-12-06T20:00:00Z"}
	if recheck, wait := turns.turn(limit, unpublished); recheck || wait != 0 {
		t.Errorf("a request to revoke, listed rather than watched: recheck %v, wait %v; want an evaluation now", recheck, wait)
	}
}
