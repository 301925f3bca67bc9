// Package connectorstatus keeps each Connector's status true to reality (SPEC §2.2): its
// reverse-proxy address, the class label, and the conditions ConnectorClassReady, SecretReady,
// ProxyServiceReady, LivenessReady, AuthReady and Ready. It runs on the elected leader.
package connectorstatus

import (
	"context"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/fairqueue"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/render"
	"github.com/kube-connectors/connectors-csi/secretcache"
	"github.com/kube-connectors/connectors-csi/trust"
)

// ProbeUserAgent is the User-Agent of liveness and auth probes.
const ProbeUserAgent = "connectors-csi-probe"

// Reconciler reconciles Connector status.
type Reconciler struct {
	Client client.Client
	// Secrets reads Secrets by name, through a short cache: the driver never watches Secrets,
	// and a Secret several Connectors share, or a burst of events, costs one read.
	Secrets *secretcache.Cache
	// ProxyURL is the built-in proxy's base URL (its host is the target of Connectors' own
	// hosts) and ClusterDomain the cluster's DNS domain.
	ProxyURL      string
	ClusterDomain string
	// Transports probe tools (liveness and auth probes), one per CA bundle.
	Transports *trust.Transports
	// Flags are the feature flags (enable-custom-ca-certs) and GlobalCA the global CA bundle.
	Flags    *features.Source
	GlobalCA *trust.Global
	// Recorder records Warning Events for CA Secrets that cannot be used; nil records none.
	Recorder events.EventRecorder
	// Recheck is how often reachability and credentials are probed again; each Connector's
	// next check is spread over [Recheck, 1.2 Recheck), so that 10,000 Connectors created
	// together are not probed together forever after.
	Recheck time.Duration
	// Workers is how many Connectors are reconciled at once (probes wait on tools).
	Workers int
	// CELCacheSize bounds the compiled response.cel expressions kept (1024 when 0).
	CELCacheSize int

	responses *responseRules
}

// SetupWithManager registers the controller: Connectors (their spec and labels; not their
// status, which this controller writes itself), and every Connector of a class when the class
// changes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	size := r.CELCacheSize
	if size <= 0 {
		size = 1024
	}
	var err error
	if r.responses, err = newResponseRules(size); err != nil {
		return err
	}
	trustChanges := make(chan event.GenericEvent)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return r.requeueOnTrustChange(ctx, trustChanges) })); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("connectorstatus").
		WatchesRawSource(source.Channel(trustChanges, &handler.EnqueueRequestForObject{})).
		For(&v1alpha1.Connector{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}),
			predicate.Funcs{CreateFunc: func(e event.CreateEvent) bool { return !probedBefore(e.Object) }})).
		// A Connector probed before (by an earlier leader: a new leader's first list) is probed
		// again at a random time within Recheck rather than at once: 20,000 Connectors would
		// otherwise be probed, their Secrets read, all at the leader's start, and then the
		// queue would hold them all for a whole cycle ahead of a new Connector's namespace turn.
		Watches(&v1alpha1.Connector{}, handler.Funcs{CreateFunc: r.spreadFirstProbe}).
		// A host Service changed by someone else (led elsewhere) is led back at once, not at the
		// Connector's recheck. Only its own: the cache keeps other labelled Services as stubs,
		// with no owner; and not on a resync, which would probe every such Connector at once.
		// Nor at a new leader's first list (its Connectors' probes are spread), nor at its own
		// creation of one (the probe that made it is under way).
		Owns(&corev1.Service{}, builder.WithPredicates(predicate.ResourceVersionChangedPredicate{}, noCreate)).
		// A class's change queues its Connectors; its creation (a new leader's first list too)
		// only those that waited for it.
		Watches(&v1alpha1.ConnectorClass{}, handler.Funcs{
			CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.enqueueOfClass(ctx, q, e.Object, func(c *v1alpha1.Connector) bool { return !classFound(c) })
			},
			UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.enqueueOfClass(ctx, q, e.ObjectNew, nil)
			},
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.enqueueOfClass(ctx, q, e.Object, nil)
			},
		}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, classProxyChanged))).
		// In turns by namespace: a tenant's many Connectors, whose probes may wait on silent
		// tools, do not hold another's status behind them. One never probed goes first within its
		// namespace.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1), NewQueue: fairqueue.New(r.placeInQueue)}).
		Complete(r)
}

