package connectorstatus

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// delays records what is queued, and after how long.
type delays struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	after map[string]time.Duration
}

func (d *delays) AddAfter(r reconcile.Request, after time.Duration) { d.after[r.Name] = after }
func (d *delays) Add(r reconcile.Request)                           { d.after[r.Name] = 0 }

// TestANewLeaderSpreadsItsFirstProbes: at a new leader's first list, a Connector an earlier
// leader probed (a status of its current spec and class label) is probed again at a random
// time within the recheck interval; one never probed, or changed since, is probed at once
// (the controller's own queueing of it, For's, passes only those).
func TestANewLeaderSpreadsItsFirstProbes(t *testing.T) {
	const recheck = 5 * time.Minute
	r := &Reconciler{Recheck: recheck}
	connector := func(name string, generation, observed int64, class string) *v1alpha1.Connector {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: generation,
			Labels: map[string]string{v1alpha1.LabelConnectorClass: class}}, Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "git"}}
		if observed > 0 {
			c.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, ObservedGeneration: observed}}
		}
		return c
	}
	for _, tc := range []struct {
		c      *v1alpha1.Connector
		spread bool
	}{
		{connector("probed", 2, 2, "git"), true},
		{connector("never-probed", 1, 0, "git"), false},
		{connector("changed-since", 3, 2, "git"), false},
		{connector("relabelled", 2, 2, "other"), false},
	} {
		q := &delays{after: map[string]time.Duration{}}
		r.spreadFirstProbe(context.Background(), event.CreateEvent{Object: tc.c}, q)
		after, queued := q.after[tc.c.Name]
		if queued != tc.spread || queued && (after < 0 || after >= recheck) {
			t.Errorf("%s: queued %v after %v, want queued %v within %v", tc.c.Name, queued, after, tc.spread, recheck)
		}
		if probedBefore(tc.c) != tc.spread {
			t.Errorf("%s: probed before %v: For would queue it at once %v, want %v", tc.c.Name, probedBefore(tc.c), !probedBefore(tc.c), !tc.spread)
		}
	}
}

// TestANewLeadersFirstListsQueueOnlyWhatWaits: at a new leader's start, a class's creation
// event queues only its Connectors that waited for it (their class not found), not every
// Connector of the class again at once, and no owned Service's creation queues its Connector.
func TestANewLeadersFirstListsQueueOnlyWhatWaits(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	connector := func(name string, classReady metav1.ConditionStatus) *v1alpha1.Connector {
		return &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{v1alpha1.LabelConnectorClass: "git"}},
			Status: v1alpha1.ConnectorStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionConnectorClassReady, Status: classReady}}}}
	}
	r := &Reconciler{Client: fake.NewClientBuilder().WithScheme(scheme).WithObjects(connector("found", metav1.ConditionTrue), connector("waiting", metav1.ConditionFalse)).Build()}
	q := &delays{after: map[string]time.Duration{}}
	r.enqueueOfClass(context.Background(), q, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "git"}}, func(c *v1alpha1.Connector) bool { return !classFound(c) })
	if _, found := q.after["found"]; found || len(q.after) != 1 {
		t.Errorf("a class's creation queued %v, want only the Connector that waited for it", q.after)
	}
	if noCreate.Create(event.CreateEvent{Object: &corev1.Service{}}) {
		t.Error("an owned Service's creation queues its Connector")
	}
}
