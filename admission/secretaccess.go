package admission

import (
	"cmp"
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

// secretReadable refuses a Connector whose writer may not get a Secret it names: the proxy
// and the controller's probes send its auth Secret's data to the tool at the Connector's
// address, which the writer chooses, so naming a Secret is reading it. Without the check,
// whoever may write Connectors of a namespace but not read its Secrets (a role for the
// Connectors alone) could name any of them and point the address at a server of their own. Its
// CA Secret (spec.caCertSecretRef) is held to the same rule: its certificates become the
// Connector's trust, and its CACertReady condition tells what the Secret holds. Checked for
// every spec written (a changed address redirects the Secret as much as a new name does); nil
// when allowed, or when the Connector names no Secret.
func (v *ConnectorValidator) secretReadable(ctx context.Context, u authenticationv1.UserInfo, c *v1alpha1.Connector) (*field.Error, error) {
	if v.Authz == nil {
		return nil, nil
	}
	for _, ref := range namedSecrets(c) {
		if refused, err := v.mayGetSecret(ctx, u, c.Namespace, ref); refused != nil || err != nil {
			return refused, err
		}
	}
	return nil, nil
}

// namedSecret is a Secret a Connector names, and the field that names it.
type namedSecret struct {
	field           *field.Path
	namespace, name string
}

// namedSecrets are the Secrets c names: its auth Secret (in another namespace when it says
// so) and its CA Secret.
func namedSecrets(c *v1alpha1.Connector) []namedSecret {
	var refs []namedSecret
	if c.Spec.Auth != nil && c.Spec.Auth.SecretRef != nil && c.Spec.Auth.SecretRef.Name != "" {
		ref := c.Spec.Auth.SecretRef
		refs = append(refs, namedSecret{field.NewPath("spec", "auth", "secretRef", "name"), cmp.Or(ref.Namespace, c.Namespace), ref.Name})
	}
	if ca := c.Spec.CACertSecretRef; ca != nil && ca.Name != "" && !(len(refs) == 1 && refs[0].namespace == c.Namespace && refs[0].name == ca.Name) {
		refs = append(refs, namedSecret{field.NewPath("spec", "caCertSecretRef", "name"), c.Namespace, ca.Name})
	}
	return refs // one Secret named twice is asked about once (and takes one of the namespace's turns)
}

// mayGetSecret asks whether u may get ref, in the turn of the writing Connector's namespace.
func (v *ConnectorValidator) mayGetSecret(ctx context.Context, u authenticationv1.UserInfo, namespace string, ref namedSecret) (*field.Error, error) {
	// In the namespace's turn: anyone who may write a Connector may have reviews sent (dry
	// runs too), and one tenant's loop naming Secrets that are not cached yet would otherwise
	// spend the reviews' rate limit that every namespace's writes share.
	v.turnsOnce.Do(v.initTurns)
	if err := waitTurn(ctx, v.reviews, namespace); err != nil {
		return nil, fmt.Errorf("the Connectors of namespace %s have had their turns of Secret reviews (%d a second, %d at once); try again: %w",
			namespace, secretReviewsPerNamespace, secretReviewBurst, err)
	}
	extra := make(map[string][]string, len(u.Extra))
	for k, values := range u.Extra {
		extra[k] = values
	}
	decision, _, err := v.Authz.Authorize(ctx, authorizer.AttributesRecord{
		User:            &user.DefaultInfo{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra},
		Verb:            "get",
		Namespace:       ref.namespace,
		APIVersion:      "v1",
		Resource:        "secrets",
		Name:            ref.name,
		ResourceRequest: true,
	})
	if err != nil {
		return nil, fmt.Errorf("could not ask whether %s may get Secret %s/%s (a Connector naming a Secret needs that); try again: %w", u.Username, ref.namespace, ref.name, err)
	}
	if decision == authorizer.DecisionAllow {
		return nil, nil
	}
	return field.Forbidden(ref.field, fmt.Sprintf(
		"%s may not get Secret %s/%s: a Connector uses the Secrets it names for the tool at its address, so naming a Secret takes the right to read it",
		u.Username, ref.namespace, ref.name)), nil
}