// probedBefore tells whether a Connector has a status already (an earlier leader's) of its
// current spec and class label: one changed since is probed at once.
func probedBefore(o client.Object) bool {
	c, ok := o.(*v1alpha1.Connector)
	if !ok || len(c.Status.Conditions) == 0 || c.Labels[v1alpha1.LabelConnectorClass] != c.Spec.ConnectorClassName {
		return false
	}
	for _, cond := range c.Status.Conditions {
		if cond.ObservedGeneration != c.Generation {
			return false
		}
	}
	return true
}

// spreadFirstProbe queues a Connector probed before at a random time within Recheck.
func (r *Reconciler) spreadFirstProbe(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if probedBefore(e.Object) {
		q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)}, rand.N(max(r.Recheck, time.Second)))
	}
}

// placeInQueue puts a Connector never probed first in its namespace's turn. Read from the cache,
// uncopied: the work queue asks under its lock.
func (r *Reconciler) placeInQueue(req reconcile.Request) fairqueue.Placement {
	var c v1alpha1.Connector
	err := r.Client.Get(context.Background(), req.NamespacedName, &c, client.UnsafeDisableDeepCopy)
	return fairqueue.Placement{Urgent: err == nil && len(c.Status.Conditions) == 0}
}

// classProxyChanged passes a class whose resolved proxy changed: its Connectors' proxy
// addresses change with it.
var classProxyChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	before, ok1 := e.ObjectOld.(*v1alpha1.ConnectorClass)
	after, ok2 := e.ObjectNew.(*v1alpha1.ConnectorClass)
	if !ok1 || !ok2 {
		return false
	}
	was, is := meta.FindStatusCondition(before.Status.Conditions, v1alpha1.ConditionProxyReady), meta.FindStatusCondition(after.Status.Conditions, v1alpha1.ConditionProxyReady)
	return before.OwnProxyURL() != after.OwnProxyURL() || (was == nil) != (is == nil) || (was != nil && is != nil && was.Status != is.Status)
}}

// enqueueOfClass queues the Connectors of the class obj that keep (nil: all).
func (r *Reconciler) enqueueOfClass(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], obj client.Object, keep func(*v1alpha1.Connector) bool) {
	var list v1alpha1.ConnectorList
	// Read only: the cache's objects are not copied.
	if err := r.Client.List(ctx, &list, client.MatchingLabels{v1alpha1.LabelConnectorClass: obj.GetName()}, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	for i := range list.Items {
		if c := &list.Items[i]; keep == nil || keep(c) {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}})
		}
	}
}

// classFound tells whether a Connector's status says its class was found.
func classFound(c *v1alpha1.Connector) bool {
	return meta.IsStatusConditionTrue(c.Status.Conditions, v1alpha1.ConditionConnectorClassReady)
}

// noCreate passes no creation.
var noCreate = predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }}

// Reconcile computes one Connector's status.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cached v1alpha1.Connector
	if err := r.Client.Get(ctx, req.NamespacedName, &cached); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	// The cache hands out shared objects (no copy per read); work on a copy.
	c := *cached.DeepCopy()
	if c.Labels[v1alpha1.LabelConnectorClass] != c.Spec.ConnectorClassName {
		patch := client.MergeFrom(c.DeepCopy())
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[v1alpha1.LabelConnectorClass] = c.Spec.ConnectorClassName
		if err := r.Client.Patch(ctx, &c, patch); err != nil {
			return reconcile.Result{}, err
		}
	}
	before := c.Status.DeepCopy()
	r.computeStatus(ctx, &c)
	if !statusEqual(before, &c.Status) {
		if err := r.Client.Status().Update(ctx, &c); err != nil {
			return reconcile.Result{}, err
		}
		r.recordCAFailure(&c, before)
	}
	return reconcile.Result{RequeueAfter: wait.Jitter(r.Recheck, 0.2)}, nil
}

// statusEqual compares statuses ignoring condition transition times.
func statusEqual(a, b *v1alpha1.ConnectorStatus) bool {
	return equality.Semantic.DeepEqual(a.Proxy, b.Proxy) && equality.Semantic.DeepEqual(a.API, b.API) &&
		v1alpha1.ConditionsEqual(a.Conditions, b.Conditions)
}

