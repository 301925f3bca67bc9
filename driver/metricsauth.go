package driver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/kube-connectors/connectors-csi/access"
)

// metricsProtection is how the metrics listener is served: over TLS or not, and who may read
// /metrics and the profiles (/healthz and /readyz are kubelet's, and open).
type metricsProtection struct {
	tls   *tls.Config // nil: plain HTTP
	guard func(http.Handler) http.Handler
	// start keeps the certificate files watched until ctx ends (nil: nothing to keep).
	start func(ctx context.Context) error
}

// selfSignedValidity is how long the certificate made at start lasts: past any process's life.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// protectMetrics sets up --metrics-auth. Delegated: the listener's own client and rate limit
// (anyone who reaches the port can send tokens), the issuer's keys to refuse made-up tokens
// without a review, and tokens without exp taken too (a PodMonitor sends a Secret's).
func protectMetrics(p *process) (*metricsProtection, error) {
	o := p.o
	if o.MetricsAuth == MetricsAuthNone {
		return &metricsProtection{guard: func(h http.Handler) http.Handler { return h }}, nil
	}
	kube, err := kubernetes.NewForConfig(forCallers(p, limitedConfig(p, o.MetricsAuthQPS, o.MetricsAuthBurst)))
	if err != nil {
		return nil, err
	}
	// Refusals are kept as long as acceptances: a tenant's own token sent to every node's
	// listener would otherwise cost each node a review every --authorization-deny-ttl.
	reviewer, err := access.New(kube, access.Config{TokenTTL: o.MetricsAuthTTL, AllowTTL: o.MetricsAuthTTL, DenyTTL: o.MetricsAuthTTL,
		Name: "metrics", Keys: p.issuerKeys, Unexpiring: true, InvalidatedRetry: o.TokenInvalidatedRetry})
	if err != nil {
		return nil, err
	}
	m := &metricsProtection{tls: &tls.Config{MinVersion: tls.VersionTLS12},
		guard: func(h http.Handler) http.Handler { return access.Guard(reviewer, h) }}
	if o.MetricsCertFile != "" {
		w, err := certwatcher.New(o.MetricsCertFile, o.MetricsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--metrics-tls-cert-file %s, --metrics-tls-key-file %s: %w", o.MetricsCertFile, o.MetricsKeyFile, err)
		}
		m.tls.GetCertificate, m.start = w.GetCertificate, w.Start
		return m, nil
	}
	pair, err := selfSignedMetricsCertificate()
	if err != nil {
		return nil, fmt.Errorf("the metrics listener's self-signed certificate: %w", err)
	}
	m.tls.Certificates = []tls.Certificate{pair}
	return m, nil
}

// selfSignedMetricsCertificate makes a certificate for the Pod's host name. Scrapers of a
// self-signed listener skip verification (the PodMonitor's insecureSkipVerify): what the TLS
// is for is keeping their bearer token off the wire in the clear.
func selfSignedMetricsCertificate() (tls.Certificate, error) {
	names := []string{"connectors-csi-metrics"}
	if host, err := os.Hostname(); err == nil && host != "" {
		names = append(names, host)
	}
	chain, key, err := cert.GenerateSelfSignedCertKeyWithOptions(cert.SelfSignedCertKeyOptions{
		Host: names[0], AlternateDNS: names[1:], MaxAge: selfSignedValidity})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(chain, key)
}
