package approval

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/fairqueue"
)

// PolicyController keeps each AccessPolicy's status (matched Connectors, whether its checks
// can be evaluated) and materialises its defaultPermission as a Role and RoleBinding owned by
// the policy, for the selected ServiceAccounts (SPEC §2.3). It runs on the elected leader.
type PolicyController struct {
	Client client.Client
	// Reader reads a template ConfigMap, uncached, that Client's cache does not have yet.
	Reader client.Reader
	// Grants, when set, is the cache of the Roles and RoleBindings labelled as grants
	// (their names at least): a policy with no default grant to keep deletes one only if it
	// holds one of the name, rather than reading both live at every reconcile (each policy's,
	// at a new leader's start).
	Grants          client.Reader
	SystemNamespace string
	// States compiles CEL states; shared with the Controller.
	States *States

	templates *Templates
	kinds     *kindChecker
	// invalid is when each policy with an invalid check was first found so (since its last
	// change): it is looked at again after as long as it has been invalid, from a minute up to
	// invalidRecheckMax.
	invalid sync.Map // types.NamespacedName → time.Time
}

// invalidRecheckMax bounds how long a policy with an invalid check waits to be looked at
// again: each look costs the API server reviews of the kinds it names and reads of its
// grant and templates, and a tenant can make a thousand such policies.
const invalidRecheckMax = 30 * time.Minute

// SetupWithManager registers the controller.
func (c *PolicyController) SetupWithManager(mgr ctrl.Manager) error {
	c.templates = NewTemplates()
	c.kinds = newKindChecker(c.Client)
	return ctrl.NewControllerManagedBy(mgr).
		Named("accesspolicy").
		// Not on a write of its status alone (its own, after each reconcile that changed it):
		// a reconcile reads the policy's default grant from the API server. The informer's
		// periodic resync (no new version) still reconciles, repairing a grant removed by hand.
		For(&v1alpha1.AccessPolicy{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, resync))).
		// A Connector's change concerns the policies that select it, before or after: their
		// matched Connectors and default grants; each policy reconciled lists its namespace's
		// Connectors and reads its grant.
		Watches(&v1alpha1.Connector{}, handler.Funcs{
			CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				c.enqueueSelectingConnector(ctx, q, e.Object)
			},
			UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				c.enqueueSelectingConnector(ctx, q, e.ObjectOld, e.ObjectNew)
			},
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				c.enqueueSelectingConnector(ctx, q, e.Object)
			},
		}, notStatusOnly).
		// A namespace created, deleted or relabelled changes the subjects of a defaultPermission
		// that selects it by label (before or after), and of no other policy: each policy
		// reconciled reads its grant from the API server.
		Watches(&corev1.Namespace{}, handler.Funcs{
			CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				c.enqueueSelecting(ctx, q, e.Object.GetLabels())
			},
			UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				c.enqueueSelecting(ctx, q, e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
			},
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				c.enqueueSelecting(ctx, q, e.Object.GetLabels())
			},
		}, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// A role or check template changed (the cache holds the system namespace's ConfigMaps).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(c.policiesUsingTemplate)).
		// In turns by namespace: a tenant's thousands of policies, all woken by one namespace
		// event, do not hold another tenant's policy behind them.
		WithOptions(controller.Options{NewQueue: fairqueue.New(nil)}).
		Complete(c)
}

// resync passes the informer's periodic resync of an object, whose version is the one it had.
var resync = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	return e.ObjectOld.GetResourceVersion() == e.ObjectNew.GetResourceVersion()
}}

// list lists the policies opts select that keep (nil: all), uncopied (only names are read).
func (c *PolicyController) list(ctx context.Context, keep func(*v1alpha1.AccessPolicy) bool, opts ...client.ListOption) []reconcile.Request {
	var list v1alpha1.AccessPolicyList
	if err := c.Client.List(ctx, &list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		return nil
	}
	return requestsOf(list.Items, keep)
}

