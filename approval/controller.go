package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/fairqueue"
	"github.com/kube-connectors/connectors-csi/node/volumeattrs"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// AnnotationRevoked on an AccessRequest asks the controller to revoke its grant: the node sets
// it, to the time, when the Pod's volume is unpublished.
const AnnotationRevoked = "connectors.cpaas.io/revoked"

// Controller evaluates AccessRequests (SPEC §6): it matches the gating AccessPolicies of the
// Connector, snapshots them, resolves and reads their checks (watching each check kind through
// an informer started on demand, so an approval is seen at once), grants access as a Role and
// RoleBinding owned by the request once every check passes, revokes the grant when the Pod
// ends, the Connector goes or the volume is unpublished, and records every transition as an
// Event. It runs on the elected leader.
type Controller struct {
	Client client.Client
	// Reader reads uncached: Pods and their Tekton owners, by name (they are not watched), and
	// a template ConfigMap that Client's cache (the system namespace only) does not have yet.
	Reader client.Reader
	// Cache holds the check kinds' informers, started on demand, and the grants' Roles and
	// RoleBindings (LabelGrant; the driver's cache holds only those of them).
	Cache           cache.Cache
	SystemNamespace string
	// DriverName is the CSI driver whose inline volumes name the Connectors a request may be
	// for (empty: any driver's).
	DriverName string
	Recorder   events.EventRecorder
	// Retention is how long a finished (revoked) AccessRequest is kept; RetainedPerNamespace
	// how many finished requests of one Pod namespace are kept in a request's namespace at
	// most (0: no bound), the oldest deleted first.
	Retention            time.Duration
	RetainedPerNamespace int
	// PodRecheck is how often a live request reads its Pod again (0: only on events).
	PodRecheck time.Duration
	// Rechecks paces the evaluations of live requests that nothing woke (rechecks.go): a turn
	// each, given in turns by namespace and never waited for by a worker (nil: no pace).
	// RecheckReader reads their Pods and
	// owners, apart from the rate limit of Reader (nil: Reader).
	Rechecks      *rate.Limiter
	RecheckReader client.Reader
	// States evaluates CEL states; shared with the PolicyController.
	States *States
	// EvaluationBudget bounds the time the checks of one request take together (0: no bound):
	// checks × matched objects × a state's time would otherwise let one tenant's policy hold
	// the controller's workers, and every tenant's approvals, for minutes.
	EvaluationBudget time.Duration
	// MaxCheckObjects bounds the objects one check reads (0: no bound).
	MaxCheckObjects int
	// MaxCheckObjectBytes is the bound the cache keeps check objects whole within
	// (BoundCheckObjects), for the message of a check that matches a larger one.
	MaxCheckObjectBytes int
	// MaxPolicyBytes bounds the policy specs one request records, their JSON together (0: no
	// bound; the flag's 0 is its default). A request keeps its policies' specs as they matched (Alauda's policySpec) and is
	// kept for Retention after its Pod: without a bound, a tenant's policy of a megabyte would
	// be copied into etcd once per gated Pod it ever started.
	MaxPolicyBytes int

	templates *Templates
	kinds     *kindChecker
	ctrl      controller.Controller
	watched   sync.Map // schema.GroupVersionKind → struct{}: the kinds whose watch started
	starting  singleflight.Group
	// unserved holds, for a minute, the kinds the API server did not serve when a watch was to
	// start: each try asks the RESTMapper, which fetches discovery again for an unknown group,
	// and a tenant's policy may name any kind.
	unserved *utilcache.LRUExpireCache
	reads    checkReads
	written  ownWrites
	turns    recheckTurns
}

// SetupWithManager registers the controller.
func (c *Controller) SetupWithManager(mgr ctrl.Manager) error {
	var err error
	c.templates = NewTemplates()
	c.turns.paced(c.Rechecks, c.PodRecheck, c.placeInQueue)
	c.kinds = newKindChecker(c.Client)
	c.unserved = utilcache.NewLRUExpireCache(maxUnservedKinds)
	// The grants' informers join the manager's start: without list and watch on Roles and
	// RoleBindings the controller does not start (its cache never syncs, the reflector says
	// why), rather than block a worker for good at its first grant.
	for _, obj := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if _, err := c.Cache.GetInformer(context.Background(), obj); err != nil {
			return err
		}
	}
	if err := indexRequests(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	// No Pod is watched: at 5,000 nodes that cache alone would outgrow the controller. A
	// request's Pod is read by name when the request is evaluated, and again every PodRecheck
	// while it is live; revocation itself comes from the node (unpublish) and from the Pod's
	// bound token, which dies with the Pod.
	c.ctrl, err = ctrl.NewControllerManagedBy(mgr).
		Named("accessrequest").
		// Not on the event of its own status write: that evaluation would read the Pod and its
		// owners again to find what it just wrote.
		Watches(&v1alpha1.AccessRequest{}, c.turns.waking(&handler.EnqueueRequestForObject{}),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: c.notOwnWrite})).
		Watches(&v1alpha1.AccessRequest{}, c.turns.handler(c.requestsOfEarlierPods)).
		// A Connector's or a policy's status, which their controllers write at each probe or
		// match that changes it, wakes no request: an evaluation reads their spec and metadata,
		// and a shared Connector's tool that flaps would otherwise evaluate all its requests
		// again at each flap.
		Watches(&v1alpha1.Connector{}, c.turns.handler(c.requestsOfConnector), notStatusOnly).
		// A policy's change wakes only the requests that recorded none (their first
		// evaluation, none matching, too large): the others keep the policies they recorded.
		Watches(&v1alpha1.AccessPolicy{}, c.turns.handler(c.requestsWithoutPolicies), specChanged).
		// A check or role template changed: its checks' selectors may have (see checkReads).
		Watches(&corev1.ConfigMap{}, c.turns.handler(c.requestsUsingTemplate)).
		// A grant that appears, or changes, after its request was revoked: written by a leader
		// that lost its lease between its check and its write while the new one revoked.
		Watches(&rbacv1.Role{}, c.turns.handler(c.revokedOwner), notDeleted).
		Watches(&rbacv1.RoleBinding{}, c.turns.handler(c.revokedOwner), notDeleted).
		// Deferred rechecks, each in its turn (see recheckTurns).
		WatchesRawSource(source.Func(c.turns.dispatcher)).
		// In turns by namespace, and within a Connector's namespace by the Pods' (tenants sharing
		// a Connector): one tenant's backlog (many requests, or requests slow to evaluate) does
		// not hold another's approval behind it.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, NewQueue: fairqueue.New(c.placeInQueue)}).
		Build(c)
	if err != nil {
		return err
	}
	// The kinds the system namespace's check templates name (the built-in ApprovalTask's) are
	// watched as the leader starts, in the system namespace's turn of lookups: looked up at
	// their first evaluation, they would wait behind the turns that tenants' policies take.
	return mgr.Add(manager.RunnableFunc(c.watchTemplateKinds))
}

// watchTemplateKinds starts the watches of the kinds the check templates of the system
// namespace name, once the caches hold them; what fails is left to the evaluations.
func (c *Controller) watchTemplateKinds(ctx context.Context) error {
	if !c.Cache.WaitForCacheSync(ctx) {
		return nil
	}
	var cms corev1.ConfigMapList
	if err := c.Client.List(ctx, &cms, client.InNamespace(c.SystemNamespace)); err != nil {
		klog.FromContext(ctx).Error(err, "List check templates to watch their kinds")
		return nil
	}
	for i := range cms.Items {
		if _, isCheck := cms.Items[i].Data[keyCheck]; !isCheck {
			continue
		}
		spec, err := c.templates.Check(&cms.Items[i])
		if err != nil {
			continue
		}
		if gv, err := schema.ParseGroupVersion(spec.Selector.ObjectRef.APIVersion); err == nil && spec.Selector.ObjectRef.Kind != "" {
			if err := c.watchKind(ctx, gv.WithKind(spec.Selector.ObjectRef.Kind), c.SystemNamespace); err != nil {
				klog.FromContext(ctx).V(2).Info("Check template kind not watched at start", "template", cms.Items[i].Name, "err", err)
			}
		}
	}
	return nil
}

