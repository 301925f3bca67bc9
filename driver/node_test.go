package driver

import (
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestStripRequestKeepsWhatTheNodeReads: an AccessRequest in the node's cache keeps the labels a
// node gives it, its spec and status conditions, and neither annotations, other labels, owners,
// finalizers, managed fields nor policy copies, which its writers (and a policy's) could fill.
func TestStripRequestKeepsWhatTheNodeReads(t *testing.T) {
	ar := &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Labels: map[string]string{v1alpha1.LabelNode: "n", v1alpha1.LabelContextObjectName: "p",
			"padding": strings.Repeat("x", 63)},
			Annotations:     map[string]string{"padding": strings.Repeat("x", 200<<10)},
			OwnerReferences: []metav1.OwnerReference{{Name: strings.Repeat("x", 1<<20)}},
			Finalizers:      []string{strings.Repeat("x", 1<<20)},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: "c"}},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: "Ready"}},
			Policies: []v1alpha1.PolicyStatus{{Name: "p", PolicySpec: &v1alpha1.AccessPolicySpec{}}}},
	}
	got, err := stripRequest(ar)
	kept, ok := got.(*v1alpha1.AccessRequest)
	if err != nil || !ok {
		t.Fatalf("stripRequest: %T, %v", got, err)
	}
	if kept.Annotations != nil || kept.ManagedFields != nil || kept.Status.Policies != nil || len(kept.Labels) != 2 ||
		kept.OwnerReferences != nil || kept.Finalizers != nil {
		t.Errorf("annotations, managed fields, policy copies, other labels, owners or finalizers kept: %v %v %v %v %v %v", len(kept.Annotations),
			kept.ManagedFields, kept.Status.Policies, len(kept.Labels), len(kept.OwnerReferences), len(kept.Finalizers))
	}
	if kept.Labels[v1alpha1.LabelNode] != "n" || kept.Labels[v1alpha1.LabelContextObjectName] != "p" || kept.Spec.ConnectorRef.Name != "c" || len(kept.Status.Conditions) != 1 {
		t.Errorf("what the node reads was dropped: %+v", kept)
	}
}

// TestStripRequestEmptiesASpecPastTheSchemasBounds: a request written before the schema bounded
// its strings is kept with an empty spec, which names no Pod.
func TestStripRequestEmptiesASpecPastTheSchemasBounds(t *testing.T) {
	within := v1alpha1.AccessRequestSpec{Subject: rbacv1.Subject{Kind: strings.Repeat("k", 63), APIGroup: strings.Repeat("g", 253),
		Name: strings.Repeat("s", 253), Namespace: strings.Repeat("n", 63)}, ConnectorRef: v1alpha1.LocalObjectRef{Name: strings.Repeat("c", 253)},
		Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{APIVersion: strings.Repeat("v", 256), Kind: "Pod",
			Name: strings.Repeat("p", 253), Namespace: strings.Repeat("n", 63), UID: types.UID(strings.Repeat("u", 128)),
			ResourceVersion: strings.Repeat("r", 256), FieldPath: strings.Repeat("f", 256)}}}
	past := *within.DeepCopy()
	past.Context.ObjectRef.FieldPath = strings.Repeat("f", 1<<20)
	for spec, kept := range map[*v1alpha1.AccessRequestSpec]bool{&within: true, &past: false} {
		got, _ := stripRequest(&v1alpha1.AccessRequest{Spec: *spec})
		if s := got.(*v1alpha1.AccessRequest).Spec; (s.ConnectorRef.Name != "") != kept {
			t.Errorf("a spec of %d bytes: kept %v, want %v", specBytes(spec), !kept, kept)
		}
	}
}
