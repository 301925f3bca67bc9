package approval

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestPoliciesReconcileOnSpecAndResyncOnly: a policy is reconciled when its spec changed and
// at the informer's periodic resync (which repairs a default grant removed by hand), not when
// its status alone was written.
func TestPoliciesReconcileOnSpecAndResyncOnly(t *testing.T) {
	policy := func(generation int64, version string) *v1alpha1.AccessPolicy {
		return &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: generation, ResourceVersion: version}}
	}
	passes := predicate.Or(predicate.GenerationChangedPredicate{}, resync)
	for what, tc := range map[string]struct {
		old, new *v1alpha1.AccessPolicy
		want     bool
	}{
		"a spec change":     {policy(1, "10"), policy(2, "11"), true},
		"a status write":    {policy(1, "10"), policy(1, "11"), false},
		"a periodic resync": {policy(1, "10"), policy(1, "10"), true},
	} {
		if got := passes.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
			t.Errorf("%s: reconciled %v, want %v", what, got, tc.want)
		}
	}
}

// TestSelectsNamespace: a namespace event wakes only the policies whose defaultPermission
// selects, by label, a namespace of its labels (a relabelled one's old or new ones).
func TestSelectsNamespace(t *testing.T) {
	dp := &v1alpha1.DefaultPermission{BindingTemplate: v1alpha1.BindingTemplate{ServiceAccounts: []v1alpha1.ServiceAccountSelector{
		{NamespaceSelector: v1alpha1.NamespaceSelector{Names: []string{"fixed"}}},
		{NamespaceSelector: v1alpha1.NamespaceSelector{MatchLabels: map[string]string{"team": "a"}}},
	}}}
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{{map[string]string{"team": "a", "x": "y"}, true}, {map[string]string{"team": "b"}, false}, {nil, false}} {
		if got := selectsNamespace(dp, tc.labels); got != tc.want {
			t.Errorf("labels %v: selected %v, want %v", tc.labels, got, tc.want)
		}
	}
	byName := &v1alpha1.DefaultPermission{BindingTemplate: v1alpha1.BindingTemplate{ServiceAccounts: []v1alpha1.ServiceAccountSelector{
		{NamespaceSelector: v1alpha1.NamespaceSelector{Names: []string{"fixed"}}}}}}
	if selectsNamespace(byName, map[string]string{"team": "a"}) || selectsNamespace(nil, nil) {
		t.Error("a policy selecting no namespace by label was woken by a namespace's labels")
	}
}