// notDeleted passes every event but a delete.
var notDeleted = builder.WithPredicates(predicate.Funcs{DeleteFunc: func(event.DeleteEvent) bool { return false }})

// revokedOwner wakes the revoked request a grant's object is named as, which deletes it
// (deleteLateGrant); a live request's grant wakes nothing (its evaluation keeps it as it should
// be).
func (c *Controller) revokedOwner(ctx context.Context, o client.Object) []reconcile.Request {
	key := client.ObjectKeyFromObject(o)
	var ar v1alpha1.AccessRequest
	if err := c.Client.Get(ctx, key, &ar, client.UnsafeDisableDeepCopy); err != nil || !revoked(&ar) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// notStatusOnly passes every event but an update of the status alone (spec changes move the
// generation; labels and annotations are metadata of their own).
// specChanged passes an object's creation, deletion and spec changes (its generation).
var specChanged = builder.WithPredicates(predicate.GenerationChangedPredicate{})

var notStatusOnly = builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{},
	predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))

// placeInQueue puts a request in its Pod's namespace's turn within its own namespace's; one never
// evaluated goes first there (a publish waits on it). Read from the cache, uncopied: the work
// queue asks under its lock.
func (c *Controller) placeInQueue(r reconcile.Request) fairqueue.Placement {
	var ar v1alpha1.AccessRequest
	if err := c.Client.Get(context.Background(), r.NamespacedName, &ar, client.UnsafeDisableDeepCopy); err != nil {
		return fairqueue.Placement{}
	}
	return fairqueue.Placement{Within: ar.Spec.Context.ObjectRef.Namespace, Urgent: len(ar.Status.Conditions) == 0}
}

// requests lists the requests opts select that keep (nil: all).
func (c *Controller) requests(ctx context.Context, keep func(*v1alpha1.AccessRequest) bool, opts ...client.ListOption) []reconcile.Request {
	var list v1alpha1.AccessRequestList
	// Uncopied: only names are read, of every live request of a namespace, Connector or
	// template.
	if err := c.Client.List(ctx, &list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		return nil
	}
	return requestsOf(list.Items, keep)
}

// requestsOf are the reconcile requests of the items that keep (nil: all).
func requestsOf[T any, P interface {
	*T
	client.Object
}](items []T, keep func(P) bool) []reconcile.Request {
	var out []reconcile.Request
	for i := range items {
		if o := P(&items[i]); keep == nil || keep(o) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		}
	}
	return out
}

// Field indexes of the AccessRequest cache, so that an event finds its requests without a scan
// of every request of the cluster. All but indexPod hold live requests only: a revoked one is
// done, and is kept --accessrequest-retention, so the wakes they serve would otherwise walk a
// day of a busy namespace's history at each policy, Connector, template or check object event.
const (
	indexConnector    = "live.spec.connectorRef.name"
	indexNoPolicies   = "live.status.policies.none"
	indexPodNamespace = "live.spec.context.objectRef.namespace"
	indexTemplate     = "live.status.policies.templates"
	// indexPod is "<namespace>/<name>" of the request's Pod, revoked requests too.
	indexPod = "spec.context.objectRef"
)

// requestIndexes are the fields indexRequests indexes, and how.
var requestIndexes = map[string]client.IndexerFunc{
	indexConnector: liveOnly(func(ar *v1alpha1.AccessRequest) []string { return []string{ar.Spec.ConnectorRef.Name} }),
	indexNoPolicies: liveOnly(func(ar *v1alpha1.AccessRequest) []string {
		if len(ar.Status.Policies) > 0 {
			return nil
		}
		return []string{"true"}
	}),
	indexPodNamespace: liveOnly(func(ar *v1alpha1.AccessRequest) []string { return []string{ar.Spec.Context.ObjectRef.Namespace} }),
	indexTemplate: liveOnly(func(ar *v1alpha1.AccessRequest) []string {
		var names []string
		for _, p := range ar.Status.Policies {
			if p.PolicySpec != nil {
				names = append(names, templatesOf(p.PolicySpec)...)
			}
		}
		return names
	}),
	indexPod: func(o client.Object) []string {
		ref := o.(*v1alpha1.AccessRequest).Spec.Context.ObjectRef
		return []string{ref.Namespace + "/" + ref.Name}
	},
}

func indexRequests(ctx context.Context, indexer client.FieldIndexer) error {
	for field, extract := range requestIndexes {
		if err := indexer.IndexField(ctx, &v1alpha1.AccessRequest{}, field, extract); err != nil {
			return err
		}
	}
	return nil
}

// liveOnly indexes what values gives of a request that is not revoked, and nothing of one that is.
func liveOnly(values func(*v1alpha1.AccessRequest) []string) client.IndexerFunc {
	return func(o client.Object) []string {
		if ar := o.(*v1alpha1.AccessRequest); !revoked(ar) {
			return values(ar)
		}
		return nil
	}
}

func (c *Controller) requestsOfConnector(ctx context.Context, o client.Object) []reconcile.Request {
	return c.requests(ctx, nil, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexConnector: o.GetName()})
}

// requestsWithoutPolicies wakes the live requests of o's namespace that recorded no policy: a
// policy's change reaches no other (each keeps what it recorded), and a kube-public policy's
// edit would otherwise evaluate every live request of its shared Connectors.
func (c *Controller) requestsWithoutPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	return c.requests(ctx, nil, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexNoPolicies: "true"})
}

// requestsUsingTemplate wakes the live requests whose snapshotted policies name the template
// ConfigMap o (the cache holds the system namespace's only).
func (c *Controller) requestsUsingTemplate(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != c.SystemNamespace {
		return nil
	}
	return c.requests(ctx, nil, client.MatchingFields{indexTemplate: o.GetName()})
}

// requestsOfEarlierPods wakes, on a request's event, the live requests of other Pods of its
// Pod's name (another UID): a Pod of that name exists now, so the earlier one is gone, and its
// grants, which RBAC names by the Pod's name (SPEC §4.4), are revoked at once rather than at
// its next PodRecheck.
func (c *Controller) requestsOfEarlierPods(ctx context.Context, o client.Object) []reconcile.Request {
	ar, ok := o.(*v1alpha1.AccessRequest)
	// Only a request whose Pod the controller found (by UID) says that the Pod exists: any
	// tenant may create requests naming any Pod, and must not wake other tenants' requests.
	if !ok || ar.Spec.Context.ObjectRef.UID == "" || revoked(ar) ||
		!meta.IsStatusConditionTrue(ar.Status.Conditions, v1alpha1.ConditionContextObjectValid) {
		return nil
	}
	ref := ar.Spec.Context.ObjectRef
	var list v1alpha1.AccessRequestList
	if err := c.Client.List(ctx, &list, client.MatchingFields{indexPod: ref.Namespace + "/" + ref.Name}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		other := &list.Items[i]
		if other.Spec.Context.ObjectRef.UID == ref.UID || revoked(other) {
			continue
		}
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: other.Namespace, Name: other.Name}})
	}
	return out
}

// requestsOfCheckObject wakes the live requests of Pods in a check object's namespace whose
// checks select it (see checkReads); revoked ones are done and stay asleep, so a busy
// namespace's history does not slow an approval. An update calls it with the object as it was
// and as it is: a request whose check selected the object before a change of its labels wakes
// too.
func (c *Controller) requestsOfCheckObject(ctx context.Context, o client.Object) []reconcile.Request {
	return c.requests(ctx, func(ar *v1alpha1.AccessRequest) bool {
		return c.reads.wakes(client.ObjectKeyFromObject(ar), o)
	}, client.MatchingFields{indexPodNamespace: o.GetNamespace()})
}

