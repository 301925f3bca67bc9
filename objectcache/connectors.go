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
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/contract"
	"github.com/kube-connectors/connectors-csi/singlecall"
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
	// OnDrop, set before the first Get, is told of each Connector no longer watched (idle,
	// pushed out, or at the end): the proxy drops its metric series too, which would otherwise
	// stay for every Connector ever used through the node (a tenant's thousands), and start
	// again from zero at its next request.
	OnDrop func(types.NamespacedName)
	// Lookups, set before the first Lookup, is the client Lookup lists with (nil: the
	// watching client): the proxy's, whose rate limit publishes do not share.
	Lookups client.Reader
	// ReadTTL, set before the first ReadWith or Lookup, is how long a Connector ReadWith, or a
	// Lookup it did not watch, listed is kept (0: not kept); at most maxListed of each are.
	ReadTTL time.Duration
	// LookupsPerNamespace, set before the first Lookup, bounds the Connectors of one namespace
	// watched for the proxy's lookups alone (0: only max/2 bounds them); a lookup of another is
	// served from a list, kept ReadTTL and then listed again from the API server's watch cache. The proxy's lookups follow what Pods send it: a tenant with a Pod
	// on every node could otherwise have each node watch hundreds of its Connectors, a watch
	// each in the API servers, millions in a 5,000-node cluster.
	LookupsPerNamespace int

	mu      sync.Mutex
	watched map[types.NamespacedName]*watched
	// missing remembers the Connectors Lookup found do not exist, for missingTTL.
	missing *expirable.LRU[types.NamespacedName, struct{}]
	lookups singleflight.Group
	// apiListed holds what ReadWith listed, unlisted what lookups listed and did not watch.
	apiListed, unlisted listedCache
}

// listedCache keeps Connectors read without a watch, and when and at which version they were
// listed; made at its first use (ReadTTL is set after NewConnectors), none when ReadTTL is 0.
type listedCache struct {
	once   sync.Once
	lru    *expirable.LRU[types.NamespacedName, *listing]
	metric string // its size's cache label
}

// listing is a Connector as a list found it (nil obj: none, or too large), and when.
type listing struct {
	*held
	at time.Time
}

// of returns l's entries of c, kept life long; nil when c keeps none.
func (l *listedCache) of(c *Connectors, life time.Duration) *expirable.LRU[types.NamespacedName, *listing] {
	l.once.Do(func() {
		if c.ReadTTL > 0 {
			l.lru = expirable.NewLRU[types.NamespacedName, *listing](min(c.max, maxListed), nil, life)
			cachemetrics.Register(l.metric, l.lru.Len)
		}
	})
	return l.lru
}

// get returns l's entry of nn, if l keeps one.
func (l *listedCache) get(nn types.NamespacedName) (*listing, bool) {
	if l.lru == nil {
		return nil, false
	}
	return l.lru.Get(nn)
}

// add keeps conn in l when l keeps any, and returns it as held.
func (l *listedCache) add(c *Connectors, nn types.NamespacedName, conn *v1alpha1.Connector) *held {
	h := kept(conn)
	if l.lru != nil {
		l.lru.Add(nn, &listing{held: h, at: c.now()})
	}
	return h
}

func (l *listedCache) remove(nn types.NamespacedName) {
	if l.lru != nil {
		l.lru.Remove(nn)
	}
}

// held is a Connector as a node keeps it: nil when there is none, or when it is too large to
// keep (oversize, its size, then set).
type held struct {
	obj      *v1alpha1.Connector
	oversize int
}

// watched is one Connector's watch and what it holds.
type watched struct {
	// obj is the Connector, nil when there is none, once synced is closed (the first list).
	obj atomic.Pointer[v1alpha1.Connector]
	// oversize is the size of a Connector too large to hold, 0 for none.
	oversize atomic.Int64
	entry
	// volume: a volume read it (Get), not only lookups; see makeRoomLocked.
	volume bool
}