// enqueueSelectingConnector queues the policies of the Connector's namespace that select any
// of versions (its old and new).
func (c *PolicyController) enqueueSelectingConnector(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], versions ...client.Object) {
	var conns []*v1alpha1.Connector
	for _, o := range versions {
		if conn, ok := o.(*v1alpha1.Connector); ok {
			conns = append(conns, conn)
		}
	}
	if len(conns) == 0 {
		return
	}
	for _, r := range c.list(ctx, func(p *v1alpha1.AccessPolicy) bool {
		return slices.ContainsFunc(conns, func(conn *v1alpha1.Connector) bool { return Selects(&p.Spec.Connector, conn) })
	}, client.InNamespace(conns[0].Namespace)) {
		q.Add(r)
	}
}

// enqueueSelecting queues the policies whose defaultPermission selects, by label, a namespace
// of any of labelSets (a relabelled namespace's old and new labels).
func (c *PolicyController) enqueueSelecting(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], labelSets ...map[string]string) {
	for _, r := range c.list(ctx, func(p *v1alpha1.AccessPolicy) bool {
		return slices.ContainsFunc(labelSets, func(l map[string]string) bool { return selectsNamespace(p.Spec.DefaultPermission, l) })
	}) {
		q.Add(r)
	}
}

// selectsNamespace tells whether a defaultPermission selects, by label, a namespace of these
// labels.
func selectsNamespace(dp *v1alpha1.DefaultPermission, namespaceLabels map[string]string) bool {
	if !selectsNamespacesByLabel(dp) {
		return false
	}
	for _, sa := range dp.BindingTemplate.ServiceAccounts {
		if len(sa.NamespaceSelector.MatchLabels) == 0 && len(sa.NamespaceSelector.MatchExpressions) == 0 {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sa.NamespaceSelector.MatchLabels,
			MatchExpressions: sa.NamespaceSelector.MatchExpressions})
		if err != nil || selector.Matches(labels.Set(namespaceLabels)) {
			return true // a selector that does not parse: the reconcile says so
		}
	}
	return false
}

// policiesUsingTemplate lists the policies that name the template ConfigMap o.
func (c *PolicyController) policiesUsingTemplate(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != c.SystemNamespace {
		return nil
	}
	return c.list(ctx, func(p *v1alpha1.AccessPolicy) bool { return usesTemplate(&p.Spec, o.GetName()) })
}

// usesTemplate tells whether a policy names the template ConfigMap name, as a role template or
// a check's.
func usesTemplate(spec *v1alpha1.AccessPolicySpec, name string) bool {
	return slices.Contains(templatesOf(spec), name)
}

// templatesOf are the template ConfigMaps a policy names: role templates and checks'.
func templatesOf(spec *v1alpha1.AccessPolicySpec) []string {
	var names []string
	add := func(ref *v1alpha1.TemplateRef) {
		if ref != nil && ref.ConfigMap != nil {
			names = append(names, ref.ConfigMap.Name)
		}
	}
	if dp := spec.DefaultPermission; dp != nil {
		add(&dp.RoleTemplate.Ref)
	}
	if cgp := spec.CheckGrantedPermission; cgp != nil {
		add(&cgp.Spec.RoleTemplate.Ref)
		for _, ch := range cgp.Spec.Checks {
			add(ch.Ref)
		}
	}
	return names
}

// selectsNamespacesByLabel tells whether a defaultPermission's subjects depend on which
// namespaces have which labels.
func selectsNamespacesByLabel(dp *v1alpha1.DefaultPermission) bool {
	if dp == nil {
		return false
	}
	for _, sel := range dp.BindingTemplate.ServiceAccounts {
		if len(sel.NamespaceSelector.MatchLabels) > 0 || len(sel.NamespaceSelector.MatchExpressions) > 0 {
			return true
		}
	}
	return false
}

// defaultGrantName names the Role and RoleBinding of a policy's defaultPermission.
func defaultGrantName(policy string) string { return "connectors-default-" + policy }

