package approval

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// TestARequestWakesTheEarlierPodsOfItsName: a request of a Pod wakes the live requests of other
// Pods of its name (any Connector, any namespace of Connectors), not its own, not revoked ones,
// not those of other Pods.
func TestARequestWakesTheEarlierPodsOfItsName(t *testing.T) {
	scheme := testScheme(t)
	request := func(ns, connector, pod, uid string, revokedToo bool) *v1alpha1.AccessRequest {
		p := records.Pod{Namespace: "team", Name: pod, UID: uid}
		ar := &v1alpha1.AccessRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: RequestName(connector, p), Labels: requestLabels(connector, "node-1", p)},
			Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: connector},
				Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", Namespace: "team", Name: pod, UID: types.UID(uid)}}}}
		ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionContextObjectValid, Status: metav1.ConditionTrue, Reason: "Found"}}
		if revokedToo {
			ar.Status.Conditions = append(ar.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonPermissionCleanUp})
		}
		return ar
	}
	current := request("team", "git", "build", "new", false)
	earlier := request("team", "git", "build", "old", false)
	earlierElsewhere := request("shared", "registry", "build", "old", false)
	objs := []client.Object{current, earlier, earlierElsewhere,
		request("team", "git", "build", "older", true), // revoked: done
		request("team", "git", "test", "other", false)} // another Pod
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...)
	c := &Controller{Client: withRequestIndexes(b).Build()}
	var woken []string
	for _, r := range c.requestsOfEarlierPods(context.Background(), current) {
		woken = append(woken, r.String())
	}
	slices.Sort(woken)
	want := []string{client.ObjectKeyFromObject(earlierElsewhere).String(), client.ObjectKeyFromObject(earlier).String()}
	slices.Sort(want)
	if !slices.Equal(woken, want) {
		t.Fatalf("the request of the current Pod woke %v, want %v", woken, want)
	}
	if got := c.requestsOfEarlierPods(context.Background(), request("team", "git", "build", "older", true)); len(got) != 0 {
		t.Errorf("a revoked request woke %v", got)
	}
	// Anyone may create a request naming any Pod; until the controller found that Pod, the
	// request wakes nothing.
	unchecked := request("elsewhere", "git", "build", "made-up", false)
	unchecked.Status.Conditions = nil
	if got := c.requestsOfEarlierPods(context.Background(), unchecked); len(got) != 0 {
		t.Errorf("a request whose Pod was not found woke %v", got)
	}
}

// withRequestIndexes registers the AccessRequest cache's indexes (indexRequests) with b.
func withRequestIndexes(b *fake.ClientBuilder) *fake.ClientBuilder {
	for field, extract := range requestIndexes {
		b = b.WithIndex(&v1alpha1.AccessRequest{}, field, extract)
	}
	return b
}

// TestRevokedRequestsAreNotWoken: a revoked request is done; a policy, Connector, template or
// check object event wakes the live requests it concerns (a policy's, only those that recorded
// none), and finds them by indexes that hold live requests alone, so that a day of a busy
// namespace's revoked requests is not walked.
func TestRevokedRequestsAreNotWoken(t *testing.T) {
	scheme := testScheme(t)
	request := func(name string, revokedToo bool) *v1alpha1.AccessRequest {
		ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name},
			Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: "git"},
				Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", Namespace: "team", Name: name, UID: "u-" + types.UID(name)}}},
			Status: v1alpha1.AccessRequestStatus{Policies: []v1alpha1.PolicyStatus{{Name: "gate", PolicySpec: &v1alpha1.AccessPolicySpec{
				CheckGrantedPermission: &v1alpha1.CheckGrantedPermission{Spec: v1alpha1.CheckGrantedPermissionSpec{
					Checks: []v1alpha1.Check{{Name: "c", Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "check-template"}}}}}}}}}}}
		if revokedToo {
			ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonPermissionCleanUp}}
		}
		return ar
	}
	unmatched := request("unmatched", false) // live, no policy recorded (none matched)
	unmatched.Status.Policies = nil
	doneUnmatched := request("done-unmatched", true)
	doneUnmatched.Status.Policies = nil
	c := &Controller{SystemNamespace: "connectors-system",
		Client: withRequestIndexes(fake.NewClientBuilder().WithScheme(scheme).WithObjects(request("live", false), request("done", true), unmatched, doneUnmatched)).Build()}
	ctx := context.Background()
	live := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: "live"}}
	liveUnmatched := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "team", Name: "unmatched"}}
	for what, tc := range map[string]struct{ got, want []reconcile.Request }{
		// The others keep the policies they recorded.
		"a policy":    {c.requestsWithoutPolicies(ctx, &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "gate"}}), []reconcile.Request{liveUnmatched}},
		"a Connector": {c.requestsOfConnector(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "git"}}), []reconcile.Request{live, liveUnmatched}},
		"a template":  {c.requestsUsingTemplate(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "connectors-system", Name: "check-template"}}), []reconcile.Request{live}},
	} {
		slices.SortFunc(tc.got, func(a, b reconcile.Request) int { return strings.Compare(a.Name, b.Name) })
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s woke %v, want %v", what, tc.got, tc.want)
		}
	}
}
