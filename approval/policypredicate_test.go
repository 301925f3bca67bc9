package approval

import (
	"context"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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

// TestConnectorChangesReachOnlyPoliciesSelectingThem: a Connector's event queues the policies
// of its namespace that select it, as it was or is (a relabelled one's old and new labels),
// not every policy of the namespace: each reconcile lists the namespace's Connectors and reads
// its grant.
func TestConnectorChangesReachOnlyPoliciesSelectingThem(t *testing.T) {
	policy := func(name string, sel v1alpha1.ConnectorSelector) *v1alpha1.AccessPolicy {
		return &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}, Spec: v1alpha1.AccessPolicySpec{Connector: sel}}
	}
	c := &PolicyController{Client: fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(
		policy("by-name", v1alpha1.ConnectorSelector{Names: []string{"git"}}),
		policy("other-name", v1alpha1.ConnectorSelector{Names: []string{"registry"}}),
		policy("by-label", v1alpha1.ConnectorSelector{MatchLabels: map[string]string{"tier": "prod"}}),
	).Build()}
	conn := func(name string, labels map[string]string) *v1alpha1.Connector {
		return &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Labels: labels}}
	}
	for what, tc := range map[string]struct {
		versions []client.Object
		want     []string
	}{
		"git, unlabelled":          {[]client.Object{conn("git", nil)}, []string{"by-name"}},
		"git, labelled prod since": {[]client.Object{conn("git", nil), conn("git", map[string]string{"tier": "prod"})}, []string{"by-label", "by-name"}},
		"another, prod until now":  {[]client.Object{conn("other", map[string]string{"tier": "prod"}), conn("other", nil)}, []string{"by-label"}},
		"one nobody selects":       {[]client.Object{conn("other", nil)}, nil},
	} {
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		c.enqueueSelectingConnector(context.Background(), q, tc.versions...)
		var got []string
		for q.Len() > 0 {
			r, _ := q.Get()
			got = append(got, r.Name)
			q.Done(r)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: queued %v, want %v", what, got, tc.want)
		}
		q.ShutDown()
	}
}

// TestAPolicyWithoutAGrantReadsNone: a gating policy, whose last reconcile found no default
// grant to keep, deletes one only when the grants' cache holds one of its name; it reads no
// Role or RoleBinding live otherwise (at a new leader's start, each policy's reconcile did). A
// policy that had one (its default permission since removed), or was never reconciled, reads
// it live: a grant written a moment ago may not be in the cache yet, one whose label was
// removed never is.
func TestAPolicyWithoutAGrantReadsNone(t *testing.T) {
	policy := func(lastSync string) *v1alpha1.AccessPolicy {
		p := &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "gate", UID: "p"}}
		if lastSync != "" {
			p.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionPermissionSync, Status: metav1.ConditionTrue, Reason: lastSync}}
		}
		return p
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: defaultGrantName("gate")}}
	for what, tc := range map[string]struct {
		p         *v1alpha1.AccessPolicy
		cached    []client.Object
		wantReads bool
	}{
		"gating, no grant cached": {policy(v1alpha1.ReasonNoPermissionRequired), nil, false},
		"gating, its Role cached": {policy(v1alpha1.ReasonNoPermissionRequired), []client.Object{role}, true},
		"granted until now":       {policy(v1alpha1.ReasonSynced), nil, true},
		"never reconciled":        {policy(""), nil, true},
	} {
		reads := 0
		live := interceptor.NewClient(fake.NewClientBuilder().WithScheme(testScheme(t)).Build(), interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				reads++
				return c.Get(ctx, key, obj, opts...)
			}})
		c := &PolicyController{Client: live, Grants: fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(tc.cached...).Build()}
		if err := c.syncDefaultPermission(context.Background(), tc.p, nil); err != nil {
			t.Fatal(err)
		}
		if (reads > 0) != tc.wantReads {
			t.Errorf("%s: %d live reads, want any: %v", what, reads, tc.wantReads)
		}
	}
}
