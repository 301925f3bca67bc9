package admission

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	admissionregistrationv1client "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// CertSecretName is the Secret, in the system namespace, that holds the webhook's self-signed
// serving certificate: every controller replica serves the same one, so the one caBundle fits
// whichever replica the API server reaches.
const CertSecretName = "connectors-csi-webhook-cert"

const (
	certValidity = 10 * 365 * 24 * time.Hour
	// certRenewBefore: a certificate this close to its end is replaced.
	certRenewBefore = 30 * 24 * time.Hour
)

// SelfSigned keeps the webhook's serving certificate without cert-manager: a self-signed CA
// and serving certificate made once (by the first replica) into a Secret, and the CA written
// into the ValidatingWebhookConfiguration's caBundle, checked again every Recheck so that a
// re-applied configuration (caBundle empty) is mended.
type SelfSigned struct {
	Secrets       corev1client.SecretInterface // in the system namespace
	Webhooks      admissionregistrationv1client.ValidatingWebhookConfigurationInterface
	Configuration string   // the ValidatingWebhookConfiguration's name
	Hosts         []string // names and IPs the certificate must hold
	Recheck       time.Duration

	current atomic.Pointer[tls.Certificate]
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (s *SelfSigned) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.current.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("the webhook's certificate is not loaded yet")
}

// Start loads (or makes) the certificate, then keeps it and the caBundle until ctx ends. The
// first load must succeed: without a certificate there is nothing to serve.
func (s *SelfSigned) Start(ctx context.Context) error {
	if err := s.sync(ctx); err != nil {
		return err
	}
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := s.sync(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Webhook certificate")
		}
	}, s.Recheck)
	return nil
}

func (s *SelfSigned) sync(ctx context.Context) error {
	sec, err := s.ensure(ctx)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return fmt.Errorf("the Secret %s: %w", CertSecretName, err)
	}
	s.current.Store(&pair)
	return s.patchCABundle(ctx, sec.Data["ca.crt"])
}

// ensure returns a Secret with a usable certificate: read, made when missing, replaced when it
// ends soon or lacks a host. Replicas racing lose with AlreadyExists or Conflict and read the
// winner's.
func (s *SelfSigned) ensure(ctx context.Context) (*corev1.Secret, error) {
	sec, err := s.Secrets.Get(ctx, CertSecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CertSecretName}, Type: corev1.SecretTypeTLS}
		if err := s.fill(sec); err != nil {
			return nil, err
		}
		created, err := s.Secrets.Create(ctx, sec, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return s.Secrets.Get(ctx, CertSecretName, metav1.GetOptions{})
		}
		return created, err
	case err != nil:
		return nil, fmt.Errorf("read Secret %s: %w", CertSecretName, err)
	case s.usable(sec):
		return sec, nil
	}
	if err := s.fill(sec); err != nil {
		return nil, err
	}
	updated, err := s.Secrets.Update(ctx, sec, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return s.Secrets.Get(ctx, CertSecretName, metav1.GetOptions{})
	}
	return updated, err
}

// fill puts a new CA and serving certificate for the hosts into sec (client-go's generator:
// an RSA CA and a serving certificate it signs; tls.crt holds both, ca.crt the CA).
func (s *SelfSigned) fill(sec *corev1.Secret) error {
	var ips []net.IP
	var names []string
	for _, h := range s.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("the webhook's certificate needs a DNS name (--webhook-service)")
	}
	chain, key, err := cert.GenerateSelfSignedCertKeyWithOptions(cert.SelfSignedCertKeyOptions{
		Host: names[0], AlternateDNS: names[1:], AlternateIPs: ips, MaxAge: certValidity})
	if err != nil {
		return err
	}
	certs, err := cert.ParseCertsPEM(chain)
	if err != nil || len(certs) != 2 {
		return fmt.Errorf("generated certificate chain: %v", err)
	}
	sec.Data = map[string][]byte{corev1.TLSCertKey: chain, corev1.TLSPrivateKeyKey: key,
		"ca.crt": pem.EncodeToMemory(&pem.Block{Type: cert.CertificateBlockType, Bytes: certs[1].Raw})}
	return nil
}

// usable tells whether sec's serving certificate covers every host and does not end soon.
func (s *SelfSigned) usable(sec *corev1.Secret) bool {
	certs, err := cert.ParseCertsPEM(sec.Data[corev1.TLSCertKey])
	if err != nil || len(certs) == 0 || len(sec.Data["ca.crt"]) == 0 || time.Until(certs[0].NotAfter) < certRenewBefore {
		return false
	}
	return !slices.ContainsFunc(s.Hosts, func(h string) bool { return certs[0].VerifyHostname(h) != nil })
}

// patchCABundle writes ca into every webhook of the configuration whose caBundle differs. A
// missing configuration is no error: there is nothing to trust the certificate yet.
func (s *SelfSigned) patchCABundle(ctx context.Context, ca []byte) error {
	cfg, err := s.Webhooks.Get(ctx, s.Configuration, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Info("No ValidatingWebhookConfiguration to give the webhook's CA to", "name", s.Configuration)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ValidatingWebhookConfiguration %s: %w", s.Configuration, err)
	}
	// A JSON patch per differing webhook, each guarded by a test of its name: a configuration
	// changed in between fails the patch instead of getting a CA at the wrong webhook.
	var ops []map[string]any
	for i, w := range cfg.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, ca) {
			ops = append(ops,
				map[string]any{"op": "test", "path": fmt.Sprintf("/webhooks/%d/name", i), "value": w.Name},
				map[string]any{"op": "add", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), "value": ca})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if _, err := s.Webhooks.Patch(ctx, s.Configuration, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch the caBundle of ValidatingWebhookConfiguration %s: %w", s.Configuration, err)
	}
	klog.FromContext(ctx).Info("Gave the webhook's CA to its configuration", "name", s.Configuration)
	return nil
}