// watchKind starts, once, an informer for a check kind and wakes requests on its changes; a
// kind the kindChecker refuses gets none. Once: the four workers evaluating requests of a new
// kind at the same time would each start a watch, and every change of an object of that kind
// would then be mapped to requests, and wake them, four times.
// Only kinds whose watch started are kept: a tenant's policy may name any number of kinds.
// The start runs under the context of the worker that began it; the others wait only as long
// as their own allows (each evaluation has its budget, which waiting on another's would
// overrun), and begin it again when the first ran out of time: its timeout is not theirs, and
// reported as theirs it would fail their checks, which revokes a running Pod's grant.
func (c *Controller) watchKind(ctx context.Context, gvk schema.GroupVersionKind, namespace string) error {
	for {
		if _, started := c.watched.Load(gvk); started {
			return nil
		}
		began := false
		start := c.starting.DoChan(gvk.String(), func() (_ any, err error) {
			began = true
			// DoChan runs this in a goroutine of its own and panics again in another, where
			// nothing recovers: the controller would end, not the one reconcile.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("starting the watch of check kind %s: panic: %v", gvk.Kind, r)
				}
			}()
			if _, started := c.watched.Load(gvk); started {
				return nil, nil
			}
			return nil, c.startWatch(ctx, gvk, namespace)
		})
		select {
		case r := <-start:
			if r.Err != nil && !began && ctx.Err() == nil && interrupted(r.Err) {
				continue
			}
			return r.Err
		case <-ctx.Done():
			return fmt.Errorf("waiting for the watch of check kind %s to start: %w", gvk.Kind, ctx.Err())
		}
	}
}

// interrupted tells whether err says that time ran out (a context's, or an informer's wait for
// its sync), rather than anything about the kind.
func interrupted(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || apierrors.IsTimeout(err)
}

// maxUnservedKinds bounds the kinds remembered as not served.
const maxUnservedKinds = 1024

// startWatch checks a kind and starts its informer and watch.
func (c *Controller) startWatch(ctx context.Context, gvk schema.GroupVersionKind, namespace string) error {
	if err, ok := c.unserved.Get(gvk); ok {
		return err.(error)
	}
	if err := c.kinds.check(ctx, gvk, namespace); err != nil {
		if meta.IsNoMatchError(err) {
			c.unserved.Add(gvk, err, kindAnswerTTL)
		}
		return err
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	// The informer first: for a kind the API server does not serve it fails at once, while a
	// watch started first would keep a goroutine asking for that informer, one more at every
	// evaluation of a check of that kind.
	if _, err := c.Cache.GetInformer(ctx, u); err != nil {
		if meta.IsNoMatchError(err) {
			c.unserved.Add(gvk, err, kindAnswerTTL)
		}
		return err
	}
	if err := c.ctrl.Watch(source.Kind(c.Cache, client.Object(u), c.turns.handler(c.requestsOfCheckObject))); err != nil {
		return err
	}
	c.watched.Store(gvk, struct{}{})
	return nil
}

// Reconcile evaluates one AccessRequest.
func (c *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	woken := c.turns.takeWoken(req.NamespacedName)
	var ar v1alpha1.AccessRequest
	if err := c.Client.Get(ctx, req.NamespacedName, &ar); err != nil {
		if apierrors.IsNotFound(err) {
			c.reads.forget(req.NamespacedName)
			c.written.forget(req.NamespacedName)
			c.turns.forget(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	recheck, later, deferred := c.turns.turn(&ar, woken)
	if later > 0 || deferred {
		c.startWatches(ctx, &ar)
		return reconcile.Result{RequeueAfter: later}, nil // deferred: the dispatcher brings it back
	}
	if recheck {
		ctx = c.asRecheck(ctx)
	}
	result, err := c.evaluateAndWrite(ctx, &ar)
	if err != nil || !result.IsZero() {
		c.turns.retry(req.NamespacedName)
		return result, err
	}
	if !revoked(&ar) && c.PodRecheck > 0 {
		// A live request looks at its Pod again now and then: it is not watched. Spread, so that
		// the requests a new leader evaluates at once are not read again all at once.
		result.RequeueAfter = wait.Jitter(c.PodRecheck, 0.2)
	}
	return result, nil
}

// evaluateAndWrite evaluates the request (the cache's copy, changed in place) and writes its
// status if it changed, recording the transitions as Events.
func (c *Controller) evaluateAndWrite(ctx context.Context, ar *v1alpha1.AccessRequest) (reconcile.Result, error) {
	before := ar.Status.DeepCopy()
	result, err := c.evaluate(ctx, ar)
	if !apiequalityStatus(before, &ar.Status) {
		c.recordTransitions(ar, before)
		if uerr := c.writeStatus(ctx, ar); uerr != nil {
			return reconcile.Result{}, uerr
		}
	}
	return result, err
}

// writeStatus writes the request's status, remembered first as its own (notOwnWrite), and
// forgotten if the write fails (it has no event).
func (c *Controller) writeStatus(ctx context.Context, ar *v1alpha1.AccessRequest) error {
	key, status := client.ObjectKeyFromObject(ar), ar.Status.DeepCopy()
	c.written.add(key, status)
	err := c.Client.Status().Update(ctx, ar)
	if err != nil {
		c.written.drop(key, status)
	}
	return err
}

// notOwnWrite passes an update of a request unless it changed the status alone, to one this
// controller wrote: an evaluation of it would read the Pod and its owners again to find what it
// just wrote (a write succeeds only on the resourceVersion the evaluation read, so nothing else
// changed meanwhile). A status anyone else wrote is evaluated, and written over.
func (c *Controller) notOwnWrite(e event.UpdateEvent) bool {
	old, okOld := e.ObjectOld.(*v1alpha1.AccessRequest)
	ar, okNew := e.ObjectNew.(*v1alpha1.AccessRequest)
	if !okOld || !okNew || old.Generation != ar.Generation || !maps.Equal(old.Labels, ar.Labels) || !maps.Equal(old.Annotations, ar.Annotations) {
		return true
	}
	return !c.written.seen(client.ObjectKeyFromObject(ar), &ar.Status)
}

func (c *Controller) setCondition(ar *v1alpha1.AccessRequest, typ string, status metav1.ConditionStatus, reason, format string, args ...any) {
	v1alpha1.SetConditionStatus(&ar.Status.Conditions, ar.Generation, typ, status, reason, format, args...)
}

// evaluate computes the request's status and grants or revokes its permission.
func (c *Controller) evaluate(ctx context.Context, ar *v1alpha1.AccessRequest) (reconcile.Result, error) {
	if revoked(ar) {
		// Done: no Pod to read; only its retention runs out, and a grant written late goes.
		if err := c.deleteLateGrant(ctx, ar); err != nil {
			return reconcile.Result{}, err
		}
		return c.retain(ctx, ar)
	}
	ref := ar.Spec.Context.ObjectRef
	var pod corev1.Pod
	// From etcd: a watch cache's stale "the Pod runs" would keep a grant (its deletion, its
	// end), and the rechecks are the backstop of a Pod that ended without its unpublish.
	podErr := readerFor(ctx, c.Reader).Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &pod)
	var connector v1alpha1.Connector
	connErr := c.Client.Get(ctx, types.NamespacedName{Namespace: ar.Namespace, Name: ar.Spec.ConnectorRef.Name}, &connector)
	for _, err := range []error{podErr, connErr} {
		if err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
	}

	why := revocation(ar, &pod, podErr, connErr)
	subject := podSubject(&pod)
	switch {
	case ref.UID == "":
		// Alauda's schema lets the UID out; binding by name alone would let a later Pod of the
		// same name inherit an approval, so such a request never grants.
		c.setCondition(ar, v1alpha1.ConditionContextObjectValid, metav1.ConditionFalse, "UIDMissing",
			"spec.context.objectRef.uid is empty: a request is bound to one Pod by its UID")
	case podErr != nil || pod.UID != ref.UID:
		c.podGone(ar)
	default:
		c.setCondition(ar, v1alpha1.ConditionContextObjectValid, metav1.ConditionTrue, "Found", "Pod %s/%s, ServiceAccount %s", ref.Namespace, ref.Name, subject.Name)
	}
	if connErr != nil {
		c.setCondition(ar, v1alpha1.ConditionConnectorResolved, metav1.ConditionFalse, "NotFound", "Connector %s/%s no longer exists", ar.Namespace, ar.Spec.ConnectorRef.Name)
	} else {
		c.setCondition(ar, v1alpha1.ConditionConnectorResolved, metav1.ConditionTrue, "Found", "Connector %s/%s (%s)", ar.Namespace, connector.Name, connector.Spec.Address)
	}
	if why != "" {
		return c.revoke(ctx, ar, why)
	}
	if ar.Spec.Subject != subject {
		return reconcile.Result{}, c.refuseSubject(ctx, ar, subject)
	}
	if connector := (types.NamespacedName{Namespace: ar.Namespace, Name: ar.Spec.ConnectorRef.Name}); !usesConnector(&pod, c.DriverName, connector) {
		// Anyone who may create requests in the Connector's namespace may name any Pod in them:
		// evaluated, its checks would read the Pod's namespace for the request's writer.
		return reconcile.Result{}, c.refuse(ctx, ar, v1alpha1.ReasonConnectorNotMounted,
			fmt.Sprintf("Pod %s/%s has no volume naming Connector %s: no node asked for this request; nothing is evaluated or granted",
				ref.Namespace, ref.Name, connector))
	}

	if len(ar.Status.Policies) == 0 {
		tooLarge, err := c.snapshotPolicies(ctx, ar, &connector)
		if err != nil {
			return reconcile.Result{}, err
		}
		if tooLarge != "" {
			return reconcile.Result{}, c.refusePolicies(ctx, ar, tooLarge)
		}
	}
	if len(ar.Status.Policies) == 0 {
		c.setCondition(ar, v1alpha1.ConditionAccessPolicyMatched, metav1.ConditionFalse, "NoPolicy",
			"no AccessPolicy with checkGrantedPermission selects Connector %s", connector.Name)
		c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionTrue, v1alpha1.ReasonNoPermissionRequired, "nothing to grant")
		c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, "NoPolicy", "no AccessPolicy gates this Connector")
		return reconcile.Result{}, nil
	}
	var names []string
	for _, p := range ar.Status.Policies {
		names = append(names, p.Name)
	}
	c.setCondition(ar, v1alpha1.ConditionAccessPolicyMatched, metav1.ConditionTrue, "Matched", "AccessPolicy %s", strings.Join(names, ", "))

	rctx, err := c.requestContext(ctx, &pod, &connector)
	if err != nil {
		return reconcile.Result{}, err
	}
	outcome, msg := c.evaluateChecks(ctx, ar, rctx)
	observeDecision(ar, outcome)
	var result reconcile.Result
	switch outcome {
	case v1alpha1.ReasonPassed:
		c.setCondition(ar, v1alpha1.ConditionAccessCheckReady, metav1.ConditionTrue, v1alpha1.ReasonPassed, "%s", msg)
		return c.grant(ctx, ar, rctx, subject)
	case v1alpha1.ReasonPending, outcomeRetry:
		if outcome == outcomeRetry {
			result = reconcile.Result{RequeueAfter: retryAfter}
		}
		c.setCondition(ar, v1alpha1.ConditionAccessCheckReady, metav1.ConditionUnknown, v1alpha1.ReasonPending, "%s", msg)
		if holdsGrant(ar) {
			// Access ends with the Pod, the Connector, the volume or a rejection (SPEC §6.5), not
			// when a check that passed is pending again (its object deleted, its state reset):
			// the grant stays, and the status says that it does.
			c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionTrue, "Granted",
				"access granted to Pod %s/%s, and kept while a check is pending again: %s", ar.Spec.Context.ObjectRef.Namespace, ar.Spec.Context.ObjectRef.Name, msg)
			break
		}
		c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionUnknown, v1alpha1.ReasonPending, "access is granted once every check passes")
		c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPending, "%s", msg)
	default: // Rejected or Failed: never grant
		c.setCondition(ar, v1alpha1.ConditionAccessCheckReady, metav1.ConditionFalse, outcome, "%s", msg)
		// The grant goes before the status says there is none (PodGrants reads the status).
		if err := c.deleteGrant(ctx, ar); err != nil {
			return reconcile.Result{}, err
		}
		c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionFalse, v1alpha1.ReasonNoPermissionRequired, "no access is granted: %s", strings.ToLower(outcome))
		c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, outcome, "%s", msg)
	}
	return result, nil
}

