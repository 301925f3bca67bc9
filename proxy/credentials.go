package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/regoeval"
	"github.com/kube-connectors/connectors-csi/trust"
)

// credential is what the proxy adds to a Connector's upstream requests.
type credential struct {
	// authorization is the Authorization header value, when the tool takes one directly.
	authorization string
	// registry holds the basic credentials for the OCI token flow (SPEC §4.6).
	registry *registryLogin
	// secret is the Secret it came from (nil without one), for the Connectors API's clients.
	secret *corev1.Secret
	// generator, when set, is the auth type whose generator.rego computes what is injected
	// (see generate.go), of class; it replaces the built-in injection of its secretType.
	generator *v1alpha1.AuthType
	class     *v1alpha1.ConnectorClass
	// secretVersion is the generator's scope: its answers are kept per version of the Secret
	// ("" when the Secret has none: then they are not told apart by it).
	secretVersion string
}

// authSecret reads the Connector's credential Secret, or returns nil when it has none. A
// reference to another namespace is refused with 403 and never read (SPEC §4.7).
func (p *Proxy) authSecret(ctx context.Context, c *v1alpha1.Connector) (*corev1.Secret, error) {
	name, err := c.AuthSecretName()
	var foreign *v1alpha1.SecretOutsideNamespaceError
	if errors.As(err, &foreign) {
		return nil, refusef(http.StatusForbidden, "%s", foreign.Error())
	}
	if err != nil || name == "" {
		return nil, err
	}
	sec, err := p.secrets.Get(ctx, c.Namespace, name)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s of Connector %s/%s: %w", c.Namespace, name, c.Namespace, c.Name, err)
	}
	return sec, nil
}

// credentialFor reads the Connector's Secret and turns it into a credential by its class's
// secretType. Errors name the Connector and the Secret, never a value.
func (p *Proxy) credentialFor(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) (credential, error) {
	sec, err := p.authSecret(ctx, c)
	if err != nil || sec == nil {
		return credential{}, err
	}
	// A generator takes any Secret type: which keys it needs is the module's business.
	if t := class.AuthType(c.Spec.Auth.Name); regoeval.Generator(t) != "" {
		cred := credential{secret: sec, generator: t, class: class}
		if sec.UID != "" && sec.ResourceVersion != "" {
			cred.secretVersion = string(sec.UID) + "/" + sec.ResourceVersion
		}
		return cred, nil
	}
	secretType := AuthSecretType(c, class, sec)
	for _, k := range RequiredKeys(secretType) {
		if len(sec.Data[k]) == 0 {
			return credential{}, fmt.Errorf("secret %s/%s of Connector %s/%s (type %s) lacks key %q", sec.Namespace, sec.Name, c.Namespace, c.Name, secretType, k)
		}
	}
	switch secretType {
	case v1alpha1.SecretTypeBasicAuth, v1alpha1.SecretTypeBearerToken:
		return credential{authorization: AuthorizationHeader(secretType, sec), secret: sec}, nil
	case v1alpha1.SecretTypeDistributionRegistryAuth:
		return credential{secret: sec, registry: newRegistryLogin(c, sec)}, nil
	default:
		return credential{}, fmt.Errorf("connector %s/%s: the proxy cannot inject a credential of type %q", c.Namespace, c.Name, secretType)
	}
}

// AuthSecretType is the secretType of the Connector's auth type in its class, or the Secret's
// own type when the class does not declare it.
func AuthSecretType(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, sec *corev1.Secret) string {
	if t := class.AuthType(c.Spec.Auth.Name); t != nil && t.SecretType != "" {
		return t.SecretType
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

func newUpstreamTransport(policy *egress.Policy, roots *x509.CertPool, idle time.Duration, maxHead int) *http.Transport {
	return &http.Transport{
		// Never through another proxy: the environment's proxy settings are for clients.
		Proxy: nil,
		// Every connection passes the destination policy before it is dialed.
		DialContext:       policy.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		// Pass the client's Accept-Encoding through as it is: left on, the transport asks for
		// gzip for clients that did not, decodes the answer and drops its Content-Length.
		DisableCompression:    true,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       idle,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// A tool's answer head, as the direct transport's (headBudget); 10 MiB when unset.
		MaxResponseHeaderBytes: int64(maxHead),
	}
}

// transportFor returns the transport trusting what the Connector's tool is trusted with (see
// trust.Bundle), and that bundle (nil: the system roots alone).
func (p *Proxy) transportFor(ctx context.Context, c *v1alpha1.Connector) (*http.Transport, []byte, error) {
	bundle, err := trust.Bundle(ctx, p.cfg.GlobalCA, p.flags.Flags().CustomCACerts, c, p.secrets.Get)
	if err != nil {
		return nil, nil, fmt.Errorf("connector %s/%s: %w", c.Namespace, c.Name, err)
	}
	return p.transports.For(bundle), bundle, nil
}