func (r *Reconciler) computeStatus(ctx context.Context, c *v1alpha1.Connector) {
	set := func(typ string, ok bool, reason, format string, args ...any) {
		v1alpha1.SetCondition(&c.Status.Conditions, c.Generation, typ, ok, reason, format, args...)
	}
	var class v1alpha1.ConnectorClass
	classErr := r.Client.Get(ctx, types.NamespacedName{Name: c.Spec.ConnectorClassName}, &class)
	switch {
	case apierrors.IsNotFound(classErr):
		set(v1alpha1.ConditionConnectorClassReady, false, "NotFound", "ConnectorClass %q does not exist", c.Spec.ConnectorClassName)
	case classErr != nil:
		set(v1alpha1.ConditionConnectorClassReady, false, "Error", "reading ConnectorClass %q: %v", c.Spec.ConnectorClassName, classErr)
	default:
		set(v1alpha1.ConditionConnectorClassReady, true, "Found", "ConnectorClass %q exists", class.Name)
	}
	c.Status.API = &v1alpha1.ConnectorAPIStatus{Path: connectorsapi.ConnectorPath(c.Namespace, c.Name)}
	c.Status.Proxy = &v1alpha1.ProxyStatus{HTTPAddress: &v1alpha1.Addressable{URL: render.ConnectorProxyURL(r.ProxyURL, r.ClusterDomain, &class, c)}}
	if classErr == nil && class.BuiltInProxyResolvesByHost() {
		r.hostServiceCondition(ctx, c, set)
	} else {
		proxyCondition(&class, classErr == nil, set)
	}
	cred := r.secretCondition(ctx, c, &class, classErr == nil, set)
	probes := egress.Client(r.Transports.For(r.caBundle(ctx, c)), probeTimeout)
	r.probeConditions(ctx, probes, c, &class, cred, set)

	setReady(c)
}

// setReady derives Ready from the other conditions: False with the first False one's message,
// else Unknown with the first Unknown one's, else True.
func setReady(c *v1alpha1.Connector) {
	status, reason, msg := metav1.ConditionTrue, "Ready", "the Connector is usable"
	for _, typ := range []string{v1alpha1.ConditionConnectorClassReady, v1alpha1.ConditionSecretReady, v1alpha1.ConditionProxyServiceReady,
		v1alpha1.ConditionLivenessReady, v1alpha1.ConditionAuthReady} {
		cond := meta.FindStatusCondition(c.Status.Conditions, typ)
		switch {
		case cond == nil || cond.Status == metav1.ConditionTrue:
		case cond.Status == metav1.ConditionFalse:
			v1alpha1.SetConditionStatus(&c.Status.Conditions, c.Generation, v1alpha1.ConditionReady, metav1.ConditionFalse, typ+"Failed", "%s", cond.Message)
			return
		case status == metav1.ConditionTrue:
			status, reason, msg = metav1.ConditionUnknown, cond.Reason, cond.Message
		}
	}
	v1alpha1.SetConditionStatus(&c.Status.Conditions, c.Generation, v1alpha1.ConditionReady, status, reason, "%s", msg)
}

type setFunc func(typ string, ok bool, reason, format string, args ...any)

// proxyCondition sets ProxyServiceReady from the class's ProxyReady: the built-in proxy, or
// the class's own once the controller resolved it.
func proxyCondition(class *v1alpha1.ConnectorClass, classKnown bool, set setFunc) {
	cond := meta.FindStatusCondition(class.Status.Conditions, v1alpha1.ConditionProxyReady)
	switch {
	case !classKnown:
		set(v1alpha1.ConditionProxyServiceReady, false, "ConnectorClassNotFound", "the ConnectorClass does not exist")
	case class.OwnProxyURL() != "":
		set(v1alpha1.ConditionProxyServiceReady, true, "External", "served by %s", class.OwnProxyURL())
	case cond != nil && cond.Status == metav1.ConditionFalse:
		set(v1alpha1.ConditionProxyServiceReady, false, "ProxyNotReady", "the ConnectorClass's proxy: %s", cond.Message)
	default:
		set(v1alpha1.ConditionProxyServiceReady, true, v1alpha1.ReasonBuiltIn, "served by the built-in Connectors proxy")
	}
}