// podGone records that the request's Pod, by UID, does not exist.
func (c *Controller) podGone(ar *v1alpha1.AccessRequest) {
	ref := ar.Spec.Context.ObjectRef
	c.setCondition(ar, v1alpha1.ConditionContextObjectValid, metav1.ConditionFalse, "NotFound", "Pod %s/%s (uid %s) no longer exists", ref.Namespace, ref.Name, ref.UID)
}

// podSubject is whom a request for the Pod may grant: the Pod's ServiceAccount. The request's
// spec.subject is whatever its creator wrote, so it is only compared with this, never trusted.
func podSubject(pod *corev1.Pod) rbacv1.Subject {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default" // what the ServiceAccount admission plugin sets
	}
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: pod.Namespace}
}

// refuseSubject fails a request whose spec names another subject than the Pod's: nothing is
// granted to either, whatever the checks say.
func (c *Controller) refuseSubject(ctx context.Context, ar *v1alpha1.AccessRequest, subject rbacv1.Subject) error {
	s := ar.Spec.Subject
	return c.refuse(ctx, ar, v1alpha1.ReasonSubjectMismatch, fmt.Sprintf("the request's subject %s %s/%s is not the Pod's ServiceAccount %s/%s: nothing is granted",
		s.Kind, s.Namespace, s.Name, subject.Namespace, subject.Name))
}

// refuse grants nothing to a request that is not the Pod's: its grant, if any, goes, and
// AccessPermissionSync and Ready say why (reason, msg).
func (c *Controller) refuse(ctx context.Context, ar *v1alpha1.AccessRequest, reason, msg string) error {
	// The grant goes before the status says there is none (PodGrants reads the status).
	if err := c.deleteGrant(ctx, ar); err != nil {
		return err
	}
	c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionFalse, reason, "%s", msg)
	c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, "%s", msg)
	return nil
}

// usesConnector tells whether pod has an inline volume of driver (empty: any) whose
// attributes name the Connector: the node asks for a request only for such a volume.
func usesConnector(pod *corev1.Pod, driver string, connector types.NamespacedName) bool {
	for _, v := range pod.Spec.Volumes {
		if v.CSI == nil || driver != "" && v.CSI.Driver != driver {
			continue
		}
		if named, err := volumeattrs.ConnectorsOf(v.CSI.VolumeAttributes, pod.Namespace); err == nil && slices.Contains(named, connector) {
			return true
		}
	}
	return false
}

// revocation says why a request's access must end, or "".
func revocation(ar *v1alpha1.AccessRequest, pod *corev1.Pod, podErr, connErr error) string {
	switch {
	case ar.Annotations[AnnotationRevoked] != "":
		return "the Pod's volume was unpublished at " + ar.Annotations[AnnotationRevoked]
	case ar.Spec.Context.ObjectRef.UID == "":
		return "the request names no Pod UID"
	case podErr != nil || pod.UID != ar.Spec.Context.ObjectRef.UID:
		return "the Pod was deleted"
	case pod.DeletionTimestamp != nil:
		return "the Pod is being deleted"
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return "the Pod completed (" + string(pod.Status.Phase) + ")"
	case connErr != nil:
		return "the Connector was deleted"
	}
	return ""
}