// NewConnectors returns a cache reading through c; Run must run for entries to expire. Lookup
// remembers a missing Connector for missingTTL (0: it does not).
func NewConnectors(c client.WithWatch, idle time.Duration, max int, missingTTL time.Duration) *Connectors {
	cc := &Connectors{client: c, idle: idle, max: max, now: time.Now, watched: map[types.NamespacedName]*watched{},
		apiListed: listedCache{metric: "connectors_api"}, unlisted: listedCache{metric: "connectors_unwatched_lookups"}}
	if missingTTL > 0 {
		cc.missing = expirable.NewLRU[types.NamespacedName, struct{}](max, nil, missingTTL)
	}
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
	return c.read(ctx, nn, c.watch(nn, nil, "", true))
}

// Lookup is Get for readers any client of the network may drive with names it makes up (the
// proxy, the Connectors API): a Connector not watched yet is listed once, and watched from
// that list only if it exists; that it does not is remembered for the missing TTL, and
// concurrent lookups of one name share the list. Get keeps a missing Connector watched, for
// a Pod's volume waits for its creation; a watch per made-up name would cost every node a
// list and a watch each, and push out the Connectors its volumes use.
func (c *Connectors) Lookup(ctx context.Context, nn types.NamespacedName) (*v1alpha1.Connector, error) {
	return c.LookupWith(ctx, nn, c.lookupReader(), false)
}

// LookupWith is Lookup listing with lists: a caller's own client, and rate limit; forVolume
// for a new volume's lookup, which watches a Connector that exists as Get does (not bound by
// LookupsPerNamespace: its Pod uses it).
func (c *Connectors) LookupWith(ctx context.Context, nn types.NamespacedName, lists client.Reader, forVolume bool) (*v1alpha1.Connector, error) {
	w, missing := c.known(nn)
	if missing {
		return nil, notFound(nn)
	}
	if w != nil {
		return c.readWithin(ctx, nn, w)
	}
	// A Connector listed earlier and not watched (its namespace's lookups fill their share)
	// is served from that list for ReadTTL, then listed again from the API server's watch
	// cache (no read of etcd; one that lags is as good as the list this replaces). Not with a
	// version not older than the last list's: that is etcd's revision, which the watch cache of
	// a kind with no change since has not seen, and waits for, then answers 504, which the
	// client retries for seconds.
	c.unlisted.of(c, 2*c.ReadTTL)
	seen := ""
	if l, ok := c.unlisted.get(nn); ok && !forVolume {
		if c.now().Sub(l.at) < c.ReadTTL {
			return l.connector(nn)
		}
		seen = anyVersion
	}
	// What the list found: watched from it, or kept as listed.
	type found struct {
		w *watched
		h *held
	}
	key := nn.String()
	if forVolume {
		key = "volume\x00" + key // a proxy's lookup of the name would not watch it as a volume's
	}
	f, err := singlecall.Do(ctx, &c.lookups, key, lookupTimeout, func(ctx context.Context) (found, error) {
		// A lookup that looked before a list of the name ended, and comes after it, finds it.
		if w, missing := c.known(nn); w != nil || missing {
			return found{w: w}, nil
		}
		conn, rv, err := c.listOne(ctx, lists, nn, seen)
		if err == nil && conn == nil && seen != "" {
			// A watch cache that lags may not have it yet: that it is gone is remembered for
			// an hour, on a consistent list's word only.
			conn, rv, err = c.listOne(ctx, lists, nn, "")
		}
		switch {
		case err != nil:
			return found{}, err
		case conn == nil:
			c.rememberMissing(nn)
			return found{}, nil
		}
		if w := c.watch(nn, conn, rv, forVolume); w != nil {
			return found{w: w}, nil
		}
		return found{h: c.unlisted.add(c, nn, conn)}, nil
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("lookup of Connector %s: %w", nn, err)
	case f.w != nil:
		return c.readWithin(ctx, nn, f.w)
	}
	return f.h.connector(nn)
}

// rememberMissing notes that nn does not exist, for the missing TTL.
func (c *Connectors) rememberMissing(nn types.NamespacedName) {
	if c.missing != nil {
		c.missing.Add(nn, struct{}{})
	}
}

// lookupSyncWait bounds how long a lookup, or an API read, waits for a watch's first list
// (one a volume's publish started, which the API server may keep refusing): the proxy's and
// the API's callers get an error (503) instead of each waiting to its own end.
var lookupSyncWait = 10 * time.Second

// readWithin is read, waiting at most lookupSyncWait for the watch's first list.
func (c *Connectors) readWithin(ctx context.Context, nn types.NamespacedName, w *watched) (*v1alpha1.Connector, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupSyncWait)
	defer cancel()
	return c.read(ctx, nn, w)
}