// Reasons of the conditions, Alauda's where it names them.
const (
	ReasonSecretOptional   = "SecretOptional"
	ReasonNonAuthProbe     = "NonAuthProbe"
	ReasonNonLivenessProbe = "NonLivenessProbe"
	// ReasonSecretRequired (SecretReady=False): the auth type is not optional and the
	// Connector names no Secret.
	ReasonSecretRequired = "SecretRequired"
	// ReasonInvalidProbe (LivenessReady/AuthReady=False): the class's probe does not render or
	// its response.cel does not compile or yield a bool.
	ReasonInvalidProbe = "InvalidProbe"
)

// credential is what secretCondition found: the Secret and the Authorization value its type
// gives (empty for types the proxy does not inject itself).
type credential struct {
	secret     *corev1.Secret
	secretType string // as the class reads it (proxy.AuthSecretType)
	authHeader string
}

// secretCondition sets SecretReady and returns the credential for auth probes (nil without).
func (r *Reconciler) secretCondition(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, classKnown bool, set setFunc) *credential {
	if c.Spec.Auth == nil || c.Spec.Auth.SecretRef == nil {
		if t := authTypeOf(c, class, classKnown); t != nil && !t.Optional {
			set(v1alpha1.ConditionSecretReady, false, ReasonSecretRequired, "auth type %q needs spec.auth.secretRef", t.Name)
			return nil
		}
		set(v1alpha1.ConditionSecretReady, true, ReasonSecretOptional, "the Connector uses no credential")
		return nil
	}
	name, err := c.AuthSecretName()
	if err != nil {
		// Never read, so that the condition does not tell whether it exists.
		set(v1alpha1.ConditionSecretReady, false, ReasonSecretOutsideNamespace, "%v", err)
		return nil
	}
	ns := c.Namespace
	sec, err := r.Secrets.Get(ctx, ns, name)
	if err != nil {
		set(v1alpha1.ConditionSecretReady, false, "NotFound", "Secret %s/%s: %v", ns, name, err)
		return nil
	}
	secretType := string(sec.Type)
	if classKnown {
		secretType = proxy.AuthSecretType(c, class, sec)
	}
	for _, k := range proxy.RequiredKeys(secretType) {
		if len(sec.Data[k]) == 0 {
			set(v1alpha1.ConditionSecretReady, false, "MissingKey", "Secret %s/%s lacks key %q for type %s", ns, name, k, secretType)
			return nil
		}
	}
	set(v1alpha1.ConditionSecretReady, true, "Found", "Secret %s/%s holds a %s credential", ns, name, secretType)
	return &credential{secret: sec, secretType: secretType, authHeader: proxy.AuthorizationHeader(secretType, sec)}
}

// authTypeOf is the class's auth type the Connector selects (its first when the Connector
// names none); nil when the class is unknown or declares no auth.
func authTypeOf(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, classKnown bool) *v1alpha1.AuthType {
	if !classKnown {
		return nil
	}
	name := ""
	if c.Spec.Auth != nil {
		name = c.Spec.Auth.Name
	}
	return class.AuthType(name)
}

// probeConditions sets LivenessReady (the tool answers) and AuthReady (the credential works).
func (r *Reconciler) probeConditions(ctx context.Context, probes *http.Client, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, cred *credential, set setFunc) {
	unanswered := r.livenessCondition(ctx, probes, c, class, set)
	var authProbe *v1alpha1.AuthProbe
	if t := authTypeOf(c, class, true); t != nil && cred != nil {
		authProbe = class.AuthProbe(t.Name)
	}
	if authProbe == nil || (authProbe.Probe.HTTP == nil && authProbe.Probe.API == nil) {
		set(v1alpha1.ConditionAuthReady, true, ReasonNonAuthProbe, "no auth probe applies to this Connector")
		return
	}
	if unanswered && sameDestination(class.Spec.LivenessProbe, &authProbe.Probe) {
		// A tool that never answers would hold the worker for a second timeout.
		set(v1alpha1.ConditionAuthReady, false, "Unreachable", "not probed: the tool did not answer the liveness probe")
		return
	}
	res, err := r.probe(ctx, probes, c, class, &authProbe.Probe, cred)
	switch {
	case err != nil:
		reason, msg := probeFailure(err)
		set(v1alpha1.ConditionAuthReady, false, reason, "%s", msg)
	case res.ok:
		set(v1alpha1.ConditionAuthReady, true, "Accepted", "the tool accepted the credential (%d)", res.code)
	case res.notAuth:
		set(v1alpha1.ConditionAuthReady, false, "UnexpectedResponse", "%s", res.why)
	default:
		set(v1alpha1.ConditionAuthReady, false, "Rejected", "%s", res.why)
	}
}

