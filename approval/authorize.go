// Package approval decides whether a Pod may use a Connector. This file holds the publish-time
// check (SPEC §6.3): a SubjectAccessReview for the Pod's ServiceAccount, through the API
// server's own caching webhook authorizer (k8s.io/apiserver), so that kubelet's periodic
// republishes of many volumes cost one review per decision and cache period, not one each.
package approval

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/node"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// SubjectAccessReviewer authorizes with cached SubjectAccessReviews.
type SubjectAccessReviewer struct {
	authz authorizer.Authorizer
}

// NewSubjectAccessReviewer caches allowed decisions for allowTTL and denied ones for denyTTL.
// A failed review is not retried here: kubelet retries the publish.
func NewSubjectAccessReviewer(client authzclient.AuthorizationV1Interface, allowTTL, denyTTL time.Duration) (*SubjectAccessReviewer, error) {
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client,
		AllowCacheTTL:             allowTTL,
		DenyCacheTTL:              denyTTL,
		WebhookRetryBackoff:       &wait.Backoff{Duration: 100 * time.Millisecond, Factor: 1, Steps: 1},
	}.New()
	if err != nil {
		return nil, err
	}
	return &SubjectAccessReviewer{authz: authz}, nil
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
	decision, reason, err := a.authz.Authorize(ctx, attrs)
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
