package approval

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestCheckReadsWakeWhatTheChecksSelect: a request whose checks' reads are remembered wakes
// only for an object of a kind, name and labels one of them selects, or that a check of the
// evaluation under way came to select; one with none remembered (never evaluated, or whose
// evaluation stopped before every check's selector was known) wakes for every object.
func TestCheckReadsWakeWhatTheChecksSelect(t *testing.T) {
	task := schema.GroupKind{Group: "openshift-pipelines.org", Kind: "ApprovalTask"}
	object := func(kind schema.GroupKind, name string, labels map[string]string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(kind.WithVersion("v1alpha1"))
		u.SetName(name)
		u.SetLabels(labels)
		return u
	}
	ofRun := labels.SelectorFromSet(labels.Set{"tekton.dev/pipelineRun": "run-1"})
	request := types.NamespacedName{Namespace: "ns", Name: "r"}
	var reads checkReads
	if !reads.wakes(request, object(task, "anything", nil)) {
		t.Fatal("a request never evaluated did not wake")
	}
	reads.remember(request, []checkRead{{kind: task, selector: ofRun}, {kind: task, name: "gate", selector: labels.Everything()}})
	for _, tc := range []struct {
		obj  *unstructured.Unstructured
		want bool
	}{
		{object(task, "approve-run-1", map[string]string{"tekton.dev/pipelineRun": "run-1"}), true},
		{object(task, "approve-run-2", map[string]string{"tekton.dev/pipelineRun": "run-2"}), false},
		{object(schema.GroupKind{Group: "example.com", Kind: "ApprovalTask"}, "approve-run-1", map[string]string{"tekton.dev/pipelineRun": "run-1"}), false},
		{object(task, "gate", nil), true},
		{object(task, "another-gate", nil), false},
	} {
		if got := reads.wakes(request, tc.obj); got != tc.want {
			t.Errorf("%s %s %v: wakes %v, want %v", tc.obj.GroupVersionKind().Group, tc.obj.GetName(), tc.obj.GetLabels(), got, tc.want)
		}
	}
	// Evaluated again: what a check comes to read is added to what was read before, until the
	// evaluation ends.
	run2 := object(task, "approve-run-2", map[string]string{"tekton.dev/pipelineRun": "run-2"})
	reads.add(request, checkRead{kind: task, selector: labels.SelectorFromSet(labels.Set{"tekton.dev/pipelineRun": "run-2"})})
	if !reads.wakes(request, run2) || !reads.wakes(request, object(task, "gate", nil)) {
		t.Error("during an evaluation, a request did not wake for what it reads now and what it read before")
	}
	reads.forget(request)
	if !reads.wakes(request, object(task, "anything", nil)) {
		t.Error("a request whose evaluation did not read every check did not wake")
	}
	reads.add(request, checkRead{kind: task, name: "gate", selector: labels.Everything()})
	if !reads.wakes(request, object(task, "anything", nil)) {
		t.Error("a read added to a request not known made it known")
	}
}

// TestOwnWritesTellTheControllersStatuses: a status the controller wrote is seen once, with
// those written before it; a status anyone else wrote is not the controller's.
func TestOwnWritesTellTheControllersStatuses(t *testing.T) {
	status := func(reason string) *v1alpha1.AccessRequestStatus {
		return &v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason}}}
	}
	request := types.NamespacedName{Namespace: "ns", Name: "r"}
	var w ownWrites
	w.add(request, status(v1alpha1.ReasonGranting))
	w.add(request, status("Granted"))
	if w.seen(request, status("Forged")) {
		t.Error("a status the controller did not write was taken for its own")
	}
	// The second write's event first: the first's is then no longer expected.
	if !w.seen(request, status("Granted")) || w.seen(request, status(v1alpha1.ReasonGranting)) {
		t.Error("the later of two writes was not seen, or the earlier one was kept after it")
	}
	if w.seen(request, status("Granted")) {
		t.Error("one write was seen twice")
	}
}
