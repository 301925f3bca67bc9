package e2e

import (
	"context"
	"fmt"
	"net/http"
	neturl "net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/objectcache"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestConnectorCacheFollowsAConnector: a node's cache of one Connector, against the API
// server. A Connector missing at the first read is seen once created, and a change of it; a
// watch the API server ends with 410 Gone (a resource version it no longer keeps) is followed
// by a new list, which finds the deletion made while nothing watched and tells OnDelete; the
// watch after that list sees the Connector created again.
func TestConnectorCacheFollowsAConnector(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	gone := &goneOnce{WithWatch: watchingClient(t), held: make(chan struct{})}
	cache := objectcache.NewConnectors(gone, time.Minute, 10, 0)
	deleted := make(chan types.NamespacedName, 4)
	cache.OnDelete = func(nn types.NamespacedName) { deleted <- nn }
	nn := types.NamespacedName{Namespace: ns, Name: "later"}
	address := addressOf(ctx, cache.Get, nn)

	if _, err := cache.Get(ctx, nn); !apierrors.IsNotFound(err) {
		t.Fatalf("a Connector that does not exist: %v, want NotFound", err)
	}
	newConnector(t, ns, "later", git, "https://a.example.com")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return address() == "https://a.example.com" }) {
		t.Fatalf("the created Connector was never seen: %s", address())
	}
	patchAddress(t, nn, "https://b.example.com")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return address() == "https://b.example.com" }) {
		t.Fatalf("the changed Connector was never seen: %s", address())
	}
	if c, _ := cache.Get(ctx, nn); len(c.ManagedFields) != 0 {
		t.Errorf("the cache keeps managedFields: %v", c.ManagedFields)
	}

	// The watch ends; the next one shows nothing while the Connector is deleted, then ends
	// with 410 Gone.
	gone.endWatchThenGone()
	if err := cp.Client.Delete(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "later"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-deleted:
		t.Fatal("the deletion reached the cache by a watch that had ended")
	default:
	}
	lists := gone.lists.Load()
	close(gone.held)
	select {
	case got := <-deleted:
		if got != nn {
			t.Fatalf("OnDelete told of %s, want %s", got, nn)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the deletion made while the watch was gone was never told to OnDelete")
	}
	if gone.lists.Load() == lists {
		t.Error("OnDelete was told of the deletion without a new list")
	}
	if _, err := cache.Get(ctx, nn); !apierrors.IsNotFound(err) {
		t.Fatalf("after the list found it deleted: %v, want NotFound", err)
	}
	newConnector(t, ns, "later", git, "https://c.example.com")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return address() == "https://c.example.com" }) {
		t.Fatalf("the Connector created again was never seen: %s", address())
	}
}

