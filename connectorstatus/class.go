package connectorstatus

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// ConnectorClass condition reasons besides v1alpha1's.
const (
	ReasonNonAPI         = "NonAPI"
	ReasonServiceMissing = "ServiceNotFound"
	ReasonUnsupportedRef = "UnsupportedRef"
	ReasonInvalidURI     = "InvalidURI"
)

// ClassReconciler writes each ConnectorClass's status: where its proxy and its API are
// (status.proxy.httpAddress, status.api.address, resolved from spec.proxy and spec.api: a
// Service reference, a URI, or a URI relative to the Service) and the conditions ProxyReady,
// APIReady and Ready. A class without its own proxy is served by the built-in one, as is a
// class whose proxy reference names the built-in proxy's Service (Alauda's classes name
// theirs). Services are read by name with an uncached GET: classes are few, and a Service
// informer would cache the cluster's Services in the controller.
type ClassReconciler struct {
	Client client.Client
	// Reader reads Services live.
	Reader client.Reader
	// ProxyURL is the built-in proxy's base URL.
	ProxyURL string
	// SystemNamespace is where the built-in proxy's Service lives and the default namespace
	// of a reference.
	SystemNamespace string
	// BuiltInProxyServices are the names the built-in proxy's Service goes by in the system
	// namespace.
	BuiltInProxyServices []string
	// ClusterDomain is the cluster's DNS domain (cluster.local).
	ClusterDomain string
	// Recheck is how often a class is resolved again (a missing Service may appear).
	Recheck time.Duration
}