// snapshotPolicies records every gating policy that selects the Connector, as it is now. When
// their specs together are larger than MaxPolicyBytes it records none and says so instead: a
// policy edit wakes the request, which then snapshots again.
func (c *Controller) snapshotPolicies(ctx context.Context, ar *v1alpha1.AccessRequest, connector *v1alpha1.Connector) (tooLarge string, err error) {
	// Not copied from the cache (it is only read here), and a spec copied only once the bound
	// holds: a tenant's large policies would otherwise be copied whole by each worker, at each
	// evaluation of each of its requests that records none (too large, or none matching).
	var policies v1alpha1.AccessPolicyList
	if err := c.Client.List(ctx, &policies, client.InNamespace(ar.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return "", err
	}
	items := policies.Items // the list's own slice of shallow copies: sorting it is safe
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	var matched []*v1alpha1.AccessPolicy
	var sizes []string
	total := 0
	for i := range items {
		p := &items[i]
		if p.Spec.CheckGrantedPermission == nil || !Selects(&p.Spec.Connector, connector) {
			continue
		}
		spec, err := json.Marshal(&p.Spec)
		if err != nil {
			return "", err
		}
		total += len(spec)
		sizes = append(sizes, fmt.Sprintf("%s (%d bytes)", p.Name, len(spec)))
		matched = append(matched, p)
	}
	if c.MaxPolicyBytes > 0 && total > c.MaxPolicyBytes {
		return fmt.Sprintf("the AccessPolicies selecting Connector %s are %d bytes together, more than the %d a request records (--accessrequest-max-policy-bytes): %s",
			connector.Name, total, c.MaxPolicyBytes, strings.Join(sizes, ", ")), nil
	}
	ar.Status.Policies = nil
	for _, p := range matched {
		ar.Status.Policies = append(ar.Status.Policies, v1alpha1.PolicyStatus{Name: p.Name, PolicySpec: p.Spec.DeepCopy()})
	}
	return "", nil
}

// refusePolicies fails a request whose policies are too large to record: nothing is granted
// until they are made smaller.
func (c *Controller) refusePolicies(ctx context.Context, ar *v1alpha1.AccessRequest, why string) error {
	// A grant needs the snapshot, so there is none but one written while the status was lost
	// to another's write; it goes before the status says there is none (PodGrants reads it).
	if err := c.deleteGrant(ctx, ar); err != nil {
		return err
	}
	c.setCondition(ar, v1alpha1.ConditionAccessPolicyMatched, metav1.ConditionFalse, v1alpha1.ReasonPoliciesTooLarge, "%s", why)
	c.setCondition(ar, v1alpha1.ConditionAccessCheckReady, metav1.ConditionFalse, v1alpha1.ReasonFailed, "%s", why)
	c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionFalse, v1alpha1.ReasonNoPermissionRequired, "no access is granted: failed")
	c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPoliciesTooLarge, "%s", why)
	return nil
}

// Selects reports whether a policy's connector selector selects the Connector.
func Selects(sel *v1alpha1.ConnectorSelector, c *v1alpha1.Connector) bool {
	if len(sel.Names) > 0 && !contains(sel.Names, c.Name) {
		return false
	}
	ls, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sel.MatchLabels, MatchExpressions: sel.MatchExpressions})
	if err != nil {
		return false
	}
	return ls.Matches(labels.Set(c.Labels))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// requestContext is the template context: .object is the Pod, .connector the Connector (less
// its status), and .taskRun and .pipelineRun the Pod's Tekton owners when they verify (see
// tektonOwners).
func (c *Controller) requestContext(ctx context.Context, pod *corev1.Pod, connector *v1alpha1.Connector) (map[string]any, error) {
	podMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pod)
	if err != nil {
		return nil, err
	}
	connMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(connector)
	if err != nil {
		return nil, err
	}
	rctx, err := tektonOwners(ctx, readerFor(ctx, c.Reader), pod)
	if err != nil {
		return nil, err
	}
	// Without its status: a write of the status alone wakes no request (notStatusOnly), so a
	// template must not depend on it.
	delete(connMap, "status")
	rctx["object"], rctx[keyConnector] = podMap, connMap
	return rctx, nil
}

// evaluateChecks reads every check of every snapshotted policy. The outcome is Failed (a check
// cannot be evaluated), Rejected (any object rejected), Pending, or Passed (all passed), with a
// message that names what it waits for or what decided. What the checks read is remembered
// when every one got as far as reading its objects, and forgotten otherwise (checkReads).
func (c *Controller) evaluateChecks(ctx context.Context, ar *v1alpha1.AccessRequest, rctx map[string]any) (string, string) {
	rank := map[string]int{v1alpha1.ReasonPassed: 0, v1alpha1.ReasonPending: 1, outcomeRetry: 2, v1alpha1.ReasonRejected: 3, v1alpha1.ReasonFailed: 4}
	outcome, msgs := v1alpha1.ReasonPassed, []string{}
	if c.EvaluationBudget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.EvaluationBudget)
		defer cancel()
	}
	reads, checks := []checkRead{}, 0
	for i := range ar.Status.Policies {
		p := &ar.Status.Policies[i]
		p.MatchedChecks = nil
		for _, check := range p.PolicySpec.CheckGrantedPermission.Spec.Checks {
			checks++
			mc, result := c.evaluateCheck(ctx, ar, check, rctx, &reads)
			mc = withAlaudaFields(mc)
			p.MatchedChecks = append(p.MatchedChecks, mc)
			if rank[result] > rank[outcome] {
				outcome, msgs = result, nil
			}
			if result == outcome {
				msgs = append(msgs, fmt.Sprintf("policy %s check %s: %s", p.Name, check.Name, mc.Message))
			}
		}
	}
	if key := client.ObjectKeyFromObject(ar); len(reads) == checks {
		c.reads.remember(key, reads)
	} else {
		c.reads.forget(key)
	}
	return outcome, strings.Join(msgs, "; ")
}

// checkSpec is check's spec: its own, or its template ConfigMap's, read from the cache and,
// when live is not nil and the cache lacks it, from the API server; transient tells an error
// that is no fault of the check.
func (c *Controller) checkSpec(ctx context.Context, check v1alpha1.Check, live client.Reader) (spec *v1alpha1.CheckSpec, transient bool, err error) {
	if check.Ref == nil {
		if check.Spec == nil {
			return nil, false, errors.New("the check has neither ref nor spec")
		}
		return check.Spec, false, nil
	}
	if check.Ref.ConfigMap == nil {
		return nil, false, errors.New("ref names no ConfigMap")
	}
	var cm corev1.ConfigMap
	nn := types.NamespacedName{Namespace: c.SystemNamespace, Name: check.Ref.ConfigMap.Name}
	if err := readTemplate(ctx, c.Client, live, nn, &cm); err != nil {
		return nil, !apierrors.IsNotFound(err), fmt.Errorf("check template ConfigMap %s/%s: %w", nn.Namespace, nn.Name, err)
	}
	spec, err = c.templates.Check(&cm)
	return spec, false, err
}

// startWatches starts the watches of the check kinds ar's policies name, so that a change of a
// check object wakes it before its recheck's turn: a new leader starts a kind's watch at the
// first evaluation that reads it, and its rechecks wait for their turns. From the caches only;
// what fails here the evaluation reports.
func (c *Controller) startWatches(ctx context.Context, ar *v1alpha1.AccessRequest) {
	for _, p := range ar.Status.Policies {
		if p.PolicySpec == nil {
			continue
		}
		for _, check := range p.PolicySpec.CheckGrantedPermission.Spec.Checks {
			spec, _, err := c.checkSpec(ctx, check, nil)
			if err != nil {
				continue
			}
			if gv, err := schema.ParseGroupVersion(spec.Selector.ObjectRef.APIVersion); err == nil && spec.Selector.ObjectRef.Kind != "" {
				_ = c.watchKind(ctx, gv.WithKind(spec.Selector.ObjectRef.Kind), ar.Namespace)
			}
		}
	}
}

// outcomeRetry is a check that could not be read for a reason of the controller's, not the
// policy's: the evaluation's budget ran out, or the API server or the sandbox did not answer.
// The request is evaluated again after retryAfter, and a grant it holds is kept meanwhile: a
// Failed check revokes, and a controller under load, or another tenant's policy, must not
// revoke a running Pod's access.
const outcomeRetry = "Retry"

