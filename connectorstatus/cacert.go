package connectorstatus

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/trust"
)

// Reasons of the Warning Events on a Connector whose CA Secret cannot be used (Alauda's).
const (
	ReasonCACertSecretNotFound = "CACertSecretNotFound"
	ReasonInvalidCACert        = trust.ReasonInvalidCACert
)

// caBundle returns what the Connector's probes trust beyond the system roots, and sets
// CACertReady when the feature flag enable-custom-ca-certs is on (removes it when off). A CA
// Secret that cannot be used leaves the probes with the global bundle alone: they then fail
// the way the proxy would, and CACertReady says why. A Warning Event marks each change into a
// failure, not every recheck.
func (r *Reconciler) caBundle(ctx context.Context, c *v1alpha1.Connector) []byte {
	enabled := r.Flags.Flags().CustomCACerts
	var global []byte
	if enabled {
		global = r.GlobalCA.PEM()
	}
	own, err := trust.ConnectorPEM(ctx, c, r.Secrets.Get)
	if !enabled {
		meta.RemoveStatusCondition(&c.Status.Conditions, v1alpha1.ConditionCACertReady)
		return own
	}
	var caErr *trust.ConnectorCAError
	switch {
	case errors.As(err, &caErr): // ConnectorPEM's only error
		r.caFailed(c, caErr)
	case c.Spec.CACertSecretRef == nil:
		v1alpha1.SetCondition(&c.Status.Conditions, c.Generation, v1alpha1.ConditionCACertReady, true, trust.ReasonNoCACert,
			"no spec.caCertSecretRef; the tool is trusted with the system and global CA certificates")
	default:
		v1alpha1.SetCondition(&c.Status.Conditions, c.Generation, v1alpha1.ConditionCACertReady, true, trust.ReasonValid,
			"CA certificate loaded from secret %q", c.Spec.CACertSecretRef.Name)
	}
	return slices.Concat(global, own) // global is shared: never append to it
}

// caFailed sets CACertReady=False; recordCAFailure records its Event once the status is
// written.
func (r *Reconciler) caFailed(c *v1alpha1.Connector, err *trust.ConnectorCAError) {
	v1alpha1.SetCondition(&c.Status.Conditions, c.Generation, v1alpha1.ConditionCACertReady, false, err.Reason, "%v", err)
}

// recordCAFailure records the Warning Event of a CACertReady that the status just written
// (c's) turned False, or False for another reason, than before. Only after the write: a write
// that fails is retried from a newer object, and an Event recorded before it would be recorded
// again, as a second Event (an Event names the object's resourceVersion).
func (r *Reconciler) recordCAFailure(c *v1alpha1.Connector, before *v1alpha1.ConnectorStatus) {
	now := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionCACertReady)
	if r.Recorder == nil || now == nil || now.Status != metav1.ConditionFalse {
		return
	}
	if was := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionCACertReady); was != nil &&
		was.Status == metav1.ConditionFalse && was.Reason == now.Reason {
		return
	}
	reason := ReasonInvalidCACert
	if now.Reason == trust.ReasonSecretNotFound {
		reason = ReasonCACertSecretNotFound
	}
	r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, reason, "CheckCACert", "%s", now.Message)
}

// trustState is what every Connector's CA outcome depends on beyond the Connector itself.
type trustState struct {
	enabled bool
	global  [32]byte
}

func (r *Reconciler) trustState() trustState {
	return trustState{enabled: r.Flags.Flags().CustomCACerts, global: sha256.Sum256(r.GlobalCA.PEM())}
}

// trustRecheckPeriod is how often the flag and the global bundle are compared with what the
// Connectors were last checked against: two local reads, no API request.
const trustRecheckPeriod = 2 * time.Second

// requeueOnTrustChange sends every Connector to the queue when enable-custom-ca-certs flips or
// the global bundle changes, so that CACertReady and the probes follow at once instead of at
// each Connector's next recheck (Alauda re-reconciles on a labelled Secret change too).
// Status is written only where it changes.
func (r *Reconciler) requeueOnTrustChange(ctx context.Context, out chan<- event.GenericEvent) error {
	last := r.trustState()
	tick := time.NewTicker(trustRecheckPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := r.trustState()
		if now == last {
			continue
		}
		var list v1alpha1.ConnectorList
		// Names only (the events are enqueued by name): the cache's objects are not copied.
		if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			klog.FromContext(ctx).Error(err, "Listing Connectors after a change of the CA trust; each is rechecked on its own schedule")
			continue
		}
		last = now
		for i := range list.Items {
			select {
			case out <- event.GenericEvent{Object: &list.Items[i]}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
