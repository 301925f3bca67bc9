// Package secretcache reads Secrets by name, on demand, and keeps each for a TTL and no longer
// (expired entries are swept, not only skipped), in a bounded LRU. The driver never lists or
// watches Secrets (SPEC §4.5): the proxy and the status controller read only those they need.
package secretcache

import (
	"context"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-connectors/connectors-csi/cachebudget"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// GetFunc reads one Secret from the API server.
type GetFunc func(ctx context.Context, namespace, name string) (*corev1.Secret, error)

// FromWatchCache is a GetFunc over kube that reads from the API server's watch cache, not etcd
// (a GET without a resource version is read from etcd), and, when the watch cache says the
// Secret does not exist, again from etcd: the cache may lag a Secret created a moment ago, and
// its absence is remembered (RememberMissing) or reported. A Secret changed a moment ago may
// be read as it was; the cache keeps it for its TTL anyway.
func FromWatchCache(kube kubernetes.Interface) GetFunc {
	return func(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
		secrets := kube.CoreV1().Secrets(namespace)
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{ResourceVersion: "0"})
		if apierrors.IsNotFound(err) {
			return secrets.Get(ctx, name, metav1.GetOptions{})
		}
		return sec, err
	}
}

// Cache is a bounded, expiring cache of Secrets in front of a GetFunc.
type Cache struct {
	get   GetFunc
	cache *expirable.LRU[types.NamespacedName, *corev1.Secret] // nil when the TTL is 0: nothing is kept
	// missing remembers, for the TTL too, Secrets the API server said do not exist, once
	// RememberMissing was called; nil otherwise.
	missing *expirable.LRU[types.NamespacedName, error]
	size    int
	ttl     time.Duration
	group   singleflight.Group
	// bytes bounds the data of the Secrets kept: their count is bounded, but a tenant makes
	// each as large as the API server takes (about 1 MiB).
	bytes *cachebudget.Budget
}

// New returns a Cache keeping up to size Secrets, of at most maxBytes of data together, for
// ttl each, whose size is reported as connectors_cache_entries{cache=name}. Concurrent reads of
// one Secret share one request.
func New(get GetFunc, ttl time.Duration, size int, maxBytes int64, name string) *Cache {
	c := &Cache{get: get, bytes: &cachebudget.Budget{Max: maxBytes}}
	if ttl > 0 {
		c.cache = expirable.NewLRU[types.NamespacedName, *corev1.Secret](size, func(_ types.NamespacedName, sec *corev1.Secret) {
			c.bytes.Evicted(secretBytes(sec))
		}, ttl)
		cachemetrics.Register(name, c.cache.Len)
	}
	c.size, c.ttl = size, ttl
	return c
}

// RememberMissing makes c remember, for its TTL, a Secret the API server said does not exist,
// for a reader whose reads anyone may cause (the proxy: a Connector naming a Secret its owner
// has not made would read it at each request). A reader that is not told of a Secret's
// creation otherwise (the status controller) would report it missing for the TTL.
func (c *Cache) RememberMissing() *Cache {
	if c.ttl > 0 {
		c.missing = expirable.NewLRU[types.NamespacedName, error](c.size, nil, c.ttl)
	}
	return c
}

// secretBytes is what a Secret's data takes.
func secretBytes(sec *corev1.Secret) int64 {
	var n int64
	for k, v := range sec.Data {
		n += int64(len(k) + len(v))
	}
	return n
}

// readsKey keys a context's GetFunc (WithReads).
type readsKey struct{}

// WithReads returns ctx whose Secret reads that miss a Cache are sent with get: one caller's
// own client and rate limit, reading through the same cache (the Connectors API's, which anyone
// may call at any node, apart from the proxy's, which its node's Pods wait on).
func WithReads(ctx context.Context, get GetFunc) context.Context {
	return context.WithValue(ctx, readsKey{}, get)
}

// Get returns the Secret, from the cache or the API server (with ctx's GetFunc, if it has one:
// WithReads). The Secret is shared: do not change it.
func (c *Cache) Get(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: namespace, Name: name} // no string built per hit
	if c.cache != nil {
		if sec, ok := c.cache.Get(key); ok {
			return sec, nil
		}
	}
	if c.missing != nil {
		if err, ok := c.missing.Get(key); ok {
			return nil, err
		}
	}
	get, flight := c.get, key.String()
	if g, ok := ctx.Value(readsKey{}).(GetFunc); ok {
		// A read of its own: neither waits on the other's rate limit, nor fails with its context.
		get, flight = g, "reads:"+flight
	}
	v, err, _ := c.group.Do(flight, func() (any, error) {
		sec, err := get(ctx, namespace, name)
		if apierrors.IsNotFound(err) && c.missing != nil {
			c.missing.Add(key, err)
		}
		if err != nil {
			return nil, err
		}
		if c.cache != nil {
			cachebudget.Add(c.bytes, c.cache, key, sec, secretBytes(sec))
		}
		return sec, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*corev1.Secret), nil
}