// ReadWith is Lookup without a watch, for readers that anyone may drive at any node with the
// names of every Connector they may get (the Connectors API, which takes any token the
// cluster accepts): a Connector watched already (a volume's, the proxy's) is read from its
// watch, which the read does not keep longer; another is listed with lists (concurrent reads
// of one name share the list) and kept for ReadTTL apart from the watches; that it does not
// exist is remembered as by Lookup. Watched, each such Connector would be one more watch per
// node it was read at (a tenant calling every node's API could make every node of the
// cluster watch each of its Connectors, and fan each write out to all of them) and would push
// out the watches of the node's volumes.
func (c *Connectors) ReadWith(ctx context.Context, nn types.NamespacedName, lists client.Reader) (*v1alpha1.Connector, error) {
	c.apiListed.of(c, c.ReadTTL)
	if w := c.peek(nn); w != nil {
		return c.readWithin(ctx, nn, w)
	}
	if c.missing != nil {
		if _, missing := c.missing.Get(nn); missing {
			return nil, notFound(nn)
		}
	}
	if l, ok := c.apiListed.get(nn); ok {
		return l.connector(nn)
	}
	h, err := singlecall.Do(ctx, &c.lookups, "read\x00"+nn.String(), lookupTimeout, func(ctx context.Context) (*held, error) {
		found, _, err := c.listOne(ctx, lists, nn, "")
		if err != nil || found == nil {
			if err == nil {
				c.rememberMissing(nn)
			}
			return nil, err
		}
		return c.apiListed.add(c, nn, found), nil
	})
	if err != nil {
		return nil, fmt.Errorf("read of Connector %s: %w", nn, err)
	}
	return h.connector(nn)
}

// maxListed bounds the Connectors ReadWith keeps (each up to contract.MaxConnectorBytes).
const maxListed = 256

// forgetListed drops what ReadWith and lookups kept of nn, which a watch now holds: older than
// the watch's, it could be read again once the watch is dropped.
func (c *Connectors) forgetListed(nn types.NamespacedName) {
	c.apiListed.remove(nn)
	c.unlisted.remove(nn)
}

// peek returns the Connector's watch, not marking it read, or nil when there is none.
func (c *Connectors) peek(nn types.NamespacedName) *watched {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watched[nn]
}

// known returns the Connector's watch, marked read, or whether it is remembered missing.
func (c *Connectors) known(nn types.NamespacedName) (w *watched, missing bool) {
	if w := c.watching(nn); w != nil {
		return w, false
	}
	if c.missing != nil {
		_, missing = c.missing.Get(nn)
	}
	return nil, missing
}

// lookupTimeout bounds the list of a Lookup.
const lookupTimeout = 30 * time.Second

func (c *Connectors) lookupReader() client.Reader {
	if c.Lookups != nil {
		return c.Lookups
	}
	return c.client
}

// read returns w's Connector once its watch synced.
func (c *Connectors) read(ctx context.Context, nn types.NamespacedName, w *watched) (*v1alpha1.Connector, error) {
	if err := w.waitSynced(ctx, "Connector "+nn.String()); err != nil {
		return nil, err
	}
	return (&held{obj: w.obj.Load(), oversize: int(w.oversize.Load())}).connector(nn)
}