// retryAfter is when a request whose checks could not all be read is evaluated again.
const retryAfter = 10 * time.Second

// evaluateCheck reads one check: its spec, the objects it matches and their states. It adds to
// reads what it reads once it knows.
func (c *Controller) evaluateCheck(ctx context.Context, ar *v1alpha1.AccessRequest, check v1alpha1.Check, rctx map[string]any, reads *[]checkRead) (v1alpha1.MatchedCheck, string) {
	mc := v1alpha1.MatchedCheck{Name: check.Name}
	fail := func(format string, args ...any) (v1alpha1.MatchedCheck, string) {
		mc.State, mc.Message = "", fmt.Sprintf(format, args...)
		return mc, v1alpha1.ReasonFailed
	}
	retry := func(format string, args ...any) (v1alpha1.MatchedCheck, string) {
		mc.State, mc.Message = "", fmt.Sprintf(format, args...)
		return mc, outcomeRetry
	}
	if c.overBudget(ctx) {
		return retry("%s", c.budgetSpent())
	}
	spec, transient, err := c.checkSpec(ctx, check, c.Reader)
	switch {
	case err != nil && transient:
		return retry("%v", err)
	case err != nil:
		return fail("%v", err)
	}
	if err := c.States.Validate(spec.State); err != nil {
		if errors.Is(err, regoeval.ErrUnavailable) || ctx.Err() != nil {
			// The controller's own trouble (no evaluator free in time), not the module's: failing
			// would revoke a running Pod's grant for it.
			return retry("%v", err)
		}
		return fail("%v", err)
	}
	gv, err := schema.ParseGroupVersion(spec.Selector.ObjectRef.APIVersion)
	if err != nil {
		return fail("objectRef apiVersion %q: %v", spec.Selector.ObjectRef.APIVersion, err)
	}
	gvk := gv.WithKind(spec.Selector.ObjectRef.Kind)
	if check.Ref == nil {
		rctx = inlineView(rctx)
	}
	matchLabels, err := c.templates.MatchLabels(ctx, spec, rctx, check.Ref == nil)
	var notInChain *notInOwnerChain
	switch {
	case c.overBudget(ctx):
		return retry("%s", c.budgetSpent())
	case ctx.Err() != nil: // the controller stops, or lost its lease
		return retry("not evaluated: %v", ctx.Err())
	case errors.As(err, &notInChain):
		return fail("Pod %s/%s is not run by %s (owner chain checked by UID)", ar.Spec.Context.ObjectRef.Namespace,
			ar.Spec.Context.ObjectRef.Name, ownerChainKeys[notInChain.key])
	case err != nil:
		return fail("%v", err)
	}
	if err := c.watchKind(ctx, gvk, ar.Namespace); err != nil {
		if ctx.Err() != nil || !kindAnswered(err) {
			// Not an answer about the kind (its lookup deferred to a later turn, the API server
			// not answering, the informer not synced in time): failing would revoke a running
			// Pod's grant for the controller's reason, or another tenant's.
			return retry("cannot watch %s yet: %v", gvk.Kind, err)
		}
		return fail("cannot watch %s: %v", gvk.Kind, unknownKind(err))
	}
	podNS := ar.Spec.Context.ObjectRef.Namespace
	filter, err := c.templates.ObjectFilter(ctx, spec, rctx, check.Ref == nil)
	name, namespace := filter.name, filter.namespace
	switch {
	case c.overBudget(ctx):
		return retry("%s", c.budgetSpent())
	case ctx.Err() != nil:
		return retry("not evaluated: %v", ctx.Err())
	case errors.As(err, &notInChain):
		return fail("Pod %s/%s is not run by %s (owner chain checked by UID)", podNS, ar.Spec.Context.ObjectRef.Name, ownerChainKeys[notInChain.key])
	case err != nil:
		return fail("%v", err)
	case namespace != "" && namespace != podNS:
		// A check reads only the Pod's namespace: another would let a tenant be approved by an
		// object someone else controls, or probe what exists elsewhere.
		return fail("objectRef.namespace %q: a check reads only the Pod's namespace %s", namespace, podNS)
	}
	selector, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: matchLabels, MatchExpressions: spec.Selector.MatchExpressions})
	if err != nil {
		return fail("matchExpressions: %v", err)
	}
	read := checkRead{kind: gvk.GroupKind(), name: name, selector: selector}
	*reads = append(*reads, read)
	c.reads.add(client.ObjectKeyFromObject(ar), read)
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	// From the informer watchKind started, not the API server: a request is evaluated again at
	// each change of an object its checks select, and now and then. Not copied (the
	// states only read the objects), and one past the bound at most: a tenant's thousands of
	// matching objects cost no more than that.
	opts := []client.ListOption{client.InNamespace(podNS), client.MatchingLabelsSelector{Selector: selector}, client.UnsafeDisableDeepCopy}
	if name == "" && c.MaxCheckObjects > 0 {
		opts = append(opts, client.Limit(int64(c.MaxCheckObjects)+1))
	}
	if err := c.Cache.List(ctx, list, opts...); err != nil {
		return retry("list %s: %v", gvk.Kind, err)
	}
	if name != "" {
		list.Items = slices.DeleteFunc(list.Items, func(o unstructured.Unstructured) bool { return o.GetName() != name })
	}
	// Counted before createdSince leaves the older ones out: the list stops at the bound, in no
	// particular order, so that past it the objects it leaves out may be the newer ones, and a
	// tenant's older objects of the labels would hide the run's own.
	if n := len(list.Items); c.MaxCheckObjects > 0 && n > c.MaxCheckObjects {
		return fail("more than %d %s objects in namespace %s match %s; a check reads at most %d (--accessrequest-check-max-objects): narrow its selector",
			c.MaxCheckObjects, gvk.Kind, podNS, describeSelector(selector, objectFilter{name: name}), c.MaxCheckObjects)
	}
	list.Items = slices.DeleteFunc(list.Items, func(o unstructured.Unstructured) bool { return o.GetCreationTimestamp().Time.Before(filter.since) })
	// The informer lists in no particular order, and the check's message and objectRef follow
	// it: unsorted, a recheck that finds what the last one found would write a status anew.
	slices.SortFunc(list.Items, func(a, b unstructured.Unstructured) int { return strings.Compare(a.GetName(), b.GetName()) })
	if len(list.Items) == 0 {
		mc.State = v1alpha1.StatePending
		mc.Message = fmt.Sprintf("waiting: no %s in namespace %s matches %s yet", gvk.Kind, podNS, describeSelector(selector, filter))
		return mc, v1alpha1.ReasonPending
	}
	result := v1alpha1.ReasonPassed
	var details []string
	for i := range list.Items {
		obj := &list.Items[i]
		if c.overBudget(ctx) {
			return retry("%s", c.budgetSpent())
		}
		if size := obj.GetAnnotations()[AnnotationTooLarge]; size != "" {
			why := fmt.Sprintf("%s %s/%s is larger than %d bytes (--check-object-max-bytes): the controller keeps no larger check object",
				obj.GetKind(), obj.GetNamespace(), obj.GetName(), c.MaxCheckObjectBytes)
			if holdsGrant(ar) {
				// A bound of the controller's, not the policy's: a running Pod keeps the access its
				// checks gave it (an object that grew past it, a PipelineRun's status), as for a
				// check pending again; the other objects are still read, for one that is
				// rejected revokes (a tenant's own large object of the labels, named to sort
				// first, would otherwise hide the approver's rejection behind it).
				details = append(details, why)
				result, mc.State = v1alpha1.ReasonPending, v1alpha1.StatePending
				continue
			}
			return fail("%s", why)
		}
		state, err := c.States.state(ctx, obj, spec)
		switch {
		case errors.Is(err, regoeval.ErrUnavailable) || (err != nil && ctx.Err() != nil):
			return retry("%v", err)
		case err != nil:
			return fail("%v", err)
		}
		mc.ObjectRef = &v1alpha1.CheckObjectRef{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Name: obj.GetName(), Namespace: obj.GetNamespace()}
		details = append(details, fmt.Sprintf("%s %s/%s is %s", obj.GetKind(), obj.GetNamespace(), obj.GetName(), state))
		switch state {
		case v1alpha1.StateRejected:
			mc.State, mc.Message = state, details[len(details)-1]
			return mc, v1alpha1.ReasonRejected
		case v1alpha1.StatePending:
			result, mc.State = v1alpha1.ReasonPending, state
		}
	}
	if result == v1alpha1.ReasonPassed {
		mc.State = v1alpha1.StateApproved
	}
	mc.Message = joinDetails(details)
	return mc, result
}

