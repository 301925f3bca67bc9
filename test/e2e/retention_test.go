package e2e

import (
	"context"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestFinishedAccessRequestsAreCollected: a request whose Pod is gone is revoked, then deleted
// once --accessrequest-retention has passed.
func TestFinishedAccessRequestsAreCollected(t *testing.T) {
	startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.RequestRetention = 2 * time.Second })
	ns := newNamespace(t)
	ar := goneRequest(ns)
	create(t, ar)
	key := types.NamespacedName{Namespace: ns, Name: ar.Name}
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		return apierrors.IsNotFound(cp.Client.Get(context.Background(), key, &v1alpha1.AccessRequest{}))
	}) {
		var got v1alpha1.AccessRequest
		_ = cp.Client.Get(context.Background(), key, &got)
		t.Fatalf("the finished AccessRequest was not collected: %+v", got.Status.Conditions)
	}
}

// goneRequest is an AccessRequest of a Pod that does not exist.
func goneRequest(ns string) *v1alpha1.AccessRequest {
	return &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: ns, Labels: map[string]string{
			v1alpha1.LabelContextObjectKind: "Pod", v1alpha1.LabelContextObjectName: "gone-pod", v1alpha1.LabelContextObjectNamespace: ns}},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: "whatever"},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
				APIVersion: "v1", Kind: "Pod", Name: "gone-pod", Namespace: ns, UID: "no-such-uid"}},
		},
	}
}

// TestRetentionCountsFromTheRevocation: a request granted longer ago than the retention is
// kept for the retention after its revocation, not deleted as it is revoked: its granted and
// revoked record is what kubectl describe shows of who used what.
func TestRetentionCountsFromTheRevocation(t *testing.T) {
	ns := newNamespace(t)
	ar := goneRequest(ns)
	create(t, ar)
	// Granted two hours ago (written before the controller starts, which would revoke it).
	ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonSynced, Message: "granted", LastTransitionTime: metav1.NewTime(time.Now().Add(-2 * time.Hour))}}
	if err := cp.Client.Status().Update(context.Background(), ar); err != nil {
		t.Fatal(err)
	}
	startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.RequestRetention = time.Hour })
	waitRevoked(t, types.NamespacedName{Namespace: ns, Name: ar.Name}) // and not deleted
}

// TestAGrantWrittenAfterItsRevocationGoes: a leader that lost its lease between its check of
// a request and its grant's write (its calls queued by an overloaded API server while the new
// leader revoked the request) writes the grant of a revoked request. The controller deletes it
// when it appears, rather than leave it to the request's retention.
func TestAGrantWrittenAfterItsRevocationGoes(t *testing.T) {
	ctx := context.Background()
	startDriverWith(t, t.TempDir(), nil, nil)
	ns := newNamespace(t)
	ar := goneRequest(ns)
	create(t, ar)
	key := types.NamespacedName{Namespace: ns, Name: ar.Name}
	waitRevoked(t, key)
	if err := cp.Client.Get(ctx, key, ar); err != nil {
		t.Fatal(err)
	}
	late := metav1.ObjectMeta{Name: ar.Name, Namespace: ns, Labels: map[string]string{approval.LabelGrant: "true"},
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ar, v1alpha1.GroupVersion.WithKind("AccessRequest"))}}
	role := &rbacv1.Role{ObjectMeta: late, Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group},
		Resources: []string{"connectors"}, ResourceNames: []string{"whatever"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: late, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ar.Name},
		Subjects: []rbacv1.Subject{ar.Spec.Subject}}
	create(t, role)
	create(t, binding)
	for _, obj := range []client.Object{role, binding} {
		if !kubelet.WaitUntil(30*time.Second, func() bool { return apierrors.IsNotFound(cp.Client.Get(ctx, key, obj)) }) {
			t.Errorf("the %T written after the revocation is still there", obj)
		}
	}
}