// connector is the Connector h holds, or the error of one too large to keep, or of none.
func (h *held) connector(nn types.NamespacedName) (*v1alpha1.Connector, error) {
	switch {
	case h == nil || h.obj == nil && h.oversize == 0:
		return nil, notFound(nn)
	case h.obj == nil:
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("Connector %s is %d bytes, more than the %d a node keeps (its spec, labels and annotations)",
			nn, h.oversize, contract.MaxConnectorBytes))
	}
	return h.obj, nil
}

func notFound(nn types.NamespacedName) error {
	return apierrors.NewNotFound(v1alpha1.GroupVersion.WithResource(v1alpha1.ResourceConnectors).GroupResource(), nn.Name)
}

// watching returns the Connector's watch, marked read, or nil when there is none.
func (c *Connectors) watching(nn types.NamespacedName) *watched {
	return marked(&c.mu, c.watched, nn, c.now)
}

// watch returns the Connector's watch, marked read (by a volume, or a lookup), starting it
// when there is none: from a list of it at listedAt that held listed, when listedAt is set
// (Lookup), else with a list. nil: no room for a lookup's (makeRoomLocked).
func (c *Connectors) watch(nn types.NamespacedName, listed *v1alpha1.Connector, listedAt string, volume bool) *watched {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.watched[nn]; ok {
		w.lastRead = c.now()
		w.volume = w.volume || volume
		return w
	}
	if !c.makeRoomLocked(volume, nn.Namespace) {
		return nil // a lookup's, with no room for it: served from its list, kept as listed
	}
	c.forgetListed(nn)
	w := &watched{entry: entry{lastRead: c.now()}, volume: volume}
	start(&w.entry, c.client, nn, listed, listedAt, func(conn *v1alpha1.Connector) { c.set(nn, w, conn) })
	c.watched[nn] = w
	return w
}

// listOne lists the Connector nn (a field selector on its name) with r, not older than seen
// ("": a consistent list): nil when there is none.
func (c *Connectors) listOne(ctx context.Context, r client.Reader, nn types.NamespacedName, seen string) (*v1alpha1.Connector, string, error) {
	found, rv, err := listOneNotOlderThan(ctx, r, nn, &v1alpha1.ConnectorList{}, seen)
	conn, _ := found.(*v1alpha1.Connector)
	return conn, rv, err
}

// set makes obj (nil: none) the Connector w holds, without what a node never reads (managed
// fields, kubectl's copy of the last applied spec); one it held that is gone is told to
// OnDelete. A Connector larger than contract.MaxConnectorBytes is not held: its size is, and
// reads fail naming it, so that a tenant cannot fill a node's memory with the Connectors its
// Pods name (the count is bounded, not each one's size).
func (c *Connectors) set(nn types.NamespacedName, w *watched, obj *v1alpha1.Connector) {
	c.forgetListed(nn)
	h := kept(obj)
	w.oversize.Store(int64(h.oversize))
	if had := w.obj.Swap(h.obj); had != nil && h.obj == nil && c.OnDelete != nil {
		c.OnDelete(nn)
	}
}

// kept is obj (nil: none) as a node keeps it: without what a node never reads, with a status
// of at most maxStatusBytes, or only its size when it is larger than
// contract.MaxConnectorBytes.
func kept(obj *v1alpha1.Connector) *held {
	if obj == nil {
		return &held{}
	}
	obj.ManagedFields = nil
	delete(obj.Annotations, corev1.LastAppliedConfigAnnotation)
	if size := contract.ConnectorBytes(obj); size > contract.MaxConnectorBytes {
		return &held{oversize: size}
	}
	boundStatus(&obj.Status)
	return &held{obj: obj}
}

// maxStatusBytes bounds the status a node keeps of a Connector: the controller writes a few
// KiB. The size bound leaves status aside, and whoever else may write connectors/status (RBAC
// that grants a tenant every resource of the group) could write megabytes of conditions into
// each Connector its Pods then name at a node.
const maxStatusBytes = 16 << 10

// boundStatus keeps a status over maxStatusBytes without its conditions and annotations (the
// node reads the status only as its templates' data: its proxy and API addresses), and none
// at all if it is still over.
func boundStatus(st *v1alpha1.ConnectorStatus) {
	if statusBytes(st) <= maxStatusBytes {
		return
	}
	st.Conditions, st.Annotations = nil, nil
	if statusBytes(st) > maxStatusBytes {
		*st = v1alpha1.ConnectorStatus{}
	}
}