// maxDetails is how many matched objects a check's message names; the rest are counted.
const maxDetails = 10

// joinDetails joins what a check says of its objects, naming the first maxDetails.
func joinDetails(details []string) string {
	if len(details) <= maxDetails {
		return strings.Join(details, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(details[:maxDetails], ", "), len(details)-maxDetails)
}

// overBudget tells whether the request's EvaluationBudget is spent.
func (c *Controller) overBudget(ctx context.Context) bool {
	return c.EvaluationBudget > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded)
}

// budgetSpent is why a check was not read (or not to its end): the budget is spent.
func (c *Controller) budgetSpent() string {
	return fmt.Sprintf("not evaluated: this request's checks took longer than %s together (--accessrequest-evaluation-budget); they are read again in %s", c.EvaluationBudget, retryAfter)
}

// describeSelector is a check's selector as people read it.
func describeSelector(selector labels.Selector, filter objectFilter) string {
	out := "labels " + selector.String()
	if selector.Empty() {
		out = "any labels"
	}
	if filter.name != "" {
		out = "name " + filter.name + " and " + out
	}
	if !filter.since.IsZero() {
		out += ", created since " + filter.since.UTC().Format(time.RFC3339)
	}
	return out
}

// withAlaudaFields fills a matched check's ref and condition, Alauda's shape of what ObjectRef,
// State and Message say: Ready True for approved or passed, False for rejected, Unknown while
// pending or failing.
func withAlaudaFields(mc v1alpha1.MatchedCheck) v1alpha1.MatchedCheck {
	if o := mc.ObjectRef; o != nil {
		mc.Ref = &corev1.ObjectReference{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, Namespace: o.Namespace}
	}
	status, reason := metav1.ConditionUnknown, "Failed"
	switch mc.State {
	case v1alpha1.StateApproved, v1alpha1.StatePassed:
		status, reason = metav1.ConditionTrue, "Approved"
	case v1alpha1.StateRejected:
		status, reason = metav1.ConditionFalse, "Rejected"
	case v1alpha1.StatePending:
		reason = "Pending"
	}
	mc.Condition = &v1alpha1.Condition{Type: v1alpha1.ConditionReady, Status: status, Reason: reason, Message: mc.Message}
	return mc
}

// unknownKind makes "no matches for kind" readable.
func unknownKind(err error) error {
	var nm *meta.NoKindMatchError
	if errors.As(err, &nm) {
		return fmt.Errorf("the API server serves no kind %s in %s", nm.GroupKind.Kind, nm.SearchedVersions)
	}
	return err
}

// grant creates or updates the Role and RoleBinding, owned by the request, from the policies'
// role templates.
func (c *Controller) grant(ctx context.Context, ar *v1alpha1.AccessRequest, rctx map[string]any, subject rbacv1.Subject) (reconcile.Result, error) {
	var rules []rbacv1.PolicyRule
	for _, p := range ar.Status.Policies {
		ref := p.PolicySpec.CheckGrantedPermission.Spec.RoleTemplate.Ref.ConfigMap
		if ref == nil {
			return c.syncFailed(ar, fmt.Errorf("policy %s: roleTemplate names no ConfigMap", p.Name))
		}
		var cm corev1.ConfigMap
		if err := readTemplate(ctx, c.Client, c.Reader, types.NamespacedName{Namespace: c.SystemNamespace, Name: ref.Name}, &cm); err != nil {
			return c.syncFailed(ar, fmt.Errorf("role template ConfigMap %s/%s: %w", c.SystemNamespace, ref.Name, err))
		}
		r, err := c.templates.Rules(&cm, rctx)
		if err != nil {
			return reconcile.Result{}, c.refuseRoleTemplate(ctx, ar, p.Name, err)
		}
		rules = append(rules, r...)
	}
	// Recorded before the grant is first written, and before any of its objects is created
	// again: a status read from a cache that lags (a revoked request still Synced there) then
	// fails its write, rather than bring back a revoked grant.
	var recordErr error
	recorded := false
	record := func() error {
		if !recorded {
			recorded = true
			recordErr = c.recordGranting(ctx, ar)
		}
		return recordErr
	}
	var err error
	if !holdsGrant(ar) {
		err = record()
	}
	if err == nil {
		err = writeGrant(ctx, c.Client, c.Cache, ar, ar.Name, rules, []rbacv1.Subject{subject}, record)
	}
	var replaced *podReplacedError
	switch {
	case errors.As(err, &replaced):
		return c.revoke(ctx, ar, replaced.Error())
	case err != nil && recordErr != nil && errors.Is(err, recordErr):
		return reconcile.Result{}, err // no grant object was created: the status read was not the stored one
	case err != nil:
		return c.syncFailed(ar, err)
	}
	c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionTrue, v1alpha1.ReasonSynced,
		"Role and RoleBinding %s grant %s %s/%s access to Connector %s", ar.Name, subject.Kind, subject.Namespace, subject.Name, ar.Spec.ConnectorRef.Name)
	c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionTrue, "Granted", "access granted to Pod %s/%s", ar.Spec.Context.ObjectRef.Namespace, ar.Spec.Context.ObjectRef.Name)
	return reconcile.Result{}, nil
}

// recordGranting writes that a request is being granted, before its grant is written, and then
// reads its Pod again. PodGrants tells whose a Pod-scoped grant is by the requests' statuses:
// were the grant written first, a new Pod of the earlier Pod's name could use it until the
// status said so. And the Pod was read before the checks, up to the evaluation budget ago: had
// it been replaced since (a forced delete), the grant would be the earlier Pod's, written after
// the new Pod's own look at the requests of its name. Read after the status is written, a Pod
// still there was there before any Pod of its name that could see the request without it. The
// write is checked against the status read (resourceVersion): one from a cache that lags fails.
func (c *Controller) recordGranting(ctx context.Context, ar *v1alpha1.AccessRequest) error {
	// A status that already says the request may hold a grant (pending, or a write that
	// failed) is written as it is: the write still fails on a stale resourceVersion, and,
	// changing nothing, wakes no one (a reason changed on each try would requeue the request
	// at once, past its backoff, while its grant cannot be written).
	if !mayHoldGrant(ar) {
		c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionUnknown, v1alpha1.ReasonGranting,
			"writing Role and RoleBinding %s", ar.Name)
		c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonGranting, "every check passed; the grant is being written")
	}
	if err := c.writeStatus(ctx, ar); err != nil {
		return err
	}
	ref := ar.Spec.Context.ObjectRef
	var pod corev1.Pod
	err := c.Reader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &pod)
	switch {
	case apierrors.IsNotFound(err) || err == nil && pod.UID != ref.UID:
		c.podGone(ar)
		return &podReplacedError{namespace: ref.Namespace, name: ref.Name, uid: string(ref.UID)}
	case err != nil:
		return err
	case pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		// Ending since its evaluation read it: no grant for it; its next evaluation revokes.
		return fmt.Errorf("the Pod %s/%s is ending: its grant is not written", ref.Namespace, ref.Name)
	}
	return nil
}

// podReplacedError: the request's Pod was gone when its grant was about to be written.
type podReplacedError struct{ namespace, name, uid string }

func (e *podReplacedError) Error() string {
	return fmt.Sprintf("Pod %s/%s (uid %s) was deleted before its grant was written", e.namespace, e.name, e.uid)
}

