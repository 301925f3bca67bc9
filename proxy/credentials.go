package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// secrets reads Secrets on demand, one at a time, and keeps each briefly. The driver never
// lists or watches Secrets (SPEC §4.5): only those a request actually needs are read.
type secrets struct {
	kube  kubernetes.Interface
	ttl   time.Duration
	mu    sync.Mutex
	cache map[string]cachedSecret
	group singleflight.Group
}

type cachedSecret struct {
	secret  *corev1.Secret
	expires time.Time
}

func (s *secrets) get(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	key := namespace + "/" + name
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.secret, nil
	}
	v, err, _ := s.group.Do(key, func() (any, error) {
		sec, err := s.kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.cache[key] = cachedSecret{secret: sec, expires: time.Now().Add(s.ttl)}
		s.mu.Unlock()
		return sec, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*corev1.Secret), nil
}

// credential is what the proxy adds to a Connector's upstream requests.
type credential struct {
	// authorization is the Authorization header value, when the tool takes one directly.
	authorization string
	// registry holds the basic credentials for the OCI token flow (SPEC §4.6).
	registry *registryLogin
}

// credentialFor reads the Connector's Secret and turns it into a credential by its class's
// secretType. Errors name the Connector and the Secret, never a value.
func (p *Proxy) credentialFor(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) (credential, error) {
	if c.Spec.Auth == nil || c.Spec.Auth.SecretRef == nil {
		return credential{}, nil
	}
	ref := c.Spec.Auth.SecretRef
	ns := ref.Namespace
	if ns == "" {
		ns = c.Namespace
	}
	sec, err := p.secrets.get(ctx, ns, ref.Name)
	if err != nil {
		return credential{}, fmt.Errorf("secret %s/%s of Connector %s/%s: %w", ns, ref.Name, c.Namespace, c.Name, err)
	}
	secretType := AuthSecretType(c, class, sec)
	need := func(keys ...string) error {
		for _, k := range keys {
			if len(sec.Data[k]) == 0 {
				return fmt.Errorf("secret %s/%s of Connector %s/%s (type %s) lacks key %q", ns, ref.Name, c.Namespace, c.Name, secretType, k)
			}
		}
		return nil
	}
	switch secretType {
	case v1alpha1.SecretTypeBasicAuth, v1alpha1.SecretTypeBearerToken:
		if err := need(RequiredKeys(secretType)...); err != nil {
			return credential{}, err
		}
		return credential{authorization: AuthorizationHeader(secretType, sec)}, nil
	case v1alpha1.SecretTypeDistributionRegistryAuth:
		if err := need(RequiredKeys(secretType)...); err != nil {
			return credential{}, err
		}
		return credential{registry: &registryLogin{
			username:  string(sec.Data[corev1.BasicAuthUsernameKey]),
			password:  string(sec.Data[corev1.BasicAuthPasswordKey]),
			addresses: parsedAddresses(c),
		}}, nil
	default:
		return credential{}, fmt.Errorf("connector %s/%s: the proxy cannot inject a credential of type %q", c.Namespace, c.Name, secretType)
	}
}

// AuthSecretType is the secretType of the Connector's auth type in its class, or the Secret's
// own type when the class does not declare it.
func AuthSecretType(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, sec *corev1.Secret) string {
	if class.Spec.Auth != nil {
		for _, t := range class.Spec.Auth.Types {
			if t.Name == c.Spec.Auth.Name || c.Spec.Auth.Name == "" {
				return t.SecretType
			}
		}
	}
	return string(sec.Type)
}

// RequiredKeys are the Secret keys a secretType needs, or nil for a type the proxy does not use.
func RequiredKeys(secretType string) []string {
	switch secretType {
	case v1alpha1.SecretTypeBasicAuth, v1alpha1.SecretTypeDistributionRegistryAuth:
		return []string{corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey}
	case v1alpha1.SecretTypeBearerToken:
		return []string{"token"}
	}
	return nil
}

// AuthorizationHeader is the Authorization value for a basic-auth or bearer-token Secret, or "".
func AuthorizationHeader(secretType string, sec *corev1.Secret) string {
	switch secretType {
	case v1alpha1.SecretTypeBasicAuth:
		return "Basic " + base64.StdEncoding.EncodeToString(
			[]byte(string(sec.Data[corev1.BasicAuthUsernameKey])+":"+string(sec.Data[corev1.BasicAuthPasswordKey])))
	case v1alpha1.SecretTypeBearerToken:
		return "Bearer " + string(sec.Data["token"])
	}
	return ""
}

// transports keeps one pooled upstream transport per CA bundle, so that keep-alive
// connections are reused across requests and Pods.
type transports struct {
	mu   sync.Mutex
	byCA map[[32]byte]*http.Transport
}

func newUpstreamTransport(roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		// Never through another proxy: the environment's proxy settings are for clients.
		Proxy:             nil,
		DialContext:       (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		// Pass the client's Accept-Encoding through as it is: left on, the transport asks for
		// gzip for clients that did not, decodes the answer and drops its Content-Length.
		DisableCompression:    true,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// forConnector returns the transport trusting the Connector's caCertSecretRef (plus the system
// roots), or the default one.
func (p *Proxy) transportFor(ctx context.Context, c *v1alpha1.Connector) (*http.Transport, error) {
	if c.Spec.CACertSecretRef == nil {
		return p.transports.get(nil), nil
	}
	sec, err := p.secrets.get(ctx, c.Namespace, c.Spec.CACertSecretRef.Name)
	if err != nil {
		return nil, fmt.Errorf("CA secret %s/%s of Connector %s: %w", c.Namespace, c.Spec.CACertSecretRef.Name, c.Name, err)
	}
	pem := sec.Data["ca.crt"]
	if len(pem) == 0 {
		return nil, fmt.Errorf("CA secret %s/%s of Connector %s lacks key ca.crt", c.Namespace, c.Spec.CACertSecretRef.Name, c.Name)
	}
	return p.transports.get(pem), nil
}

func (t *transports) get(caPEM []byte) *http.Transport {
	key := sha256.Sum256(caPEM)
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.byCA[key]; ok {
		return tr
	}
	var roots *x509.CertPool
	if len(caPEM) > 0 {
		roots, _ = x509.SystemCertPool()
		if roots == nil {
			roots = x509.NewCertPool()
		}
		roots.AppendCertsFromPEM(caPEM)
	}
	tr := newUpstreamTransport(roots)
	t.byCA[key] = tr
	return tr
}