func statusBytes(st *v1alpha1.ConnectorStatus) int {
	b, err := json.Marshal(st)
	if err != nil {
		return math.MaxInt
	}
	return len(b)
}

// makeRoomLocked drops a watch, if need be, before a new one starts, for a volume or for a
// lookup of a Connector of namespace ns: the least recently read of those only lookups read,
// when they are half of max (a new lookup's) or the cache is full; the least recently read
// volume's, for a volume, when volumes fill it. false: no room for a lookup's (volumes fill
// the cache, or ns's lookups are LookupsPerNamespace already). Lookups follow names anyone on
// the node may send its proxy (those of every Connector they may get): so they cannot push
// out the watches of the node's volumes, which would then be listed and watched again at their
// next republish, and one namespace's cannot push out another's.
func (c *Connectors) makeRoomLocked(forVolume bool, ns string) bool {
	lookups, nsLookups := 0, 0
	for nn, w := range c.watched {
		if !w.volume {
			lookups++
			if nn.Namespace == ns {
				nsLookups++
			}
		}
	}
	full := len(c.watched) >= c.max
	switch {
	case !forVolume && c.LookupsPerNamespace > 0 && nsLookups >= c.LookupsPerNamespace:
		return false
	case !forVolume && lookups >= max(c.max/2, 1), full && lookups > 0:
		c.dropOldestLocked(false)
	case full && !forVolume:
		return false
	case full:
		c.dropOldestLocked(true)
	}
	return true
}

// dropOldestLocked drops the least recently read watch of volumes' (volume), or of lookups'
// only.
func (c *Connectors) dropOldestLocked(volume bool) {
	var oldest types.NamespacedName
	var at time.Time
	for nn, w := range c.watched {
		if w.volume == volume && (at.IsZero() || w.lastRead.Before(at)) {
			oldest, at = nn, w.lastRead
		}
	}
	c.dropLocked(oldest)
}

func (c *Connectors) dropLocked(nn types.NamespacedName) {
	if w, ok := c.watched[nn]; ok {
		w.stop()
		delete(c.watched, nn)
		if c.OnDrop != nil {
			c.OnDrop(nn)
		}
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

// Reader serves Connectors from a Connectors cache and every other kind from Rest (the node's
// informer caches of ConnectorClasses and of its own AccessRequests), as one client.Reader.
// With Lookup, Connectors are read with Connectors.Lookup (for the proxy), with Unwatched with
// Connectors.ReadWith (for the Connectors API), else with Connectors.Get (for volumes).
type Reader struct {
	Connectors *Connectors
	Rest       client.Reader
	Lookup     bool
	Unwatched  bool
	// Volume: the lookups are a new volume's (Connectors.LookupWith's forVolume).
	Volume bool
	// Lists is the client a Lookup lists with (nil: Connectors.Lookups): volumes' lookups go
	// with the publishes' rate limit, not the proxy's, the API's with the API's.
	Lists client.Reader
}

// Get reads one object. A Connector is copied shallowly: its maps and slices are shared with
// the cache and must not be changed.
func (r Reader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c, ok := obj.(*v1alpha1.Connector)
	if !ok {
		return r.Rest.Get(ctx, key, obj, opts...)
	}
	lists := r.Lists
	if lists == nil {
		lists = r.Connectors.lookupReader()
	}
	read := r.Connectors.Get
	switch {
	case r.Unwatched:
		read = func(ctx context.Context, nn types.NamespacedName) (*v1alpha1.Connector, error) {
			return r.Connectors.ReadWith(ctx, nn, lists)
		}
	case r.Lookup:
		read = func(ctx context.Context, nn types.NamespacedName) (*v1alpha1.Connector, error) {
			return r.Connectors.LookupWith(ctx, nn, lists, r.Volume)
		}
	}
	cached, err := read(ctx, key)
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
