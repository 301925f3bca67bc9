package approval

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// PodGrants tells whether a grant scoped to a Pod (connectors/proxy/v1/pod/<ns>/<name>) may be
// the grant of an earlier Pod of the same name. RBAC names the Pod by name only (the form is
// SPEC §4.4's), while an approval is for one Pod, by UID: after a forced delete that the node
// never unpublished, a new Pod of the same name and ServiceAccount would be allowed by the old
// Pod's grant until the controller's next look at that Pod (--accessrequest-pod-recheck-interval).
// So a Pod-scoped allow counts for a Pod only while no live request of another Pod of its
// name may hold a grant, unless its own request holds one. A grant an administrator wrote by
// hand, with no request behind it, names the Pod by name and keeps meaning that.
type PodGrants struct {
	// Local is this node's cache of its own requests: the usual answer, a Pod's own granted
	// request, comes from it by name, without a call.
	Local client.Reader
	// Live reads the requests of every node, with a consistent read, when the local cache does
	// not settle it: it must see every request status written before the grant the caller was
	// allowed by (the controller records that a request is being granted before it writes the
	// grant), which a read of the watch cache as it happens to be (resourceVersion 0) may not.
	// API servers from 1.31 serve it from their watch cache once that has caught up.
	Live client.Reader
}

// OfAnotherPod tells whether a Pod-scoped grant of Connector connector that allows the Pod
// podNamespace/podName (UID podUID) may be another Pod's of that name.
func (g *PodGrants) OfAnotherPod(ctx context.Context, connector types.NamespacedName, podNamespace, podName, podUID string) (bool, error) {
	if own, err := g.HoldsOwn(ctx, connector, podNamespace, podName, podUID); err != nil || own {
		return false, err
	}
	// Not shared with a list already in flight: one that started before this caller's review
	// may not see a status written before the grant the review allowed it by.
	var live v1alpha1.AccessRequestList
	if err := g.Live.List(ctx, &live, client.InNamespace(connector.Namespace), client.MatchingLabels(podLabels(podNamespace, podName))); err != nil {
		return false, err
	}
	foreign, _ := grantOwner(live.Items, connector.Name, podNamespace, podName, podUID)
	return foreign, nil
}

// HoldsOwn tells, from this node's cache of its own requests and without a call, whether the
// Pod's own request (by UID) for the Connector holds a grant. The proxy then asks the
// Pod-scoped question first: an approved Pod's namespace-wide question is denied, and would
// cost a review of its own at every expiry of its answer.
func (g *PodGrants) HoldsOwn(ctx context.Context, connector types.NamespacedName, podNamespace, podName, podUID string) (bool, error) {
	var own v1alpha1.AccessRequest
	pod := records.Pod{Namespace: podNamespace, Name: podName, UID: podUID}
	// Read only: the proxy asks for each question its cache does not hold.
	err := g.Local.Get(ctx, types.NamespacedName{Namespace: connector.Namespace, Name: RequestName(connector.Name, pod)}, &own, client.UnsafeDisableDeepCopy)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, settled := grantOwner([]v1alpha1.AccessRequest{own}, connector.Name, podNamespace, podName, podUID)
	return settled, nil
}

// grantOwner reads the requests of one Pod name in a Connector's namespace: settled when the
// Pod's own request (by UID) for the Connector holds a grant, which then is the Pod's whatever
// else there is (foreign false); otherwise foreign tells whether a live request of another Pod
// of the name, for any Connector of the namespace, may hold one (a role template may grant the
// Pod-scoped subresource on every Connector there). Labels select the requests, the spec
// decides: labels are whoever created the request's to write.
func grantOwner(requests []v1alpha1.AccessRequest, connector, podNamespace, podName, podUID string) (foreign, settled bool) {
	for i := range requests {
		ar := &requests[i]
		ref := ar.Spec.Context.ObjectRef
		if ref.Kind != "Pod" || ref.Namespace != podNamespace || ref.Name != podName {
			continue
		}
		switch {
		case string(ref.UID) == podUID && ar.Spec.ConnectorRef.Name == connector && holdsGrant(ar):
			return false, true
		case string(ref.UID) != podUID && mayHoldGrant(ar):
			foreign = true
		}
	}
	return foreign, false
}

// holdsGrant tells whether the controller wrote the request's grant and has not revoked it.
func holdsGrant(ar *v1alpha1.AccessRequest) bool {
	sync := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
	return sync != nil && sync.Reason == v1alpha1.ReasonSynced
}

// mayHoldGrant tells whether some of the request's grant may exist: written, written in part (a
// failed write), or written and kept while a check went back to pending. The controller deletes
// the grant before it records any of the other reasons.
func mayHoldGrant(ar *v1alpha1.AccessRequest) bool {
	sync := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
	if sync == nil {
		return false
	}
	switch sync.Reason {
	case v1alpha1.ReasonPermissionCleanUp, v1alpha1.ReasonNoPermissionRequired, v1alpha1.ReasonInvalidRoleTemplate, v1alpha1.ReasonSubjectMismatch,
		v1alpha1.ReasonConnectorNotMounted:
		return false
	}
	return true
}