// refuseRoleTemplate fails a request whose role template cannot give a grant (it does not
// render, or renders a rule outside the allow-list): nothing is granted until it is fixed.
func (c *Controller) refuseRoleTemplate(ctx context.Context, ar *v1alpha1.AccessRequest, policy string, err error) error {
	// The grant goes before the status says there is none (PodGrants reads the status).
	if err := c.deleteGrant(ctx, ar); err != nil {
		return err
	}
	c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionFalse, v1alpha1.ReasonInvalidRoleTemplate, "policy %s: %v", policy, err)
	c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidRoleTemplate, "nothing is granted: policy %s: %v", policy, err)
	return nil
}

func (c *Controller) syncFailed(ar *v1alpha1.AccessRequest, err error) (reconcile.Result, error) {
	c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionFalse, v1alpha1.ReasonSyncFailed, "%v", err)
	c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSyncFailed, "the grant could not be written: %v", err)
	return reconcile.Result{}, err
}

// revoke deletes the grant and records why; a finished request is deleted after the retention.
func (c *Controller) revoke(ctx context.Context, ar *v1alpha1.AccessRequest, why string) (reconcile.Result, error) {
	if err := c.deleteGrant(ctx, ar); err != nil {
		return reconcile.Result{}, err
	}
	// Its policies' specs go with the grant: they served its evaluations, and it is kept for
	// the retention as a record, which their names, the checks' states and its Events make.
	for i := range ar.Status.Policies {
		ar.Status.Policies[i].PolicySpec = nil
	}
	c.setCondition(ar, v1alpha1.ConditionAccessPermissionSync, metav1.ConditionTrue, v1alpha1.ReasonPermissionCleanUp, "access revoked: %s", why)
	// The condition stays True (Synced before), so it would keep the time of the grant, and
	// retention counts from the revocation: a request granted longer ago than the retention
	// would go as it is revoked, and its record with it.
	meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync).LastTransitionTime = metav1.Now()
	c.setCondition(ar, v1alpha1.ConditionReady, metav1.ConditionFalse, "Revoked", "access revoked: %s", why)
	res, err := c.retain(ctx, ar)
	if err == nil {
		err = c.pruneFinished(ctx, ar)
	}
	// Looked at again soon, once: a grant a former leader writes between the delete above and
	// this status (its event finds the request not yet revoked, and this status's own event
	// wakes nothing) goes then (deleteLateGrant), not after the retention.
	if res.RequeueAfter > lateGrantSweep {
		res.RequeueAfter = lateGrantSweep
	}
	return res, err
}

// lateGrantSweep is when a revoked request is looked at again for a late grant: past a former
// leader's writes still queued at the API server (a minute, its request timeout) and the
// informers' lag.
const lateGrantSweep = 2 * time.Minute

// revoked reports whether a request's grant has been cleaned up: it is finished.
func revoked(ar *v1alpha1.AccessRequest) bool {
	cond := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
	return cond != nil && cond.Reason == v1alpha1.ReasonPermissionCleanUp
}

// retain deletes a finished request once its retention has passed, or comes back then.
func (c *Controller) retain(ctx context.Context, ar *v1alpha1.AccessRequest) (reconcile.Result, error) {
	// Done: its checks wake it no more (checkReads).
	c.reads.forget(client.ObjectKeyFromObject(ar))
	cond := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
	left := time.Until(cond.LastTransitionTime.Add(c.Retention))
	if left <= 0 {
		return reconcile.Result{}, client.IgnoreNotFound(c.Client.Delete(ctx, ar))
	}
	return reconcile.Result{RequeueAfter: left}, nil
}

// pruneFinished deletes the finished requests of ar's Pod namespace, in ar's namespace, past the
// newest RetainedPerNamespace. A request lives in its Connector's namespace, which may be
// shared (kube-public's, a project's): a tenant starting and ending gated Pods in a loop would
// otherwise leave one request per Pod there for the retention, in etcd and in every cache of
// them, and could fill that namespace's object quota for every tenant using its Connectors.
// It runs as ar is revoked (not at each later reconcile of a finished request, which would list
// the namespace's requests for each of them after a restart), and counts ar, whose revocation
// the cache does not hold yet.
func (c *Controller) pruneFinished(ctx context.Context, ar *v1alpha1.AccessRequest) error {
	if c.RetainedPerNamespace <= 0 {
		return nil
	}
	var list v1alpha1.AccessRequestList
	if err := c.Cache.List(ctx, &list, client.InNamespace(ar.Namespace), client.UnsafeDisableDeepCopy,
		client.MatchingLabels{v1alpha1.LabelContextObjectNamespace: ar.Labels[v1alpha1.LabelContextObjectNamespace]}); err != nil {
		return err
	}
	finished := []*v1alpha1.AccessRequest{ar}
	for i := range list.Items {
		if list.Items[i].UID != ar.UID && revoked(&list.Items[i]) {
			finished = append(finished, &list.Items[i])
		}
	}
	if len(finished) <= c.RetainedPerNamespace {
		return nil
	}
	slices.SortFunc(finished, olderFirst)
	for _, old := range finished[:len(finished)-c.RetainedPerNamespace] {
		uid := old.UID // the cache's object is not handed to the client
		gone := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}}
		if err := c.Client.Delete(ctx, gone, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// finishedAt is when a finished request's grant was cleaned up.
func finishedAt(ar *v1alpha1.AccessRequest) time.Time {
	return meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync).LastTransitionTime.Time
}

// olderFirst orders finished requests by when they finished, then by when they were created,
// then by name: both times are in whole seconds, and the order must be the same at every
// prune.
func olderFirst(a, b *v1alpha1.AccessRequest) int {
	if c := finishedAt(a).Compare(finishedAt(b)); c != 0 {
		return c
	}
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func (c *Controller) deleteGrant(ctx context.Context, ar *v1alpha1.AccessRequest) error {
	return deleteGrant(ctx, readerFor(ctx, c.Client), c.Client, ar, ar.Name)
}

// deleteLateGrant deletes a revoked request's grant that was written after its revocation:
// by a leader that lost its lease after its last check of the request and before its write,
// while the new leader revoked (the write is checked once, before; see record). Such a grant
// is the controller's own writing, which the cache keeps with its owner (GrantCacheView); an
// object the cache keeps as a stub is someone else's, and is neither read nor deleted (a
// tenant's Role named as its request would otherwise cost a read at each of its changes).
func (c *Controller) deleteLateGrant(ctx context.Context, ar *v1alpha1.AccessRequest) error {
	key := client.ObjectKeyFromObject(ar)
	for _, obj := range []client.Object{&rbacv1.RoleBinding{}, &rbacv1.Role{}} {
		if err := c.Cache.Get(ctx, key, obj, client.UnsafeDisableDeepCopy); err != nil || !metav1.IsControlledBy(obj, ar) {
			continue
		}
		uid := obj.GetUID()
		if err := c.Client.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// recordTransitions emits an Event for every condition whose status or reason changed.
func (c *Controller) recordTransitions(ar *v1alpha1.AccessRequest, before *v1alpha1.AccessRequestStatus) {
	if c.Recorder == nil {
		return
	}
	for _, cond := range ar.Status.Conditions {
		old := meta.FindStatusCondition(before.Conditions, cond.Type)
		if old != nil && old.Status == cond.Status && old.Reason == cond.Reason {
			continue
		}
		eventType := corev1.EventTypeNormal
		if cond.Status == metav1.ConditionFalse && cond.Reason != v1alpha1.ReasonNoPermissionRequired && cond.Type != v1alpha1.ConditionReady {
			eventType = corev1.EventTypeWarning
		}
		c.Recorder.Eventf(ar, nil, eventType, cond.Type+cond.Reason, "Evaluate", "%s", cond.Message)
	}
}

// apiequalityStatus compares statuses, ignoring condition transition times.
func apiequalityStatus(a, b *v1alpha1.AccessRequestStatus) bool {
	return equality.Semantic.DeepEqual(a.Policies, b.Policies) && v1alpha1.ConditionsEqual(a.Conditions, b.Conditions)
}
