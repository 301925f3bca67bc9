package approval

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

var decisionSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "connectors_accessrequest_decision_seconds",
	Help:    "Time from an AccessRequest's creation to its checks' first outcome other than Pending, by outcome (Passed, Rejected, Failed).",
	Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
}, []string{"outcome"})

func init() { prometheus.MustRegister(decisionSeconds) }

// observeDecision records the time to the request's decision when outcome is its first one: the
// checks were pending or not evaluated yet. (A status write that fails and is retried may record
// one decision twice.)
func observeDecision(ar *v1alpha1.AccessRequest, outcome string) {
	if outcome == v1alpha1.ReasonPending || outcome == outcomeRetry {
		return
	}
	if prev := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady); prev != nil && prev.Reason != v1alpha1.ReasonPending {
		return
	}
	decisionSeconds.WithLabelValues(outcome).Observe(time.Since(ar.CreationTimestamp.Time).Seconds())
}
