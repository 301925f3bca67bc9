package approval

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/templates"
)

// A grant is a Role and a RoleBinding of one name, in its owner's namespace, that the owner
// (an AccessRequest, or an AccessPolicy for its default permission) controls. The controller
// may escalate and bind, and the names come from objects tenants may create: an AccessRequest
// named as an administrator's Role, or a policy whose default grant's name is one. So a Role
// or RoleBinding that is not the owner's is never written over, adopted or deleted.

// notOwnedError: a grant's object exists and another (or nobody) controls it.
type notOwnedError struct {
	kind, namespace, name string
	owner                 client.Object
}

func (e *notOwnedError) Error() string {
	return fmt.Sprintf("%s %s/%s exists and is not %s's: nothing is written over it (rename or remove it)",
		e.kind, e.namespace, e.name, e.owner.GetName())
}

// LabelGrant marks the Roles and RoleBindings of grants, so that the controller's cache holds
// them and no other.
const LabelGrant = "connectors.cpaas.io/grant"

// writeGrant creates or updates owner's grant name: a Role of rules, bound to subjects.
// beforeCreate, when not nil, runs before either object is created; its error stops the write.
// cached, when not nil, holds the labelled grants: a grant found there as it would be written
// is not read from the API server again (each live request is evaluated now and then, and at
// each change of an object its checks select). Skipping writes nothing, so a cache
// that lags can only delay a repair to the next evaluation.
func writeGrant(ctx context.Context, c client.Client, cached client.Reader, owner client.Object, name string, rules []rbacv1.PolicyRule, subjects []rbacv1.Subject, beforeCreate func() error) error {
	meta := metav1.ObjectMeta{Name: name, Namespace: owner.GetNamespace()}
	if cached != nil && grantUpToDate(ctx, cached, owner, meta, rules, subjects) {
		return nil
	}
	role := &rbacv1.Role{ObjectMeta: meta}
	if err := writeOwned(ctx, c, owner, role, "Role", beforeCreate, func() { role.Rules = rules }); err != nil {
		return err
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: meta}
	return writeOwned(ctx, c, owner, rb, "RoleBinding", beforeCreate, func() {
		rb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
		rb.Subjects = subjects
	})
}

// writeOwned creates obj (after beforeCreate, when not nil), or updates it with set if owner
// controls it.
func writeOwned(ctx context.Context, c client.Client, owner, obj client.Object, kind string, beforeCreate func() error, set func()) error {
	_, err := controllerutil.CreateOrUpdate(ctx, c, obj, func() error {
		switch {
		case obj.GetUID() != "" && !metav1.IsControlledBy(obj, owner):
			return &notOwnedError{kind: kind, namespace: obj.GetNamespace(), name: obj.GetName(), owner: owner}
		case obj.GetUID() == "" && beforeCreate != nil:
			if err := beforeCreate(); err != nil {
				return err
			}
		}
		set()
		obj.SetLabels(labels.Merge(obj.GetLabels(), labels.Set{LabelGrant: "true"}))
		return controllerutil.SetControllerReference(owner, obj, c.Scheme())
	})
	return err
}

// grantUpToDate tells whether cached has owner's grant as writeGrant would write it.
func grantUpToDate(ctx context.Context, cached client.Reader, owner client.Object, meta metav1.ObjectMeta, rules []rbacv1.PolicyRule, subjects []rbacv1.Subject) bool {
	key := types.NamespacedName{Namespace: meta.Namespace, Name: meta.Name}
	var role rbacv1.Role
	var rb rbacv1.RoleBinding
	// Both read, whatever the first finds: each read of a kind starts its informer, which the
	// first evaluation, not a later one, should wait for.
	roleErr := cached.Get(ctx, key, &role, client.UnsafeDisableDeepCopy)
	rbErr := cached.Get(ctx, key, &rb, client.UnsafeDisableDeepCopy)
	if roleErr != nil || rbErr != nil {
		return false
	}
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: meta.Name}
	return metav1.IsControlledBy(&role, owner) && metav1.IsControlledBy(&rb, owner) &&
		equality.Semantic.DeepEqual(role.Rules, rules) && rb.RoleRef == roleRef && equality.Semantic.DeepEqual(rb.Subjects, subjects)
}

// deleteGrant deletes owner's grant name: the RoleBinding and the Role that owner controls, read
// through r, each only as the object read (a UID precondition), none of another's.
func deleteGrant(ctx context.Context, r client.Reader, c client.Client, owner client.Object, name string) error {
	key := types.NamespacedName{Namespace: owner.GetNamespace(), Name: name}
	for _, obj := range []client.Object{&rbacv1.RoleBinding{}, &rbacv1.Role{}} {
		err := r.Get(ctx, key, obj)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		if !metav1.IsControlledBy(obj, owner) {
			continue
		}
		uid := obj.GetUID()
		if err := c.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// GrantCacheView is what the controller's cache keeps of a labelled Role or RoleBinding: of one
// that may be a request's grant (controlled by an AccessRequest of its name), what
// grantUpToDate reads, when no larger than what the controller writes (rules of about a few
// role templates' output, one subject); nil for any other, which the cache keeps as a stub (a
// grant kept so is read and repaired through the API server). The label
// and the owner reference are anyone's who may create Roles to write (a tenant can read its
// requests' names and UIDs), so what is kept is bounded by its size, not by whose the object
// claims to be.
func GrantCacheView(obj client.Object) client.Object {
	if !v1alpha1.ControlledBy(obj, "AccessRequest", obj.GetName()) {
		return nil
	}
	switch o := obj.(type) {
	case *rbacv1.Role:
		if rulesWeight(o.Rules) <= maxCachedRulesWeight {
			return &rbacv1.Role{ObjectMeta: v1alpha1.ControllerMeta(o), Rules: o.Rules}
		}
	case *rbacv1.RoleBinding:
		if len(o.Subjects) <= 1 {
			return &rbacv1.RoleBinding{ObjectMeta: v1alpha1.ControllerMeta(o), RoleRef: o.RoleRef, Subjects: o.Subjects}
		}
	}
	return nil
}

// maxCachedRulesWeight bounds the rules a grant kept in the cache may have: four role
// templates' largest output (a request's rules join those of every policy gating it).
const maxCachedRulesWeight = 4 * templates.MaxOutput

// rulesWeight is about what rules take in memory: their strings, and a word or two for each.
func rulesWeight(rules []rbacv1.PolicyRule) int {
	weight := 0
	for _, r := range rules {
		for _, list := range [][]string{r.Verbs, r.APIGroups, r.Resources, r.ResourceNames, r.NonResourceURLs} {
			for _, s := range list {
				weight += len(s) + 16
			}
		}
	}
	return weight
}
