// Package approval decides whether a Pod may use a Connector. This file holds the publish-time
// check (SPEC §6.3): a SubjectAccessReview for the Pod's ServiceAccount.
package approval

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/node"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// SubjectAccessReviewer authorizes with SubjectAccessReviews against the API server.
type SubjectAccessReviewer struct {
	Client authzclient.SubjectAccessReviewInterface
}

// AuthorizeConnector checks that the Pod's ServiceAccount may get the Connector.
func (a *SubjectAccessReviewer) AuthorizeConnector(ctx context.Context, pod records.Pod, namespace, name string) error {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   fmt.Sprintf("system:serviceaccount:%s:%s", pod.Namespace, pod.ServiceAccount),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group:     v1alpha1.GroupVersion.Group,
			Resource:  v1alpha1.ResourceConnectors,
			Verb:      "get",
			Namespace: namespace,
			Name:      name,
		},
	}}
	res, err := a.Client.Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if res.Status.Allowed {
		return nil
	}
	reason := fmt.Sprintf("ServiceAccount %s/%s lacks get on connectors.%s %q in namespace %s",
		pod.Namespace, pod.ServiceAccount, v1alpha1.GroupVersion.Group, name, namespace)
	if res.Status.Reason != "" {
		reason += " (" + res.Status.Reason + ")"
	}
	return &node.Denied{Connector: types.NamespacedName{Namespace: namespace, Name: name}, Reason: reason}
}
