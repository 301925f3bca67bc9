package connectorstatus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// LabelHostService marks the Services this controller keeps for Connectors' own hosts; the
// controller's cache holds only those.
const LabelHostService = "connectors.cpaas.io/host-service"

// Reasons of ProxyServiceReady for a Connector with its own host on the built-in proxy.
const (
	ReasonBuiltInHost      = "BuiltInHost"
	ReasonInvalidName      = "InvalidServiceName"
	ReasonServiceNameTaken = "ServiceNameTaken"
)

// HostServiceCacheView is what the controller's cache keeps of a labelled Service: of one that
// may be a Connector's host Service (c-<name>, controlled by Connector <name>), what hostService
// reads, with at most two ports (the controller writes one: more compare unequal, and are
// patched back to it); nil for any other, which the cache keeps as a stub. The label and the
// owner reference are anyone's who may create Services to write, so what is kept is bounded by
// its size, not by whose the object claims to be.
func HostServiceCacheView(obj client.Object) client.Object {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	connector, ok := strings.CutPrefix(svc.Name, v1alpha1.HostServicePrefix)
	if !ok || !v1alpha1.ControlledBy(svc, "Connector", connector) {
		return nil
	}
	return &corev1.Service{ObjectMeta: v1alpha1.ControllerMeta(svc),
		Spec: corev1.ServiceSpec{Type: svc.Spec.Type, ExternalName: svc.Spec.ExternalName, Ports: svc.Spec.Ports[:min(len(svc.Spec.Ports), 2)]}}
}

// hostServiceError is why a Connector's own host could not be given; Reason is
// ProxyServiceReady's.
type hostServiceError struct {
	reason string
	err    error
}

func (e *hostServiceError) Error() string { return e.err.Error() }

// hostService keeps the Service c-<name> in the Connector's namespace, an ExternalName of the
// built-in proxy's Service, so that c-<name>.<ns>.svc.<domain> leads to the proxy, which picks
// the Connector by that host. The Service is owned by the Connector (deleted with it) and
// never replaces a Service someone else made.
func (r *Reconciler) hostService(ctx context.Context, c *v1alpha1.Connector) error {
	name, errs := v1alpha1.HostServiceName(c.Name)
	if len(errs) > 0 {
		return &hostServiceError{ReasonInvalidName, fmt.Errorf("the Connector's name gives no Service name for its own host (%s): %s; use the path resolver or a shorter name without dots", name, errs[0])}
	}
	want, err := r.hostServiceFor(c, name)
	if err != nil {
		return err
	}
	var got corev1.Service
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(want), &got)
	switch {
	case apierrors.IsNotFound(err):
		err = r.Client.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			return &hostServiceError{ReasonServiceNameTaken, fmt.Errorf("a Service %s/%s not made for this Connector exists; its own host needs that name", c.Namespace, name)}
		}
		return err
	case err != nil:
		return err
	case !metav1.IsControlledBy(&got, c):
		return &hostServiceError{ReasonServiceNameTaken, fmt.Errorf("the Service %s/%s belongs to another object; the Connector's own host needs that name", c.Namespace, name)}
	case got.Spec.ExternalName == want.Spec.ExternalName && equality.Semantic.DeepEqual(got.Spec.Ports, want.Spec.Ports):
		return nil
	}
	// A patch of what changed: the cache keeps only what is compared above (HostServiceCacheView),
	// and an update of that copy would drop the rest.
	patch := client.MergeFromWithOptions(got.DeepCopy(), client.MergeFromWithOptimisticLock{})
	got.Spec.ExternalName, got.Spec.Ports = want.Spec.ExternalName, want.Spec.Ports
	return r.Client.Patch(ctx, &got, patch)
}

// hostServiceFor is the Service giving c its own host.
func (r *Reconciler) hostServiceFor(c *v1alpha1.Connector, name string) (*corev1.Service, error) {
	u, err := url.Parse(r.ProxyURL)
	if err != nil || u.Hostname() == "" {
		return nil, errors.New("the built-in proxy's URL (--proxy-url) has no host to lead a Connector's own host to")
	}
	port := 80
	if u.Scheme == "https" {
		port = 443
	}
	if p, err := strconv.Atoi(u.Port()); err == nil {
		port = p
	}
	yes := true
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: map[string]string{LabelHostService: "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Connector",
				Name: c.Name, UID: c.UID, Controller: &yes}}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: u.Hostname(),
			// As the API server defaults it (targetPort: the port), so that the comparison with
			// what it stored finds nothing to write.
			Ports: []corev1.ServicePort{{Name: u.Scheme, Port: int32(port), Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(int32(port))}}},
	}, nil
}

// hostServiceCondition sets ProxyServiceReady for a Connector with its own host.
func (r *Reconciler) hostServiceCondition(ctx context.Context, c *v1alpha1.Connector, set setFunc) {
	err := r.hostService(ctx, c)
	var hs *hostServiceError
	switch {
	case errors.As(err, &hs):
		set(v1alpha1.ConditionProxyServiceReady, false, hs.reason, "%v", hs.err)
	case err != nil:
		set(v1alpha1.ConditionProxyServiceReady, false, "Error", "keeping Service %s%s: %v", v1alpha1.HostServicePrefix, c.Name, err)
	default:
		set(v1alpha1.ConditionProxyServiceReady, true, ReasonBuiltInHost, "served by the built-in Connectors proxy at its own host")
	}
}
