package approval

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
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

// writeGrant creates or updates owner's grant name: a Role of rules, bound to subjects.
// beforeCreate, when not nil, runs before either object is created; its error stops the write.
func writeGrant(ctx context.Context, c client.Client, owner client.Object, name string, rules []rbacv1.PolicyRule, subjects []rbacv1.Subject, beforeCreate func() error) error {
	meta := metav1.ObjectMeta{Name: name, Namespace: owner.GetNamespace()}
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
		return controllerutil.SetControllerReference(owner, obj, c.Scheme())
	})
	return err
}

// deleteGrant deletes owner's grant name: the RoleBinding and the Role that owner controls,
// each only as the object read (a UID precondition), none of another's.
func deleteGrant(ctx context.Context, c client.Client, owner client.Object, name string) error {
	key := types.NamespacedName{Namespace: owner.GetNamespace(), Name: name}
	for _, obj := range []client.Object{&rbacv1.RoleBinding{}, &rbacv1.Role{}} {
		err := c.Get(ctx, key, obj)
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
