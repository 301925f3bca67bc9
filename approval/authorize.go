// Package approval decides whether a Pod may use a Connector. This file holds the publish-time
// check (SPEC §6.3): a SubjectAccessReview for the Pod's ServiceAccount, cached by the access
// package, so that kubelet's periodic republishes of many volumes cost one review per decision
// and cache period, not one each.
package approval

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/node"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// Authorizer answers SubjectAccessReviews (access.Reviewer in production).
type Authorizer interface {
	Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error)
}

// SubjectAccessReviewer authorizes a Pod's use of a Connector.
type SubjectAccessReviewer struct {
	Authz Authorizer
}

// AuthorizeConnector checks that the Pod's ServiceAccount may get the Connector.
func (a *SubjectAccessReviewer) AuthorizeConnector(ctx context.Context, pod records.Pod, namespace, name string) error {
	attrs := authorizer.AttributesRecord{
		User: &user.DefaultInfo{
			Name:   fmt.Sprintf("system:serviceaccount:%s:%s", pod.Namespace, pod.ServiceAccount),
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, user.AllAuthenticated},
		},
		Verb:            "get",
		Namespace:       namespace,
		APIGroup:        v1alpha1.GroupVersion.Group,
		APIVersion:      v1alpha1.GroupVersion.Version,
		Resource:        v1alpha1.ResourceConnectors,
		Name:            name,
		ResourceRequest: true,
	}
	decision, reason, err := a.Authz.Authorize(ctx, attrs)
	if err != nil {
		return err
	}
	if decision == authorizer.DecisionAllow {
		return nil
	}
	msg := fmt.Sprintf("ServiceAccount %s/%s lacks get on connectors.%s %q in namespace %s",
		pod.Namespace, pod.ServiceAccount, v1alpha1.GroupVersion.Group, name, namespace)
	if reason != "" {
		msg += " (" + reason + ")"
	}
	return &node.Denied{Connector: types.NamespacedName{Namespace: namespace, Name: name}, Reason: msg}
}
