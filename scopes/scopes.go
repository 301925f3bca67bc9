// Package scopes gives Alauda's cluster-level and project-level Connectors their reach
// (connector_scope_permissions): a Connector in kube-public may be used by workloads of every
// namespace, and one in a project's own namespace by workloads of the project's namespaces.
//
// Reach is granted the one way this driver authorizes anything, RBAC: the controller keeps a
// RoleBinding in each such namespace that binds the ClusterRole ConnectorUserRole to the
// ServiceAccount groups of the namespaces in scope. Publishes, the proxy and the Connectors
// API then need nothing new (their SubjectAccessReviews see the binding), nodes read no
// Namespace, and a namespace that leaves a project loses the binding (and, after the
// authorization cache's TTL, the use).
//
// A project is a namespace labelled cpaas.io/inner-namespace=<its own name>; its members are
// the namespaces labelled cpaas.io/project=<that name>. Whoever may label namespaces therefore
// decides who shares a project's credentials: on a platform where tenants label their own
// namespaces, turn this off (--scoped-connectors=false).
package scopes

import (
	"context"
	"errors"
	"slices"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// ClusterNamespace holds cluster-level Connectors.
	ClusterNamespace = "kube-public"
	// LabelProjectNamespace marks a project's own namespace; its value is the project's name,
	// which must be the namespace's own.
	LabelProjectNamespace = "cpaas.io/inner-namespace"
	// LabelProject marks a namespace as a member of the project named by its value.
	LabelProject = "cpaas.io/project"
	// ConnectorUserRole is the ClusterRole bound: get, list and watch on Connectors.
	ConnectorUserRole = "connectors-csi-scoped-connector-user"
	// BindingName is the RoleBinding the controller keeps in a scoped namespace.
	BindingName = "connectors-csi-scope"
	// LabelManaged marks the RoleBindings this controller owns.
	LabelManaged = "connectors.cpaas.io/scope-binding"
)

// Reconciler keeps the scope RoleBinding of one namespace (kube-public or a project's).
type Reconciler struct {
	Client client.Client
}

// SetupWithManager reconciles a namespace when it or a namespace naming it as its project
// changes, and kube-public once at start.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("connectorscopes").
		Watches(&corev1.Namespace{}, scopesOf{}).
		Complete(r)
}

// scopesOf maps a Namespace event to the scoped namespaces it may change: itself (a project
// or kube-public) and the projects its label names, before and after. Other namespaces cost
// nothing: most of a cluster's namespace events lead to no request.
type scopesOf struct{}

func (scopesOf) enqueue(q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
	for _, o := range objs {
		if o == nil {
			continue
		}
		if _, project := o.GetLabels()[LabelProjectNamespace]; project || o.GetName() == ClusterNamespace {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: o.GetName()}})
		}
		if p := o.GetLabels()[LabelProject]; p != "" {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: p}})
		}
	}
}

func (s scopesOf) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	s.enqueue(q, e.Object)
}

func (s scopesOf) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if !equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
		s.enqueue(q, e.ObjectOld, e.ObjectNew)
	}
}

func (s scopesOf) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	s.enqueue(q, e.Object)
}

func (scopesOf) Generic(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

var _ handler.EventHandler = scopesOf{}

// Reconcile makes the namespace's scope RoleBinding what its labels ask for: kube-public's
// binds every ServiceAccount; a project's binds its own and its members' ServiceAccounts; any
// other namespace has none.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, req.NamespacedName, &ns); err != nil {
		// A deleted namespace takes its RoleBinding with it.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	subjects, scoped, err := r.subjects(ctx, &ns)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !scoped || ns.DeletionTimestamp != nil {
		return reconcile.Result{}, r.remove(ctx, ns.Name)
	}
	return reconcile.Result{}, r.apply(ctx, ns.Name, subjects)
}