// SetupWithManager registers the controller for ConnectorClasses' spec changes.
func (r *ClassReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("connectorclassstatus").
		For(&v1alpha1.ConnectorClass{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

// Reconcile resolves one class's addresses.
func (r *ClassReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cached v1alpha1.ConnectorClass
	if err := r.Client.Get(ctx, req.NamespacedName, &cached); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	class := cached.DeepCopy()
	before := class.Status.DeepCopy()
	r.computeStatus(ctx, class)
	if !classStatusEqual(before, &class.Status) {
		if err := r.Client.Status().Update(ctx, class); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{RequeueAfter: wait.Jitter(r.Recheck, 0.2)}, nil
}

func classStatusEqual(a, b *v1alpha1.ConnectorClassStatus) bool {
	return a.ObservedGeneration == b.ObservedGeneration && equality.Semantic.DeepEqual(a.Proxy, b.Proxy) &&
		equality.Semantic.DeepEqual(a.API, b.API) && v1alpha1.ConditionsEqual(a.Conditions, b.Conditions)
}

func (r *ClassReconciler) computeStatus(ctx context.Context, class *v1alpha1.ConnectorClass) {
	set := func(typ string, status metav1.ConditionStatus, reason, format string, args ...any) {
		v1alpha1.SetConditionStatus(&class.Status.Conditions, class.Generation, typ, status, reason, format, args...)
	}
	class.Status.ObservedGeneration = class.Generation

	class.Status.Proxy = nil
	switch proxy, builtIn, err := r.resolveProxy(ctx, class); {
	case err != nil:
		set(v1alpha1.ConditionProxyReady, metav1.ConditionFalse, reasonOf(err), "spec.proxy: %v", err)
	case builtIn:
		class.Status.Proxy = &v1alpha1.ClassProxyStatus{HTTPAddress: proxy}
		set(v1alpha1.ConditionProxyReady, metav1.ConditionTrue, v1alpha1.ReasonBuiltIn, "served by the built-in Connectors proxy")
	default:
		class.Status.Proxy = &v1alpha1.ClassProxyStatus{HTTPAddress: proxy}
		set(v1alpha1.ConditionProxyReady, metav1.ConditionTrue, v1alpha1.ReasonResolved, "served by %s", proxy.URL)
	}

	class.Status.API = nil
	switch api, err := r.resolveAPI(ctx, class); {
	case err != nil:
		set(v1alpha1.ConditionAPIReady, metav1.ConditionFalse, reasonOf(err), "spec.api: %v", err)
	case api == nil:
		set(v1alpha1.ConditionAPIReady, metav1.ConditionTrue, ReasonNonAPI, "the class declares no API of its own")
	default:
		class.Status.API = &v1alpha1.ClassAPIStatus{Address: api}
		set(v1alpha1.ConditionAPIReady, metav1.ConditionTrue, v1alpha1.ReasonResolved, "served by %s", api.URL)
	}

	status, reason, msg := metav1.ConditionTrue, "Ready", "the class's proxy and API are resolved"
	for _, typ := range []string{v1alpha1.ConditionProxyReady, v1alpha1.ConditionAPIReady} {
		if c := meta.FindStatusCondition(class.Status.Conditions, typ); c != nil && c.Status != metav1.ConditionTrue {
			status, reason, msg = c.Status, typ+"Failed", c.Message
			break
		}
	}
	set(v1alpha1.ConditionReady, status, reason, "%s", msg)
}

// resolveError is a destination that cannot be resolved, with the reason it reads.
type resolveError struct {
	reason string
	msg    string
}

func (e *resolveError) Error() string { return e.msg }

func reasonOf(err error) string {
	if re, ok := err.(*resolveError); ok {
		return re.reason
	}
	return "Error"
}

// resolveProxy is the class's proxy address; builtIn when the built-in proxy serves it.
func (r *ClassReconciler) resolveProxy(ctx context.Context, class *v1alpha1.ConnectorClass) (*v1alpha1.Addressable, bool, error) {
	p := class.Spec.Proxy
	if p == nil || (p.Ref == nil && p.URI == "") || r.isBuiltInProxy(p.Ref) {
		return &v1alpha1.Addressable{Name: "http", URL: strings.TrimSuffix(r.ProxyURL, "/")}, true, nil
	}
	a, err := r.resolve(ctx, &p.Destination)
	return a, false, err
}

// resolveAPI is the class's API address, or nil when it declares none.
func (r *ClassReconciler) resolveAPI(ctx context.Context, class *v1alpha1.ConnectorClass) (*v1alpha1.Addressable, error) {
	a := class.Spec.API
	if a == nil || (a.Ref == nil && a.URI == "") {
		return nil, nil
	}
	return r.resolve(ctx, &a.Destination)
}

func (r *ClassReconciler) isBuiltInProxy(ref *v1alpha1.Reference) bool {
	return ref != nil && ref.Kind == "Service" && r.refNamespace(ref) == r.SystemNamespace && slices.Contains(r.BuiltInProxyServices, ref.Name)
}

func (r *ClassReconciler) refNamespace(ref *v1alpha1.Reference) string {
	if ref.Namespace != "" {
		return ref.Namespace
	}
	return r.SystemNamespace
}

// resolve turns a destination into an address: an absolute URI alone; else the referenced
// Service's cluster address (its first port unless 80), with a relative URI appended.
func (r *ClassReconciler) resolve(ctx context.Context, d *v1alpha1.Destination) (*v1alpha1.Addressable, error) {
	if d.Ref == nil {
		u, err := url.Parse(d.URI)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, &resolveError{ReasonInvalidURI, fmt.Sprintf("uri %q is neither an absolute URL nor relative to a ref", d.URI)}
		}
		return &v1alpha1.Addressable{URL: strings.TrimSuffix(d.URI, "/"), CACerts: d.CACerts, Audience: d.Audience}, nil
	}
	if d.Ref.Kind != "Service" || (d.Ref.APIVersion != "" && d.Ref.APIVersion != "v1") || d.Ref.Group != "" {
		return nil, &resolveError{ReasonUnsupportedRef, fmt.Sprintf("ref %s %s: only a core/v1 Service can be referenced", d.Ref.Kind, d.Ref.Name)}
	}
	ns := r.refNamespace(d.Ref)
	var svc corev1.Service
	if err := r.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: d.Ref.Name}, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &resolveError{ReasonServiceMissing, fmt.Sprintf("Service %s/%s does not exist", ns, d.Ref.Name)}
		}
		return nil, fmt.Errorf("reading Service %s/%s: %w", ns, d.Ref.Name, err)
	}
	host := fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, r.ClusterDomain)
	if len(svc.Spec.Ports) > 0 && svc.Spec.Ports[0].Port != 80 {
		host = fmt.Sprintf("%s:%d", host, svc.Spec.Ports[0].Port)
	}
	base := "http://" + host
	rel, err := url.Parse(d.URI)
	if err != nil || rel.IsAbs() {
		return nil, &resolveError{ReasonInvalidURI, fmt.Sprintf("uri %q must be a path relative to the ref", d.URI)}
	}
	u := strings.TrimSuffix(base, "/")
	if p := strings.Trim(rel.String(), "/"); p != "" {
		u += "/" + p
	}
	return &v1alpha1.Addressable{Name: d.Ref.Address, URL: u, CACerts: d.CACerts, Audience: d.Audience}, nil
}
