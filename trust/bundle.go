package trust

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachebudget"
	"github.com/kube-connectors/connectors-csi/configwatch"
)

const (
	// LabelCACert marks a Secret of the system namespace whose certificates join the global
	// bundle (value "true").
	LabelCACert = "connectors.cpaas.io/ca-cert"
	// BundleConfigMap is the ConfigMap of the system namespace the controller collects the
	// global bundle into; nodes watch this one object instead of the namespace's Secrets.
	BundleConfigMap = "connectors-ca-bundle"
	// BundleKey is its key holding the PEM.
	BundleKey = "ca.crt"
)

// Global holds the global bundle as the controller last collected it.
type Global struct {
	pem atomic.Pointer[[]byte]
}

// WatchGlobal keeps a Global current from BundleConfigMap as cms sees it (register before cms
// starts).
func WatchGlobal(ctx context.Context, cms *configwatch.Watcher) *Global {
	g := &Global{}
	log := klog.FromContext(ctx)
	cms.Handle(BundleConfigMap, func(cm *corev1.ConfigMap) {
		var pem []byte
		if cm != nil {
			pem = []byte(cm.Data[BundleKey])
		}
		g.pem.Store(&pem)
		log.Info("Global CA bundle", "bytes", len(pem))
	})
	return g
}

// StaticGlobal returns a Global with a fixed bundle, for tests and tools.
func StaticGlobal(pem []byte) *Global {
	g := &Global{}
	g.pem.Store(&pem)
	return g
}

// PEM returns the global bundle; a nil Global has none.
func (g *Global) PEM() []byte {
	if g == nil {
		return nil
	}
	if p := g.pem.Load(); p != nil {
		return *p
	}
	return nil
}

// Reasons of the CACertReady condition (Alauda's).
const (
	ReasonValid          = "Valid"
	ReasonNoCACert       = "NoCACert"
	ReasonSecretNotFound = "SecretNotFound"
	ReasonInvalidPEM     = "InvalidPEM"
)

// ConnectorCAError is why a Connector's own CA Secret could not be used. Reason is
// CACertReady's; the message names the Secret, never its contents.
type ConnectorCAError struct {
	Reason    string
	Namespace string
	Secret    string
	Err       error
}

func (e *ConnectorCAError) Error() string {
	return fmt.Sprintf("CA Secret %s/%s (spec.caCertSecretRef): %v", e.Namespace, e.Secret, e.Err)
}

func (e *ConnectorCAError) Unwrap() error { return e.Err }

// SecretGetter reads one Secret.
type SecretGetter func(ctx context.Context, namespace, name string) (*corev1.Secret, error)

// Bundle returns what c's tool is trusted with beyond the system roots: the global bundle
// when withGlobal (the feature flag), then the certificates of c's spec.caCertSecretRef, a
// Secret of c's own namespace (the reference has no namespace: another tenant's Secret
// cannot be named). An empty result means the system roots alone. A Secret that is missing or
// holds no certificate is a *ConnectorCAError.
func Bundle(ctx context.Context, global *Global, withGlobal bool, c *v1alpha1.Connector, get SecretGetter) ([]byte, error) {
	var out []byte
	if withGlobal {
		out = append(out, global.PEM()...)
	}
	own, err := ConnectorPEM(ctx, c, get)
	if err != nil {
		return nil, err
	}
	return append(out, own...), nil
}

// ConnectorPEM returns the certificates of c's spec.caCertSecretRef (nil without one).
func ConnectorPEM(ctx context.Context, c *v1alpha1.Connector, get SecretGetter) ([]byte, error) {
	ref := c.Spec.CACertSecretRef
	if ref == nil || ref.Name == "" {
		return nil, nil
	}
	sec, err := get(ctx, c.Namespace, ref.Name)
	if err != nil {
		reason := "SecretUnreadable"
		if apierrors.IsNotFound(err) {
			reason, err = ReasonSecretNotFound, errors.New("not found")
		}
		return nil, &ConnectorCAError{Reason: reason, Namespace: c.Namespace, Secret: ref.Name, Err: err}
	}
	pem, err := parsedCertificates(sec)
	if err != nil {
		return nil, &ConnectorCAError{Reason: ReasonInvalidPEM, Namespace: c.Namespace, Secret: ref.Name, Err: err}
	}
	return pem, nil
}

// parsed keeps CertificatesPEM's answer per Secret version (UID and resourceVersion): the
// proxy resolves a Connector's trust on every request, and parsing certificates there each
// time would be work for nothing. An entry is never stale, a new version has a new key.
// Bounded in count and in bytes (parsedBytes): a tenant makes each bundle as large as a Secret
// can be, and a new version of it (a changed annotation) is a new entry.
var parsed, _ = lru.NewWithEvict[string, []byte](1024, func(_ string, pem []byte) { parsedBytes.Evicted(int64(len(pem))) })

var parsedBytes = &cachebudget.Budget{Max: 16 << 20}

func parsedCertificates(sec *corev1.Secret) ([]byte, error) {
	key := string(sec.UID) + "/" + sec.ResourceVersion
	if sec.UID == "" || sec.ResourceVersion == "" {
		return CertificatesPEM(sec.Data) // not from the API server: nothing to key on
	}
	if pem, ok := parsed.Get(key); ok {
		return pem, nil
	}
	pem, err := CertificatesPEM(sec.Data)
	if err == nil {
		cachebudget.Add(parsedBytes, parsed, key, pem, int64(len(pem)))
	}
	return pem, err
}