// TestConnectorCacheGoroutinesPerConnector: each watched Connector costs a few goroutines
// (the cache's loop, client-go's RetryWatcher, the watch stream's decoder and its HTTP/2
// request: a node with 200 volumes holds 200 such watches), and dropping the watches ends
// them all.
func TestConnectorCacheGoroutinesPerConnector(t *testing.T) {
	const connectors, perWatch = 50, 4
	ns := newNamespace(t)
	git := gitClass(t)
	for i := range connectors {
		newConnector(t, ns, fmt.Sprintf("c%02d", i), git, "https://example.com")
	}
	cache := objectcache.NewConnectors(watchingClient(t), time.Minute, connectors, 0)
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { cache.Run(ctx); close(ran) }()
	// One Connector first: the client's HTTP/2 connection and its goroutines exist before the count.
	if _, err := cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: "c00"}); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for i := 1; i < connectors; i++ {
		if _, err := cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("c%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Some watches may still be starting their streams: count when the count settles.
	var grown int
	kubelet.WaitUntil(5*time.Second, func() bool {
		grown = runtime.NumGoroutine() - before
		return grown >= (connectors-1)*perWatch
	})
	t.Logf("%d more watched Connectors: %d more goroutines", connectors-1, grown)
	if limit := (connectors-1)*perWatch + 10; grown > limit {
		t.Errorf("%d more watched Connectors started %d goroutines, want at most %d (%d each)", connectors-1, grown, limit, perWatch)
	}
	stop()
	<-ran
	if !kubelet.WaitUntil(10*time.Second, func() bool { return runtime.NumGoroutine() < before }) {
		t.Errorf("%d goroutines after every watch was dropped, %d with one watch", runtime.NumGoroutine(), before)
	}
}

// watchingClient is a client of the test API server that can watch, with a connection of its own.
func watchingClient(t testing.TB) client.WithWatch {
	c, err := client.NewWithWatch(cp.Config, client.Options{Scheme: cp.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func patchAddress(t *testing.T, nn types.NamespacedName, address string) {
	t.Helper()
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"address":"`+address+`"}}`))
	if err := cp.Client.Patch(context.Background(), &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: nn.Namespace, Name: nn.Name}}, patch); err != nil {
		t.Fatal(err)
	}
}

// goneOnce is the API server's client, counting lists, except that endWatchThenGone ends the
// watch open and has the next one show nothing until held is closed, then end with 410 Gone,
// as the API server ends a watch from a resource version it no longer keeps.
type goneOnce struct {
	client.WithWatch
	held  chan struct{}
	lists atomic.Int32

	mu      sync.Mutex
	armed   bool
	current watch.Interface
}

func (g *goneOnce) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	g.lists.Add(1)
	return g.WithWatch.List(ctx, list, opts...)
}

func (g *goneOnce) Watch(ctx context.Context, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.armed {
		w, err := g.WithWatch.Watch(ctx, list, opts...)
		g.current = w
		return w, err
	}
	g.armed = false
	events := make(chan watch.Event)
	w := watch.NewProxyWatcher(events)
	go func() {
		defer close(events)
		select {
		case <-g.held:
		case <-w.StopChan():
			return
		}
		status := apierrors.NewResourceExpired("too old resource version").Status()
		status.Code = http.StatusGone
		select {
		case events <- watch.Event{Type: watch.Error, Object: &status}:
		case <-w.StopChan():
		}
	}()
	return w, nil
}

func (g *goneOnce) endWatchThenGone() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.current.Stop()
}

// BenchmarkConnectorCacheFirstRead: the first read of a Connector a node does not watch yet
// (the first publish of a volume that names it): a list, and the watch started behind it.
func BenchmarkConnectorCacheFirstRead(b *testing.B) {
	ns := newNamespace(b)
	git := gitClass(b)
	for i := range b.N {
		newConnector(b, ns, fmt.Sprintf("c%d", i), git, "https://example.com")
	}
	cache := objectcache.NewConnectors(watchingClient(b), time.Minute, b.N+1, 0)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go cache.Run(ctx)
	b.ResetTimer()
	for i := range b.N {
		if _, err := cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("c%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConnectorLookupsWatchOnlyWhatExists: the proxy and the Connectors API look Connectors up
// by whatever names their callers make up. A name not watched yet costs one list (concurrent
// lookups of it share it); a Connector that exists is watched from that list, and its changes
// seen; one that does not is remembered missing, and never watched (a watch per made-up name
// would cost every node a list and a watch each, and push out its volumes' Connectors).
func TestConnectorLookupsWatchOnlyWhatExists(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	newConnector(t, ns, "real", gitClass(t), "https://a.example.com")
	counted := &countingClient{WithWatch: watchingClient(t)}
	cache := objectcache.NewConnectors(counted, time.Minute, 10, time.Hour)
	var wg sync.WaitGroup
	for i := range 30 {
		for range 3 { // at once: one list
			wg.Go(func() {
				if _, err := cache.Lookup(ctx, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("made-up-%d", i)}); !apierrors.IsNotFound(err) {
					t.Errorf("a made-up name: %v, want NotFound", err)
				}
			})
		}
		wg.Wait()
	}
	// The last one again (the cache remembers as many missing names as it watches, 10).
	if _, err := cache.Lookup(ctx, types.NamespacedName{Namespace: ns, Name: "made-up-29"}); !apierrors.IsNotFound(err) {
		t.Fatalf("a made-up name again: %v, want NotFound", err)
	}
	if lists, watches := counted.lists.Load(), counted.watches.Load(); lists != 30 || watches != 0 {
		t.Fatalf("30 made-up names looked up 91 times: %d lists and %d watches, want 30 and none", lists, watches)
	}
	real := types.NamespacedName{Namespace: ns, Name: "real"}
	address := addressOf(ctx, cache.Lookup, real)
	if got := address(); got != "https://a.example.com" {
		t.Fatalf("an existing Connector: %s", got)
	}
	patchAddress(t, real, "https://b.example.com")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return address() == "https://b.example.com" }) {
		t.Fatalf("the change of a looked-up Connector was never seen: %s", address())
	}
	if lists, watches := counted.lists.Load(), counted.watches.Load(); lists != 31 || watches != 1 {
		t.Errorf("an existing Connector looked up and changed: %d lists and %d watches in all, want 31 and 1 (watched from its lookup's list)", lists, watches)
	}
}

// addressOf reads the address of Connector nn with read, or the error it gives.
func addressOf(ctx context.Context, read func(context.Context, types.NamespacedName) (*v1alpha1.Connector, error), nn types.NamespacedName) func() string {
	return func() string {
		c, err := read(ctx, nn)
		if err != nil {
			return err.Error()
		}
		return c.Spec.Address
	}
}

// countingClient counts the lists and watches of Connectors made through it.
type countingClient struct {
	client.WithWatch
	lists, watches atomic.Int64
}

func (c *countingClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	c.lists.Add(1)
	return c.WithWatch.List(ctx, list, opts...)
}

func (c *countingClient) Watch(ctx context.Context, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
	c.watches.Add(1)
	return c.WithWatch.Watch(ctx, list, opts...)
}

// TestConnectorLookupsDoNotPushOutVolumes: the proxy looks up the names anyone on the node
// sends it (every Connector they may get); those watches take at most half the cache, and
// never a volume's place: a volume's Connector stays watched, and is not listed and watched
// again at its next republish.
func TestConnectorLookupsDoNotPushOutVolumes(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	for i := range 8 {
		newConnector(t, ns, fmt.Sprintf("c-%d", i), gitClass(t), "https://a.example.com")
	}
	counted := &countingClient{WithWatch: watchingClient(t)}
	cache := objectcache.NewConnectors(counted, time.Minute, 4, time.Hour)
	stopped, stop := context.WithCancel(ctx)
	stop()
	t.Cleanup(func() { cache.Run(stopped) }) // its watches stopped
	nn := func(i int) types.NamespacedName {
		return types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("c-%d", i)}
	}
	for i := range 2 { // two volumes'
		if _, err := cache.Get(ctx, nn(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 2; i < 8; i++ { // six lookups'
		if _, err := cache.Lookup(ctx, nn(i)); err != nil {
			t.Fatal(err)
		}
	}
	lists, watches := counted.lists.Load(), counted.watches.Load()
	for i := range 2 { // the volumes' republish
		if _, err := cache.Get(ctx, nn(i)); err != nil {
			t.Fatal(err)
		}
	}
	if l, w := counted.lists.Load()-lists, counted.watches.Load()-watches; l != 0 || w != 0 {
		t.Errorf("six lookups pushed the volumes' Connectors out: their republish listed %d and watched %d, want none", l, w)
	}
}

// TestConnectorLookupsPastANamespacesShareAreListed: the proxy's lookups of one namespace's
// Connectors hold at most --connector-lookup-watches-per-namespace watches (1 here, the
// volume's Connector not counted); another is listed, not watched, kept the TTL, and then
// listed again from the watch cache (resourceVersion 0: not a version the cache of a kind
// with no change since has not seen, which it waits for and answers 504, retried by the client
// for seconds; that happened here first). The node as deployed, its requests to the API server
// from the audit log.
func TestConnectorLookupsPastANamespacesShareAreListed(t *testing.T) {
	tool := startRecorder(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	const ttl = time.Second
	env, _ := startDeployedNode(t, func(o *driver.Options) { o.LookupsPerNamespace, o.APIConnectorTTL = 1, ttl })
	ns, class, files := basicTool(t, env, tool.URL, "lookup-secret")
	for _, name := range []string{"first", "second"} {
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: tool.URL, Auth: &v1alpha1.ConnectorAuth{SecretRef: &v1alpha1.SecretRef{Name: "cred"}}}})
	}
	allowConnectorsAs(t, ns, "builder", "use-more", "first", "second")
	get := func(name string) {
		t.Helper()
		url := env.proxyURL + "/namespaces/" + ns + "/connectors/" + name + "/x"
		if code, body := do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + files["context.token"]})); code != http.StatusOK {
			t.Fatalf("GET through %s: %d %q", name, code, body)
		}
	}
	// asked lists the node's requests for Connector name since a time: verb, and the resource
	// version a list asked for.
	asked := func(name string, since time.Time) []string {
		t.Helper()
		var out []string
		for _, ev := range nodeConnectorRequests(t, ns, since) {
			u, err := neturl.Parse(ev.RequestURI)
			if err != nil || u.Query().Get("fieldSelector") != "metadata.name="+name {
				continue
			}
			out = append(out, ev.Verb+" "+u.Query().Get("resourceVersion"))
		}
		return out
	}
	since := time.Now()
	get("first")
	get("second")
	get("second")
	if got := asked("first", since); !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "watch ") }) {
		t.Errorf("the namespace's first Connector looked up: %q, want it watched", got)
	}
	if got := asked("second", since); len(got) != 1 || got[0] != "list " {
		t.Errorf("the second, past the namespace's share, looked up twice: %q, want one consistent list and no watch", got)
	}
	time.Sleep(ttl + 500*time.Millisecond)
	again := time.Now()
	get("second")
	if got := asked("second", again); len(got) != 1 || got[0] != "list 0" {
		t.Errorf("the second looked up past the TTL: %q, want one list of the watch cache's (resourceVersion 0)", got)
	}
}
