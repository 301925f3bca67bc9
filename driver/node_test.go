package driver

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestStripRequestKeepsWhatTheNodeReads: an AccessRequest in the node's cache keeps the labels a
// node gives it, its spec and status conditions, and neither annotations, other labels,
// managed fields nor policy copies, which its writers (and a policy's) could fill.
func TestStripRequestKeepsWhatTheNodeReads(t *testing.T) {
	ar := &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Labels: map[string]string{v1alpha1.LabelNode: "n", v1alpha1.LabelContextObjectName: "p",
			"padding": strings.Repeat("x", 63)},
			Annotations:   map[string]string{"padding": strings.Repeat("x", 200<<10)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: "c"}},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: "Ready"}},
			Policies: []v1alpha1.PolicyStatus{{Name: "p", PolicySpec: &v1alpha1.AccessPolicySpec{}}}},
	}
	got, err := stripRequest(ar)
	kept, ok := got.(*v1alpha1.AccessRequest)
	if err != nil || !ok {
		t.Fatalf("stripRequest: %T, %v", got, err)
	}
	if kept.Annotations != nil || kept.ManagedFields != nil || kept.Status.Policies != nil || len(kept.Labels) != 2 {
		t.Errorf("annotations, managed fields, policy copies or other labels kept: %v %v %v %v", len(kept.Annotations), kept.ManagedFields,
			kept.Status.Policies, len(kept.Labels))
	}
	if kept.Labels[v1alpha1.LabelNode] != "n" || kept.Labels[v1alpha1.LabelContextObjectName] != "p" || kept.Spec.ConnectorRef.Name != "c" || len(kept.Status.Conditions) != 1 {
		t.Errorf("what the node reads was dropped: %+v", kept)
	}
}
