package proxy

import (
	"net/http"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// ownerTransports are the http.Transports of the requests the direct transport does not take
// (other methods, a body it cannot send again, an upgrade, a tool that speaks only HTTP/2),
// one per Connector transport and pool owner: http.Transport pools its connections by host
// alone, and the reason the direct pools are split by owner (poolOwner) holds for them too. A
// tool that reads a body-less request's body as the next request (OPTIONS and WebDAV methods
// ignore bodies in many servers) would otherwise take the start of one tenant's request and
// the rest, with the credential injected, from another's, on one connection. The Connectors
// API's calls (Proxy.OwnPool, Upstream) are pooled the same way, in a set of their own. Written
// here because http.Transport has no pool key of its own to add to.
type ownerTransports struct {
	byOwner *lru.Cache[ownerTransportKey, *http.Transport]
}

type ownerTransportKey struct {
	transport *http.Transport
	owner     poolOwner
}

// newOwnerTransports keeps up to size transports (the least recently used go first, their idle
// connections closed), reported as connectors_cache_entries{cache=name}.
func newOwnerTransports(name string, size int) *ownerTransports {
	byOwner, _ := lru.NewWithEvict(max(size, 1), func(_ ownerTransportKey, tr *http.Transport) { tr.CloseIdleConnections() })
	cachemetrics.Register(name, byOwner.Len)
	return &ownerTransports{byOwner: byOwner}
}

// For returns tr's settings with a pool of owner's own.
func (o *ownerTransports) For(tr *http.Transport, owner poolOwner) *http.Transport {
	key := ownerTransportKey{transport: tr, owner: owner}
	if own, ok := o.byOwner.Get(key); ok {
		return own
	}
	own := tr.Clone()
	// Two requests may clone at once: the first kept serves both.
	if kept, found, _ := o.byOwner.PeekOrAdd(key, own); found {
		return kept
	}
	return own
}