// subjects are the groups the namespace's Connectors are shared with, and whether it is a
// scoped namespace at all.
func (r *Reconciler) subjects(ctx context.Context, ns *corev1.Namespace) ([]rbacv1.Subject, bool, error) {
	group := func(name string) rbacv1.Subject {
		return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
	}
	if ns.Name == ClusterNamespace {
		return []rbacv1.Subject{group("system:serviceaccounts")}, true, nil
	}
	// The label must name the namespace itself: another value would let any namespace claim
	// to be a project it is not.
	if ns.Labels[LabelProjectNamespace] != ns.Name {
		return nil, false, nil
	}
	var members corev1.NamespaceList
	if err := r.Client.List(ctx, &members, client.MatchingLabels{LabelProject: ns.Name}); err != nil {
		return nil, false, err
	}
	names := []string{ns.Name}
	for _, m := range members.Items {
		if m.Name != ns.Name && m.DeletionTimestamp == nil {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	out := make([]rbacv1.Subject, 0, len(names))
	for _, n := range names {
		out = append(out, group("system:serviceaccounts:"+n))
	}
	return out, true, nil
}

// apply creates or updates the RoleBinding when it differs from subjects. RoleBindings are
// read from the API server, not cached: this controller writes few, rarely.
func (r *Reconciler) apply(ctx context.Context, namespace string, subjects []rbacv1.Subject) error {
	want := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: BindingName, Namespace: namespace, Labels: map[string]string{LabelManaged: "true"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ConnectorUserRole},
		Subjects:   subjects,
	}
	got, err := r.managed(ctx, namespace)
	switch {
	case errors.Is(err, errNotManaged):
		return nil
	case apierrors.IsNotFound(err):
		return r.Client.Create(ctx, want)
	case err != nil:
		return err
	case got.RoleRef != want.RoleRef:
		// roleRef cannot change: replace the binding.
		if err := r.delete(ctx, got); err != nil {
			return err
		}
		return r.Client.Create(ctx, want)
	case equality.Semantic.DeepEqual(got.Subjects, want.Subjects):
		return nil
	}
	got.Subjects = want.Subjects
	return r.Client.Update(ctx, got)
}

// remove deletes the namespace's scope RoleBinding, if it has one the controller made.
func (r *Reconciler) remove(ctx context.Context, namespace string) error {
	got, err := r.managed(ctx, namespace)
	if errors.Is(err, errNotManaged) {
		return nil
	}
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	return r.delete(ctx, got)
}

// errNotManaged is managed's answer for a RoleBinding of the name that the controller did not
// make: neither apply nor remove touches it.
var errNotManaged = errors.New("the RoleBinding was not made by the scope controller")

// managed reads the namespace's RoleBinding BindingName: NotFound when there is none, and
// errNotManaged, logged, when there is one the controller did not make (without LabelManaged). Such a
// binding belongs to whoever may write RoleBindings there, so it is neither changed nor
// deleted: a namespace's labels are written by others than its owner (a member names its
// project, cpaas.io/project=<any namespace>), and would otherwise let them have the controller
// delete a binding of that name in any namespace. The namespace's Connectors are not shared
// until that binding is renamed.
func (r *Reconciler) managed(ctx context.Context, namespace string) (*rbacv1.RoleBinding, error) {
	var got rbacv1.RoleBinding
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: BindingName}, &got); err != nil {
		return nil, err
	}
	if got.Labels[LabelManaged] != "true" {
		klog.FromContext(ctx).Info("RoleBinding not made by the scope controller is left alone; the namespace's Connectors are not shared while it has this name",
			"roleBinding", klog.KObj(&got), "label", LabelManaged)
		return nil, errNotManaged
	}
	return &got, nil
}

// delete deletes the RoleBinding read, not one made in its place since.
func (r *Reconciler) delete(ctx context.Context, rb *rbacv1.RoleBinding) error {
	return client.IgnoreNotFound(r.Client.Delete(ctx, rb, client.Preconditions{UID: &rb.UID}))
}