// Reconcile updates one policy.
func (c *PolicyController) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cached v1alpha1.AccessPolicy
	if err := c.Client.Get(ctx, req.NamespacedName, &cached); err != nil {
		if apierrors.IsNotFound(err) {
			c.invalid.Delete(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	p := cached.DeepCopy()
	before := p.Status.DeepCopy()
	set := func(typ string, ok bool, reason, format string, args ...any) {
		v1alpha1.SetCondition(&p.Status.Conditions, p.Generation, typ, ok, reason, format, args...)
	}

	var connectors v1alpha1.ConnectorList
	// Uncopied: every Connector event of the namespace reconciles each of its policies, and
	// they only read the Connectors (kube-public's may be many).
	if err := c.Client.List(ctx, &connectors, client.InNamespace(p.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var matched []*v1alpha1.Connector
	p.Status.MatchedConnectors = nil
	for i := range connectors.Items {
		if Selects(&p.Spec.Connector, &connectors.Items[i]) {
			matched = append(matched, &connectors.Items[i])
			p.Status.MatchedConnectors = append(p.Status.MatchedConnectors, v1alpha1.LocalObjectRef{Name: connectors.Items[i].Name})
		}
	}
	sort.Slice(p.Status.MatchedConnectors, func(i, j int) bool { return p.Status.MatchedConnectors[i].Name < p.Status.MatchedConnectors[j].Name })
	if len(matched) == 0 {
		set(v1alpha1.ConditionConnectorsMatched, false, "NoneMatched", "no Connector in namespace %s matches", p.Namespace)
	} else {
		set(v1alpha1.ConditionConnectorsMatched, true, "Matched", "%d Connector(s) match", len(matched))
	}

	syncErr := c.syncDefaultPermission(ctx, p, matched)
	syncReason := v1alpha1.ReasonSyncFailed
	if isInvalidRoleTemplate(syncErr) {
		syncReason = v1alpha1.ReasonInvalidRoleTemplate
	}
	switch {
	case syncErr != nil:
		set(v1alpha1.ConditionPermissionSync, false, syncReason, "%v", syncErr)
	case p.Spec.DefaultPermission == nil:
		set(v1alpha1.ConditionPermissionSync, true, v1alpha1.ReasonNoPermissionRequired, "the policy has no defaultPermission")
	default:
		set(v1alpha1.ConditionPermissionSync, true, v1alpha1.ReasonSynced, "Role and RoleBinding %s grant the default permission", defaultGrantName(p.Name))
	}
	checkProblem := c.validateChecks(ctx, p)
	switch {
	case syncErr != nil:
		set(v1alpha1.ConditionReady, false, syncReason, "the default permission could not be written: %v", syncErr)
	case checkProblem != "":
		set(v1alpha1.ConditionReady, false, "InvalidCheck", "%s; requests gated by this policy are never granted until it is fixed", checkProblem)
	default:
		set(v1alpha1.ConditionReady, true, "Ready", "the policy is in effect")
	}
	if !equality.Semantic.DeepEqual(before.MatchedConnectors, p.Status.MatchedConnectors) || !v1alpha1.ConditionsEqual(before.Conditions, p.Status.Conditions) {
		if err := c.Client.Status().Update(ctx, p); err != nil {
			return reconcile.Result{}, err
		}
	}
	if syncErr == nil && checkProblem != "" {
		// A kind served or allowed later (a CRD installed, RBAC given) makes the check valid:
		// asked again once the kind checker's answer expires, then less and less often.
		return reconcile.Result{RequeueAfter: c.invalidRecheck(req.NamespacedName, p.UID, p.Generation)}, nil
	}
	c.invalid.Delete(req.NamespacedName)
	return reconcile.Result{}, syncErr
}

// invalidSince is when a policy (by UID and generation: one made again under the name is
// another) was first found with an invalid check.
type invalidSince struct {
	uid        types.UID
	generation int64
	at         time.Time
}

// invalidRecheck is when to look again at a policy found with an invalid check: after as long
// as it has been invalid since its last change, at least kindAnswerTTL, at most
// invalidRecheckMax.
func (c *PolicyController) invalidRecheck(nn types.NamespacedName, uid types.UID, generation int64) time.Duration {
	now := time.Now()
	v, _ := c.invalid.LoadOrStore(nn, invalidSince{uid: uid, generation: generation, at: now})
	since := v.(invalidSince)
	if since.uid != uid || since.generation != generation {
		since = invalidSince{uid: uid, generation: generation, at: now}
		c.invalid.Store(nn, since)
	}
	return min(max(now.Sub(since.at), kindAnswerTTL), invalidRecheckMax)
}

// validateChecks says what is wrong with the policy's checks, or "".
func (c *PolicyController) validateChecks(ctx context.Context, p *v1alpha1.AccessPolicy) string {
	if p.Spec.CheckGrantedPermission == nil {
		return ""
	}
	var problems []string
	for _, check := range p.Spec.CheckGrantedPermission.Spec.Checks {
		if err := c.validateCheck(ctx, check, p.Namespace); err != nil {
			problems = append(problems, fmt.Sprintf("check %s: %v", check.Name, err))
		}
	}
	return strings.Join(problems, "; ")
}

// validateCheck finds what can be known of a check before a Pod asks: its template ConfigMap,
// the parse of its label templates (an inline one is a tenant's: no loops), its CEL and
// whether its kind may be read (kindChecker).
func (c *PolicyController) validateCheck(ctx context.Context, check v1alpha1.Check, namespace string) error {
	spec := check.Spec
	if check.Ref != nil && check.Ref.ConfigMap != nil {
		var cm corev1.ConfigMap
		if err := readTemplate(ctx, c.Client, c.Reader, types.NamespacedName{Namespace: c.SystemNamespace, Name: check.Ref.ConfigMap.Name}, &cm); err != nil {
			return fmt.Errorf("ConfigMap %s/%s: %w", c.SystemNamespace, check.Ref.ConfigMap.Name, err)
		}
		var err error
		if spec, err = c.templates.Check(&cm); err != nil {
			return err
		}
	}
	if spec == nil {
		return nil
	}
	if err := c.templates.CheckMatchLabels(spec, check.Ref == nil); err != nil {
		return err
	}
	if err := c.States.Validate(spec.State); err != nil {
		return err
	}
	gv, err := schema.ParseGroupVersion(spec.Selector.ObjectRef.APIVersion)
	if err != nil {
		return fmt.Errorf("objectRef apiVersion %q: %w", spec.Selector.ObjectRef.APIVersion, err)
	}
	err = c.kinds.check(ctx, gv.WithKind(spec.Selector.ObjectRef.Kind), namespace)
	if meta.IsNoMatchError(err) || !kindAnswered(err) {
		// Not served (yet: a CRD installed later), or no answer now (not looked up in this
		// turn, the API server not answering): an evaluation of the check says so when a Pod
		// asks, and a policy reconcile is no reason to wait.
		return nil
	}
	return err
}

// syncDefaultPermission writes (or removes) the policy's default Role and RoleBinding.
func (c *PolicyController) syncDefaultPermission(ctx context.Context, p *v1alpha1.AccessPolicy, matched []*v1alpha1.Connector) error {
	name := defaultGrantName(p.Name)
	dp := p.Spec.DefaultPermission
	if dp == nil || len(matched) == 0 {
		if neverGranted(p) && !c.mayHoldGrant(ctx, p.Namespace, name) {
			return nil
		}
		return deleteGrant(ctx, c.Client, c.Client, p, name)
	}
	if dp.RoleTemplate.Ref.ConfigMap == nil {
		return fmt.Errorf("defaultPermission.roleTemplate names no ConfigMap")
	}
	var cm corev1.ConfigMap
	if err := readTemplate(ctx, c.Client, c.Reader, types.NamespacedName{Namespace: c.SystemNamespace, Name: dp.RoleTemplate.Ref.ConfigMap.Name}, &cm); err != nil {
		return fmt.Errorf("role template ConfigMap %s/%s: %w", c.SystemNamespace, dp.RoleTemplate.Ref.ConfigMap.Name, err)
	}
	var rules []rbacv1.PolicyRule
	for _, conn := range matched {
		connMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(conn)
		if err != nil {
			return err
		}
		delete(connMap, "status") // as for a request's grant: a status write alone wakes no policy
		r, err := c.templates.Rules(&cm, map[string]any{keyConnector: connMap, "object": map[string]any{}})
		if err != nil {
			return err
		}
		rules = append(rules, r...)
	}
	subjects, err := c.subjects(ctx, dp.BindingTemplate)
	if err != nil {
		return err
	}
	return writeGrant(ctx, c.Client, nil, p, name, rules, subjects, nil)
}

// neverGranted tells whether the policy's last reconcile found it had no default grant to keep
// (a gating policy): only then is the grants' cache trusted to say there is none. A grant
// written a moment ago may not be in the cache yet, and one whose label someone removed never
// is: a policy that had a grant deletes it as read from the API server.
func neverGranted(p *v1alpha1.AccessPolicy) bool {
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionPermissionSync)
	return c != nil && c.Reason == v1alpha1.ReasonNoPermissionRequired
}

// mayHoldGrant tells whether the namespace may hold a grant of the name: the grants' cache
// holds a Role or RoleBinding of it, or there is no such cache (or it cannot say).
func (c *PolicyController) mayHoldGrant(ctx context.Context, namespace, name string) bool {
	if c.Grants == nil {
		return true
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	for _, obj := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if err := c.Grants.Get(ctx, key, obj, client.UnsafeDisableDeepCopy); !apierrors.IsNotFound(err) {
			return true
		}
	}
	return false
}

// maxGrantSubjects bounds the subjects a binding template expands to: names times namespaces
// would otherwise be as large as a tenant makes them (256 names of 256 namespaces in each of 16
// selectors), held in the controller's memory and written into one RoleBinding.
const maxGrantSubjects = 1000

// subjects expands a binding template: named ServiceAccounts of the selected namespaces, or
// every ServiceAccount of them (the group system:serviceaccounts:<ns>) when no names are given;
// at most maxGrantSubjects.
func (c *PolicyController) subjects(ctx context.Context, bt v1alpha1.BindingTemplate) ([]rbacv1.Subject, error) {
	var out []rbacv1.Subject
	tooMany := fmt.Errorf("bindingTemplate: more than %d subjects (ServiceAccount names times namespaces); name fewer, or none to bind each namespace's ServiceAccounts as a group", maxGrantSubjects)
	for _, sel := range bt.ServiceAccounts {
		namespaces := map[string]bool{}
		for _, n := range sel.NamespaceSelector.Names {
			namespaces[n] = true
		}
		if len(sel.NamespaceSelector.MatchLabels) > 0 || len(sel.NamespaceSelector.MatchExpressions) > 0 {
			ls, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sel.NamespaceSelector.MatchLabels,
				MatchExpressions: sel.NamespaceSelector.MatchExpressions})
			if err != nil {
				return nil, fmt.Errorf("namespaceSelector: %w", err)
			}
			var list corev1.NamespaceList
			if err := c.Client.List(ctx, &list, client.MatchingLabelsSelector{Selector: ls}); err != nil {
				return nil, err
			}
			for _, n := range list.Items {
				namespaces[n.Name] = true
			}
		}
		nsNames := make([]string, 0, len(namespaces))
		for n := range namespaces {
			nsNames = append(nsNames, n)
		}
		sort.Strings(nsNames)
		if len(out)+len(nsNames)*max(len(sel.Names), 1) > maxGrantSubjects {
			return nil, tooMany
		}
		for _, ns := range nsNames {
			if len(sel.Names) == 0 {
				out = append(out, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:serviceaccounts:" + ns})
				continue
			}
			for _, n := range sel.Names {
				out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: n, Namespace: ns})
			}
		}
	}
	return out, nil
}
