package approval

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// checkKind says why the controller may not read a check kind, or nil. Secrets are refused
// outright (a check could match a tenant's policy on any Secret and report its state). A kind
// the controller may not list and watch everywhere is refused before its informer starts: an
// informer that cannot list never syncs, and the worker waiting for it would hang. A kind the
// API server does not serve is left to the watch, which says so.
func checkKind(ctx context.Context, c client.Client, gvk schema.GroupVersionKind) error {
	if gvk.Group == "" && gvk.Kind == "Secret" {
		return fmt.Errorf("checks may not read Secrets")
	}
	mapping, err := c.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check kind %s: %w", gvk.Kind, err)
	}
	resource := mapping.Resource.GroupResource().String()
	for _, verb := range []string{"list", "watch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: mapping.Resource.Group, Version: mapping.Resource.Version,
				Resource: mapping.Resource.Resource, Verb: verb}}}
		if err := c.Create(ctx, review); err != nil {
			return fmt.Errorf("ask whether the controller may %s %s: %w", verb, resource, err)
		}
		if !review.Status.Allowed {
			return fmt.Errorf("the controller may not %s %s in all namespaces; "+
				"give its ClusterRole (deploy/base/rbac.yaml) get, list and watch on it", verb, resource)
		}
	}
	return nil
}