// livenessCondition probes the tool without a credential; unanswered tells that the probe got
// no answer from the tool (Unreachable: a timeout, a refused or reset connection).
func (r *Reconciler) livenessCondition(ctx context.Context, probes *http.Client, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, set setFunc) (unanswered bool) {
	p := class.Spec.LivenessProbe
	if p == nil || (p.HTTP == nil && p.API == nil) {
		set(v1alpha1.ConditionLivenessReady, true, ReasonNonLivenessProbe, "the ConnectorClass declares no liveness probe")
		return false
	}
	res, err := r.probe(ctx, probes, c, class, p, nil)
	switch {
	case err != nil:
		reason, msg := probeFailure(err)
		set(v1alpha1.ConditionLivenessReady, false, reason, "%s", msg)
		return reason == "Unreachable"
	case res.ok:
		set(v1alpha1.ConditionLivenessReady, true, "Reachable", "the tool answered %d", res.code)
	default:
		set(v1alpha1.ConditionLivenessReady, false, "UnexpectedResponse", "%s", res.why)
	}
	return false
}

// sameDestination tells whether two probes go to the same host: both over HTTP to the
// Connector's address, with the same scheme and host overrides.
func sameDestination(a, b *v1alpha1.Probe) bool {
	return a != nil && a.HTTP != nil && b.HTTP != nil && a.HTTP.Host == b.HTTP.Host && a.HTTP.Scheme == b.HTTP.Scheme
}

// probe sends the probe's HTTP request to the tool, or its request through the class's API
// when it has no http form; cred is the credential of an auth probe, nil for liveness.
func (r *Reconciler) probe(ctx context.Context, probes *http.Client, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, p *v1alpha1.Probe, cred *credential) (probeResult, error) {
	if p.HTTP == nil {
		return r.probeAPI(ctx, probes, c, class, p.API, cred)
	}
	if cred == nil {
		return r.probeHTTP(ctx, probes, c, p.HTTP, nil, "")
	}
	return r.probeHTTP(ctx, probes, c, p.HTTP, cred.secret, cred.authHeader)
}

// probeFailure is the reason and message of a probe that got no answer to judge: a probe the
// class got wrong says so; a dial or transport error is a fixed text (see unreachableMessage).
func probeFailure(err error) (string, string) {
	var invalid *invalidProbeError
	if errors.As(err, &invalid) {
		return ReasonInvalidProbe, invalid.Error()
	}
	var unresolved apiNotResolvedError
	if errors.As(err, &unresolved) {
		return ReasonAPINotResolved, unresolved.Error()
	}
	return unreachableReason(err), unreachableMessage(err)
}

// probeTimeout bounds one probe: a tool that does not answer in it is unreachable, and a
// worker is not held longer.
const probeTimeout = 5 * time.Second

// ReasonSecretOutsideNamespace is SecretReady's reason for a credential reference to another
// namespace's Secret.
const ReasonSecretOutsideNamespace = "SecretOutsideNamespace"

// unreachableReason tells a refused destination from a tool that could not be reached.
func unreachableReason(err error) string {
	if egress.IsRefused(err) {
		return "DestinationRefused"
	}
	return "Unreachable"
}

// unreachableMessage is a fixed text: the dial error (refused, timed out, no route) would let
// a tenant map the cluster network through Connector addresses it sets (SPEC §4.7).
func unreachableMessage(err error) string {
	var refused *egress.RefusedError
	if errors.As(err, &refused) {
		return "the Connector's address is not an allowed destination: " + refused.Why
	}
	// A tool already answered, so this tells a tenant nothing new about the network, and it
	// is the one failure a user can fix from the Connector.
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		return "the tool's TLS certificate is signed by an authority it is not trusted with: set spec.caCertSecretRef, or a global CA with the feature flag enable-custom-ca-certs"
	}
	return "the tool could not be reached"
}
