package driver

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestStripRequestKeepsWhatTheNodeReads: an AccessRequest in the node's cache keeps its labels,
// spec and status, and neither annotations nor managed fields, which its writers could fill.
func TestStripRequestKeepsWhatTheNodeReads(t *testing.T) {
	ar := &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Labels: map[string]string{v1alpha1.LabelNode: "n"},
			Annotations:   map[string]string{"padding": strings.Repeat("x", 200<<10)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec:   v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: "c"}},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: "Ready"}}},
	}
	got, err := stripRequest(ar)
	kept, ok := got.(*v1alpha1.AccessRequest)
	if err != nil || !ok {
		t.Fatalf("stripRequest: %T, %v", got, err)
	}
	if kept.Annotations != nil || kept.ManagedFields != nil {
		t.Errorf("annotations or managed fields kept: %v %v", len(kept.Annotations), kept.ManagedFields)
	}
	if kept.Labels[v1alpha1.LabelNode] != "n" || kept.Spec.ConnectorRef.Name != "c" || len(kept.Status.Conditions) != 1 {
		t.Errorf("what the node reads was dropped: %+v", kept)
	}
}
