package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"net/http"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// Transports keeps one pooled transport per CA bundle, so that keep-alive connections are
// reused across requests and Pods. Bundles come from tenants' Secrets, so the set is bounded:
// the least recently used transport is dropped (its idle connections closed).
type Transports struct {
	newTransport func(roots *x509.CertPool) *http.Transport
	system       *http.Transport // an empty bundle: the system roots
	byBundle     *lru.Cache[[32]byte, *http.Transport]
}

// NewTransports keeps up to size transports, reported as connectors_cache_entries{cache=name};
// newTransport makes one trusting roots (nil: the system roots).
func NewTransports(size int, name string, newTransport func(roots *x509.CertPool) *http.Transport) *Transports {
	byBundle, _ := lru.NewWithEvict(max(size, 1), func(_ [32]byte, tr *http.Transport) { tr.CloseIdleConnections() })
	cachemetrics.Register(name, byBundle.Len)
	return &Transports{newTransport: newTransport, system: newTransport(nil), byBundle: byBundle}
}

// For returns the transport trusting the system roots plus bundle.
func (t *Transports) For(bundle []byte) *http.Transport {
	if len(bundle) == 0 {
		return t.system
	}
	key := sha256.Sum256(bundle)
	if tr, ok := t.byBundle.Get(key); ok {
		return tr
	}
	roots, _ := x509.SystemCertPool()
	if roots == nil {
		roots = x509.NewCertPool()
	}
	roots.AppendCertsFromPEM(bundle)
	tr := t.newTransport(roots)
	// Two requests may build the same transport at once; the second Add replaces the first,
	// which then serves only the request that built it.
	t.byBundle.Add(key, tr)
	return tr
}
