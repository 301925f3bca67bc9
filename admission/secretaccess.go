package admission

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// Authorizer answers SubjectAccessReviews (access.Reviewer in production: cached, coalesced).
type Authorizer interface {
	Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error)
}

// secretReadable refuses a Connector whose writer may not get the Secret it names: the proxy
// and the controller's probes send that Secret's data to the tool at the Connector's address,
// which the writer chooses, so naming a Secret is reading it. Without the check, whoever may
// write Connectors of a namespace but not read its Secrets (a role for the Connectors alone)
// could name any of them and point the address at a server of their own. Checked for every
// spec written (a changed address redirects the Secret as much as a new name does); nil when
// allowed, or when the Connector names no Secret.
func (v *ConnectorValidator) secretReadable(ctx context.Context, u authenticationv1.UserInfo, c *v1alpha1.Connector) (*field.Error, error) {
	if v.Authz == nil || c.Spec.Auth == nil || c.Spec.Auth.SecretRef == nil || c.Spec.Auth.SecretRef.Name == "" {
		return nil, nil
	}
	ref := c.Spec.Auth.SecretRef
	namespace := c.Namespace
	if ref.Namespace != "" {
		namespace = ref.Namespace
	}
	// In the namespace's turn: anyone who may write a Connector may have reviews sent (dry
	// runs too), and one tenant's loop naming Secrets that are not cached yet would otherwise
	// spend the reviews' rate limit that every namespace's writes share.
	v.turnsOnce.Do(v.initTurns)
	if err := v.reviews.wait(ctx, c.Namespace); err != nil {
		return nil, fmt.Errorf("the Connectors of namespace %s have had their turns of Secret reviews (%d a second, %d at once); try again: %w",
			c.Namespace, secretReviewsPerNamespace, secretReviewBurst, err)
	}
	extra := make(map[string][]string, len(u.Extra))
	for k, values := range u.Extra {
		extra[k] = values
	}
	decision, _, err := v.Authz.Authorize(ctx, authorizer.AttributesRecord{
		User:            &user.DefaultInfo{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra},
		Verb:            "get",
		Namespace:       namespace,
		APIVersion:      "v1",
		Resource:        "secrets",
		Name:            ref.Name,
		ResourceRequest: true,
	})
	if err != nil {
		return nil, fmt.Errorf("could not ask whether %s may get Secret %s/%s (a Connector naming a Secret needs that); try again: %w", u.Username, namespace, ref.Name, err)
	}
	if decision == authorizer.DecisionAllow {
		return nil, nil
	}
	return field.Forbidden(field.NewPath("spec", "auth", "secretRef", "name"), fmt.Sprintf(
		"%s may not get Secret %s/%s: a Connector sends its Secret's data to the tool at its address, so naming a Secret takes the right to read it",
		u.Username, namespace, ref.Name)), nil
}
