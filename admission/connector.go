// Package admission is the validating webhook of the controller role: it refuses a Connector
// that breaks its class's contract (package contract), naming the field, and keeps the
// webhook's serving certificate when no other tool does.
package admission

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/contract"
	"github.com/kube-connectors/connectors-csi/turns"
)

// ConnectorPath is where the webhook serves Connector reviews (the ValidatingWebhookConfiguration
// of deploy/ names it).
const ConnectorPath = "/validate-connectors"

// ConnectorValidator reviews Connector creates and updates.
type ConnectorValidator struct {
	// Reader reads the class from the controller's cache: every review reads one, and anyone
	// who may create a Connector may have them sent (a server-side dry run writes nothing and
	// still calls the webhook), so a live read each would spend the controller's API budget
	// on one tenant's loop.
	Reader client.Reader
	// Live reads a class the cache has not seen, or cannot answer for, with a rate limit of
	// its own: one created just before its first Connector (one kubectl apply) must be found.
	Live    client.Reader
	Decoder admission.Decoder
	// Authz, when set, refuses a Connector whose writer may not get the Secret it names
	// (secretReadable).
	Authz Authorizer

	turnsOnce sync.Once
	turns     *turns.ByNamespace // Live's reads, in turns by namespace
	reviews   *turns.ByNamespace // Authz's reviews, in turns by namespace
}

func (v *ConnectorValidator) initTurns() {
	v.turns = turns.New(liveReadsPerNamespace, 2*liveReadsPerNamespace)
	v.reviews = turns.New(secretReviewsPerNamespace, secretReviewBurst)
}

// Webhook is the validator as a controller-runtime webhook.
func (v *ConnectorValidator) Webhook(scheme *runtime.Scheme) *admission.Webhook {
	v.Decoder = admission.NewDecoder(scheme)
	return &admission.Webhook{Handler: v}
}

// Handle allows a Connector that keeps its class's contract and the size a node keeps. An
// update that leaves the spec as it was is allowed whatever the class says now: labels,
// finalizers and deletion must never depend on a class that changed or went away.
func (v *ConnectorValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	var c v1alpha1.Connector
	if err := v.Decoder.Decode(req, &c); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	var old *v1alpha1.Connector
	if req.Operation == admissionv1.Update {
		old = &v1alpha1.Connector{}
		if err := v.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
	}
	if err := sizeAllowed(&c, old); err != nil {
		return invalid(&c, field.ErrorList{err})
	}
	if old != nil && equality.Semantic.DeepEqual(old.Spec, c.Spec) {
		return admission.Allowed("spec unchanged")
	}
	var class v1alpha1.ConnectorClass
	key := client.ObjectKey{Name: c.Spec.ConnectorClassName}
	// Also when the cache cannot answer yet (a replica's webhook serves before its caches
	// have started).
	err := v.Reader.Get(ctx, key, &class)
	if err != nil && v.Live != nil {
		err = v.liveGet(ctx, c.Namespace, key, &class)
	}
	if apierrors.IsNotFound(err) {
		return invalid(&c, field.ErrorList{field.NotFound(field.NewPath("spec", "connectorClassName"), c.Spec.ConnectorClassName)})
	}
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if errs := contract.Connector(&c, &class); len(errs) > 0 {
		return invalid(&c, errs)
	}
	refused, err := v.secretReadable(ctx, req.UserInfo, &c)
	switch {
	case err != nil:
		return admission.Errored(http.StatusServiceUnavailable, err)
	case refused != nil:
		return invalid(&c, field.ErrorList{refused})
	}
	return admission.Allowed("")
}

// liveGet reads the class from the API server in the namespace's turn.
func (v *ConnectorValidator) liveGet(ctx context.Context, namespace string, key client.ObjectKey, class *v1alpha1.ConnectorClass) error {
	v.turnsOnce.Do(v.initTurns)
	if err := waitTurn(ctx, v.turns, namespace); err != nil {
		return fmt.Errorf("ConnectorClass %q is not in the webhook's cache yet, and the Connectors of namespace %s have had their turns "+
			"of reading classes from the API server (%d a second); try again: %w", key.Name, namespace, liveReadsPerNamespace, err)
	}
	return v.Live.Get(ctx, key, class)
}

// invalid refuses with the API server's own Invalid status, so that clients see
// `Connector.connectors.alauda.io "x" is invalid: spec.params[0].name: …`.
func invalid(c *v1alpha1.Connector, errs field.ErrorList) admission.Response {
	status := apierrors.NewInvalid(v1alpha1.GroupVersion.WithKind("Connector").GroupKind(), c.Name, errs).ErrStatus
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: false, Result: &status}}
}

// sizeAllowed refuses a Connector larger than a node keeps (contract.MaxConnectorBytes), also
// on an update of its metadata alone; an update that does not make an oversized Connector
// stored before this rule larger (a finalizer removed, its deletion) is allowed.
func sizeAllowed(c, old *v1alpha1.Connector) *field.Error {
	size := contract.ConnectorBytes(c)
	if size <= contract.MaxConnectorBytes || old != nil && size <= contract.ConnectorBytes(old) {
		return nil
	}
	return field.Forbidden(field.NewPath("spec"), fmt.Sprintf("the Connector is %d bytes as JSON with its labels and annotations, more than the %d a node keeps",
		size, contract.MaxConnectorBytes))
}
