// Package connectorstatus keeps each Connector's status true to reality (SPEC §2.2): its
// reverse-proxy address, the class label, and the conditions ConnectorClassReady, SecretReady,
// ProxyServiceReady, LivenessReady, AuthReady and Ready. It runs on the elected leader.
package connectorstatus

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/render"
	"github.com/kube-connectors/connectors-csi/secretcache"
)

// ProbeUserAgent is the User-Agent of liveness and auth probes.
const ProbeUserAgent = "connectors-csi-probe"

// Reconciler reconciles Connector status.
type Reconciler struct {
	Client client.Client
	// Secrets reads Secrets by name, through a short cache: the driver never watches Secrets,
	// and a Secret several Connectors share, or a burst of events, costs one read.
	Secrets *secretcache.Cache
	// ProxyURL is the built-in proxy's base URL.
	ProxyURL string
	// HTTP probes tools (liveness and auth probes).
	HTTP *http.Client
	// Recheck is how often reachability and credentials are probed again; each Connector's
	// next check is spread over [Recheck, 1.2 Recheck), so that 10,000 Connectors created
	// together are not probed together forever after.
	Recheck time.Duration
	// Workers is how many Connectors are reconciled at once (probes wait on tools).
	Workers int
}

// SetupWithManager registers the controller: Connectors (their spec and labels; not their
// status, which this controller writes itself), and every Connector of a class when the class
// changes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("connectorstatus").
		For(&v1alpha1.Connector{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&v1alpha1.ConnectorClass{}, handler.EnqueueRequestsFromMapFunc(r.connectorsOfClass),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(r)
}

func (r *Reconciler) connectorsOfClass(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.ConnectorList
	if err := r.Client.List(ctx, &list, client.MatchingLabels{v1alpha1.LabelConnectorClass: obj.GetName()}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, c := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}})
	}
	return out
}

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
	c.Status.Proxy = &v1alpha1.ProxyStatus{HTTPAddress: &v1alpha1.Addressable{URL: render.ConnectorProxyURL(r.ProxyURL, &class, c)}}
	if class.Spec.Proxy == nil || class.Spec.Proxy.URI == "" {
		set(v1alpha1.ConditionProxyServiceReady, true, "BuiltIn", "served by the built-in Connectors proxy")
	} else {
		set(v1alpha1.ConditionProxyServiceReady, true, "External", "served by %s", class.Spec.Proxy.URI)
	}
	authHeader := r.secretCondition(ctx, c, &class, classErr == nil, set)
	r.probeConditions(ctx, c, &class, authHeader, set)

	ready, reason, msg := true, "Ready", "the Connector is usable"
	for _, typ := range []string{v1alpha1.ConditionConnectorClassReady, v1alpha1.ConditionSecretReady, v1alpha1.ConditionProxyServiceReady,
		v1alpha1.ConditionLivenessReady, v1alpha1.ConditionAuthReady} {
		if cond := meta.FindStatusCondition(c.Status.Conditions, typ); cond != nil && cond.Status != metav1.ConditionTrue {
			ready, reason, msg = false, typ+"Failed", cond.Message
			break
		}
	}
	set(v1alpha1.ConditionReady, ready, reason, "%s", msg)
}

type setFunc func(typ string, ok bool, reason, format string, args ...any)

// secretCondition sets SecretReady and returns the Authorization header for auth probes.
func (r *Reconciler) secretCondition(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, classKnown bool, set setFunc) string {
	if c.Spec.Auth == nil || c.Spec.Auth.SecretRef == nil {
		set(v1alpha1.ConditionSecretReady, true, "NoAuth", "the Connector uses no credential")
		return ""
	}
	name, err := c.AuthSecretName()
	if err != nil {
		// Never read, so that the condition does not tell whether it exists.
		set(v1alpha1.ConditionSecretReady, false, ReasonSecretOutsideNamespace, "%v", err)
		return ""
	}
	ns := c.Namespace
	sec, err := r.Secrets.Get(ctx, ns, name)
	if err != nil {
		set(v1alpha1.ConditionSecretReady, false, "NotFound", "Secret %s/%s: %v", ns, name, err)
		return ""
	}
	secretType := string(sec.Type)
	if classKnown {
		secretType = proxy.AuthSecretType(c, class, sec)
	}
	for _, k := range proxy.RequiredKeys(secretType) {
		if len(sec.Data[k]) == 0 {
			set(v1alpha1.ConditionSecretReady, false, "MissingKey", "Secret %s/%s lacks key %q for type %s", ns, name, k, secretType)
			return ""
		}
	}
	set(v1alpha1.ConditionSecretReady, true, "Found", "Secret %s/%s holds a %s credential", ns, name, secretType)
	return proxy.AuthorizationHeader(secretType, sec)
}

// probeConditions sets LivenessReady (the tool answers) and AuthReady (the credential works).
func (r *Reconciler) probeConditions(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, authHeader string, set setFunc) {
	if p := class.Spec.LivenessProbe; p != nil && p.HTTP != nil {
		code, err := r.probe(ctx, c.Spec.Address, p.HTTP, "")
		switch {
		case err != nil:
			set(v1alpha1.ConditionLivenessReady, false, unreachableReason(err), "%s", unreachableMessage(err))
		case code >= 500:
			set(v1alpha1.ConditionLivenessReady, false, "ServerError", "the tool answered %d", code)
		default:
			set(v1alpha1.ConditionLivenessReady, true, "Reachable", "the tool answered %d", code)
		}
	} else {
		set(v1alpha1.ConditionLivenessReady, true, "NoProbe", "the ConnectorClass declares no liveness probe")
	}
	var authProbe *v1alpha1.AuthProbe
	if c.Spec.Auth != nil {
		if t := class.AuthType(c.Spec.Auth.Name); t != nil {
			authProbe = class.AuthProbe(t.Name)
		}
	}
	if authProbe == nil || authProbe.Probe.HTTP == nil || authHeader == "" {
		set(v1alpha1.ConditionAuthReady, true, "NoProbe", "no auth probe applies to this Connector")
		return
	}
	code, err := r.probe(ctx, c.Spec.Address, authProbe.Probe.HTTP, authHeader)
	switch {
	case err != nil:
		set(v1alpha1.ConditionAuthReady, false, unreachableReason(err), "%s", unreachableMessage(err))
	case code >= 200 && code < 300:
		set(v1alpha1.ConditionAuthReady, true, "Accepted", "the tool accepted the credential (%d)", code)
	default:
		set(v1alpha1.ConditionAuthReady, false, "Rejected", "the tool answered %d to the credential", code)
	}
}

// probe sends one probe request and returns the status code. r.HTTP follows no redirect and
// dials through the destination policy. Errors never carry the header.
func (r *Reconciler) probe(ctx context.Context, address string, p *v1alpha1.HTTPProbe, authHeader string) (int, error) {
	u, err := url.Parse(strings.TrimSuffix(address, "/") + "/" + strings.TrimPrefix(p.Path, "/"))
	if err != nil {
		return 0, err
	}
	if p.Scheme != "" {
		u.Scheme = strings.ToLower(p.Scheme)
	}
	method := p.Method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", ProbeUserAgent)
	for _, h := range p.HTTPHeaders {
		req.Header.Set(h.Name, h.Value)
	}
	if authHeader != "" {
		req.Header.Set("Authorization", authHeader)
	}
	req.Header.Set(egress.HopHeader, "1")
	res, err := r.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	_ = res.Body.Close()
	return res.StatusCode, nil
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
	return "the tool could not be reached"
}
