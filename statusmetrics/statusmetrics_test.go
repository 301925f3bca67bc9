package statusmetrics

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func request(created time.Time, check, sync string) v1alpha1.AccessRequest {
	ar := v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
	if check != "" {
		ar.Status.Conditions = append(ar.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionAccessCheckReady, Reason: check})
	}
	if sync != "" {
		ar.Status.Conditions = append(ar.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionAccessPermissionSync, Reason: sync})
	}
	return ar
}

// TestCountRequests: AccessRequests are counted by their check and sync reasons (empty when not
// evaluated), and the oldest pending one's age is found among the pending ones only.
func TestCountRequests(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	counts, oldest := countRequests([]v1alpha1.AccessRequest{
		request(at.Add(-time.Hour), v1alpha1.ReasonPassed, v1alpha1.ReasonSynced), // old, but decided
		request(at.Add(-5*time.Minute), v1alpha1.ReasonPending, v1alpha1.ReasonPending),
		request(at.Add(-time.Minute), v1alpha1.ReasonPending, v1alpha1.ReasonPending),
		request(at, "", ""),
	}, at)
	want := map[requestKey]int{{v1alpha1.ReasonPassed, v1alpha1.ReasonSynced}: 1, {v1alpha1.ReasonPending, v1alpha1.ReasonPending}: 2, {"", ""}: 1}
	if len(counts) != len(want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%+v: %d, want %d", k, counts[k], n)
		}
	}
	if oldest != 5*time.Minute {
		t.Errorf("oldest pending %s, want 5m", oldest)
	}
	if _, none := countRequests(nil, at); none != 0 {
		t.Errorf("oldest pending of none: %s", none)
	}
}

// TestCountConditions: each condition of each Connector counts once under its type, status and
// reason.
func TestCountConditions(t *testing.T) {
	c := func(reasons ...string) v1alpha1.Connector {
		var out v1alpha1.Connector
		for _, r := range reasons {
			out.Status.Conditions = append(out.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: r})
		}
		return out
	}
	got := countConditions([]v1alpha1.Connector{c("Unreachable"), c("Unreachable"), c("SecretNotFound"), c()})
	if got[conditionKey{v1alpha1.ConditionReady, "False", "Unreachable"}] != 2 || got[conditionKey{v1alpha1.ConditionReady, "False", "SecretNotFound"}] != 1 || len(got) != 2 {
		t.Errorf("counts %v", got)
	}
}
