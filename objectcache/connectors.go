// Package objectcache holds what a node keeps of the API server's objects: only the
// Connectors its volumes and proxy requests use. The first read of a Connector starts a watch
// of that one object (a field selector on its name), later reads are served from it, and a
// Connector nobody read for the idle period is dropped with its watch. kubelet's watch-based
// Secret and ConfigMap managers work the same way; this is written here because they are
// internal to kubelet and typed for core objects. A node's memory therefore follows the
// Connectors its Pods use, not the cluster's count (10,000 Connectors would be tens of MiB on
// each of 5,000 nodes, and every change of one would go to every node).
package objectcache

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// Connectors is the on-demand cache of Connectors.
type Connectors struct {
	client client.WithWatch
	// idle is how long a Connector stays watched after its last read; max bounds how many are
	// watched at once (the least recently read is dropped first).
	idle time.Duration
	max  int
	now  func() time.Time

	// OnDelete, set before the first Get, is told of each watched Connector that is deleted
	// (the proxy drops its metric series).
	OnDelete func(types.NamespacedName)

	mu      sync.Mutex
	watched map[types.NamespacedName]*watched
}

// watched is one Connector's watch and what it holds.
type watched struct {
	store    cache.Store
	stop     chan struct{}
	synced   func() bool
	lastRead time.Time
}

// NewConnectors returns a cache reading through c; Run must run for entries to expire.
func NewConnectors(c client.WithWatch, idle time.Duration, max int) *Connectors {
	cc := &Connectors{client: c, idle: idle, max: max, now: time.Now, watched: map[types.NamespacedName]*watched{}}
	cachemetrics.Register("connectors", cc.len)
	return cc
}

func (c *Connectors) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watched)
}

// Get returns the Connector, from its watch (started on the first read, which waits for it to
// sync). The object is shared with other readers: do not change it. A missing Connector is a
// NotFound error, and stays watched, so that its creation is seen.
func (c *Connectors) Get(ctx context.Context, nn types.NamespacedName) (*v1alpha1.Connector, error) {
	w := c.watch(nn)
	if !cache.WaitForCacheSync(ctx.Done(), w.synced) {
		return nil, fmt.Errorf("watch of Connector %s did not sync: %w", nn, ctx.Err())
	}
	obj, ok, err := w.store.GetByKey(nn.Namespace + "/" + nn.Name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(v1alpha1.GroupVersion.WithResource(v1alpha1.ResourceConnectors).GroupResource(), nn.Name)
	}
	return obj.(*v1alpha1.Connector), nil
}

// watch returns the Connector's watch, starting it when there is none, and marks it read.
func (c *Connectors) watch(nn types.NamespacedName) *watched {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.watched[nn]; ok {
		w.lastRead = c.now()
		return w
	}
	if len(c.watched) >= c.max {
		c.dropOldestLocked()
	}
	w := c.start(nn)
	w.lastRead = c.now()
	c.watched[nn] = w
	return w
}

// start runs a reflector of one Connector into a store of its own.
func (c *Connectors) start(nn types.NamespacedName) *watched {
	selector := fields.OneTermEqualSelector("metadata.name", nn.Name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = selector
			list := &v1alpha1.ConnectorList{}
			err := c.client.List(ctx, list, client.InNamespace(nn.Namespace), &client.ListOptions{Raw: &opts})
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = selector
			return c.client.Watch(ctx, &v1alpha1.ConnectorList{}, client.InNamespace(nn.Namespace), &client.ListOptions{Raw: &opts})
		},
	}
	store, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &v1alpha1.Connector{},
		Handler: cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) {
			if c.OnDelete != nil {
				c.OnDelete(nn)
			}
		}},
		Transform: stripManagedFields,
	})
	w := &watched{store: store, stop: make(chan struct{}), synced: informer.HasSynced}
	go informer.Run(w.stop)
	return w
}

func (c *Connectors) dropOldestLocked() {
	var oldest types.NamespacedName
	var at time.Time
	for nn, w := range c.watched {
		if at.IsZero() || w.lastRead.Before(at) {
			oldest, at = nn, w.lastRead
		}
	}
	c.dropLocked(oldest)
}

func (c *Connectors) dropLocked(nn types.NamespacedName) {
	if w, ok := c.watched[nn]; ok {
		close(w.stop)
		delete(c.watched, nn)
	}
}

// Run drops Connectors not read for the idle period, until ctx is done; then it stops every
// watch.
func (c *Connectors) Run(ctx context.Context) {
	tick := time.NewTicker(max(c.idle/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			c.mu.Lock()
			for nn := range c.watched {
				c.dropLocked(nn)
			}
			c.mu.Unlock()
			return
		case <-tick.C:
			c.expire()
		}
	}
}

func (c *Connectors) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for nn, w := range c.watched {
		if c.now().Sub(w.lastRead) > c.idle {
			c.dropLocked(nn)
		}
	}
}

// stripManagedFields drops what a node never reads and would keep for each Connector.
func stripManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// Reader serves Connectors from a Connectors cache and every other kind from Rest (the node's
// informer caches of ConnectorClasses and of its own AccessRequests), as one client.Reader.
type Reader struct {
	Connectors *Connectors
	Rest       client.Reader
}

// Get reads one object. A Connector is copied shallowly: its maps and slices are shared with
// the cache and must not be changed.
func (r Reader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c, ok := obj.(*v1alpha1.Connector)
	if !ok {
		return r.Rest.Get(ctx, key, obj, opts...)
	}
	cached, err := r.Connectors.Get(ctx, key)
	if err != nil {
		return err
	}
	*c = *cached
	return nil
}

// List lists from Rest; Connectors are never listed on a node.
func (r Reader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*v1alpha1.ConnectorList); ok {
		return fmt.Errorf("a node does not list Connectors")
	}
	return r.Rest.List(ctx, list, opts...)
}
