package approval

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/objectcache"
)

// TestRevokePodRevokesThatPodsRequests: the requests this node made for a Pod (by UID) are
// marked revoked, not another Pod's, another node's, nor one revoked already; one that cannot be patched (a
// request anyone labelled for this node naming the Pod, made unpatchable) is logged and
// skipped, not retried for good.
func TestRevokePodRevokesThatPodsRequests(t *testing.T) {
	scheme := testScheme(t)
	request := func(name, uid string, revokedAlready bool) *v1alpha1.AccessRequest {
		ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Labels: map[string]string{v1alpha1.LabelNode: "node-1"}},
			Spec: v1alpha1.AccessRequestSpec{Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", UID: types.UID(uid)}}}}
		if revokedAlready {
			ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonPermissionCleanUp}}
		}
		return ar
	}
	elsewhere := request("elsewhere", "pod-uid", false)
	elsewhere.Labels[v1alpha1.LabelNode] = "node-2"
	objs := []client.Object{request("mine", "pod-uid", false), request("mine-too", "pod-uid", false), request("done", "pod-uid", true),
		request("other", "other-uid", false), request("forged", "pod-uid", false), elsewhere}
	cached := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	var patched []string
	live := interceptor.NewClient(cached, interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		if obj.GetName() == "forged" {
			return apierrors.NewInvalid(schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "AccessRequest"}, "forged", nil)
		}
		patched = append(patched, obj.GetName())
		return c.Patch(ctx, obj, patch, opts...)
	}})
	g := &Gate{Requests: objectcache.NewRequests(cached, time.Minute), Client: live, NodeID: "node-1"}
	if err := g.RevokePod(context.Background(), "pod-uid", true); err != nil {
		t.Fatal(err)
	}
	if len(patched) != 2 || patched[0] != "mine" || patched[1] != "mine-too" {
		t.Errorf("revoked %v, want mine and mine-too", patched)
	}
}

// TestRevokeGoesOnPastARequestItCannotPatch: a record's request that cannot be patched (made
// unpatchable by whoever may create requests) is let go, not retried for good, and the
// requests after it are revoked still; an error of the API server is returned, for kubelet to
// retry the unpublish, and the others are revoked meanwhile.
func TestRevokeGoesOnPastARequestItCannotPatch(t *testing.T) {
	scheme := testScheme(t)
	var objs []client.Object
	for _, name := range []string{"forged", "mine", "busy", "mine-too"} {
		objs = append(objs, &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}})
	}
	cached := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	var patched []string
	live := interceptor.NewClient(cached, interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		switch obj.GetName() {
		case "forged":
			return apierrors.NewInvalid(schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "AccessRequest"}, "forged", nil)
		case "busy":
			return apierrors.NewServiceUnavailable("the API server is away")
		}
		patched = append(patched, obj.GetName())
		return c.Patch(ctx, obj, patch, opts...)
	}})
	g := &Gate{Requests: objectcache.NewRequests(cached, time.Minute), Client: live, NodeID: "node-1"}
	err := g.Revoke(context.Background(), []string{"team/forged", "team/mine", "team/busy", "team/mine-too"})
	if !apierrors.IsServiceUnavailable(err) {
		t.Errorf("revoke: %v, want the API server's error, for a retry", err)
	}
	if len(patched) != 2 || patched[0] != "mine" || patched[1] != "mine-too" {
		t.Errorf("revoked %v, want mine and mine-too", patched)
	}
}

// TestRevokePodOfAVolumeNeverPublishedListsNothing: a volume never published (its Pod deleted
// while the publish waited) revokes the Pod's requests the node watches, without a list of
// the cluster's requests.
func TestRevokePodOfAVolumeNeverPublishedListsNothing(t *testing.T) {
	scheme := testScheme(t)
	request := func(name, uid string) *v1alpha1.AccessRequest {
		return &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, ResourceVersion: "1"},
			Spec: v1alpha1.AccessRequestSpec{Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", UID: types.UID(uid)}}}}
	}
	pending, other, unwatched := request("pending", "pod-uid"), request("other", "other-uid"), request("unwatched", "pod-uid")
	cached := fake.NewClientBuilder().WithScheme(scheme).WithObjects(pending, other, unwatched).Build()
	var patched []string
	live := interceptor.NewClient(cached, interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			t.Error("a volume never published listed the cluster's requests")
			return nil
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			patched = append(patched, obj.GetName())
			return c.Patch(ctx, obj, patch, opts...)
		}})
	requests := objectcache.NewRequests(cached, time.Minute)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		requests.Run(ctx)
	})
	requests.Follow(pending)
	requests.Follow(other)
	g := &Gate{Requests: requests, Client: live, NodeID: "node-1"}
	if err := g.RevokePod(context.Background(), "pod-uid", false); err != nil {
		t.Fatal(err)
	}
	if len(patched) != 1 || patched[0] != "pending" {
		t.Errorf("revoked %v, want the watched request of the Pod", patched)
	}
}
