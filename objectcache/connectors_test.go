package objectcache

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// fakeConnectors is a fake client holding n Connectors c-0 … c-<n-1> of namespace ns.
func fakeConnectors(t *testing.T, n int) client.WithWatch {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(testScheme(t))
	for i := range n {
		b = b.WithObjects(&v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("c-%d", i)}})
	}
	return b.Build()
}

// testScheme is a scheme of this API's kinds.
func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return scheme
}

func nameOf(i int) types.NamespacedName {
	return types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("c-%d", i)}
}

// watchedNames reports which Connectors c watches, and whether a volume read each.
func watchedNames(c *Connectors) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for nn, w := range c.watched {
		out[nn.Name] = w.volume
	}
	return out
}

// TestMakeRoomKeepsVolumesWatches: lookups hold at most half the cache and give way to volumes;
// volumes push out only volumes, the least recently read first.
func TestMakeRoomKeepsVolumesWatches(t *testing.T) {
	ctx := context.Background()
	c := NewConnectors(fakeConnectors(t, 10), time.Hour, 4, 0)
	var dropped []string
	c.OnDrop = func(nn types.NamespacedName) { dropped = append(dropped, nn.Name) }
	t.Cleanup(func() { c.Run(cancelled()) }) // its watches stopped, also after a failure
	now := time.Unix(1_000, 0)
	c.now = func() time.Time { now = now.Add(time.Second); return now }
	for _, i := range []int{0, 1} {
		if _, err := c.Get(ctx, nameOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 2; i < 8; i++ {
		if _, err := c.Lookup(ctx, nameOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := watchedNames(c), map[string]bool{"c-0": true, "c-1": true, "c-6": false, "c-7": false}; !maps.Equal(got, want) {
		t.Fatalf("after 2 volumes and 6 lookups: %v, want %v", got, want)
	}
	// Volumes take the lookups' places, then each other's.
	for _, i := range []int{8, 9, 2} {
		if _, err := c.Get(ctx, nameOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := watchedNames(c), map[string]bool{"c-1": true, "c-8": true, "c-9": true, "c-2": true}; !maps.Equal(got, want) {
		t.Fatalf("after 3 more volumes: %v, want %v", got, want)
	}
	// Each pushed out is told (the proxy drops its metric series).
	if want := []string{"c-2", "c-3", "c-4", "c-5", "c-6", "c-7", "c-0"}; !slices.Equal(dropped, want) {
		t.Errorf("told of dropped Connectors %v, want %v", dropped, want)
	}
	// A lookup finds no room it may take from volumes: it is served from its list, unwatched.
	got, err := c.Lookup(ctx, nameOf(3))
	if err != nil || got.Name != "c-3" {
		t.Fatalf("a lookup in a cache of volumes: %v %v", got, err)
	}
	if got, want := watchedNames(c), map[string]bool{"c-1": true, "c-8": true, "c-9": true, "c-2": true}; !maps.Equal(got, want) {
		t.Fatalf("after a lookup in a cache of volumes: %v, want %v", got, want)
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestLookupsWaitBoundedForAWatchsFirstList: a Connector a volume's publish started watching,
// whose list the API server keeps refusing, is not waited for to the end of a proxy's or the
// API's request: the lookup fails after lookupSyncWait.
func TestLookupsWaitBoundedForAWatchsFirstList(t *testing.T) {
	defer func(was time.Duration) { lookupSyncWait = was }(lookupSyncWait)
	lookupSyncWait = 100 * time.Millisecond
	refusing := interceptor.NewClient(fakeConnectors(t, 1), interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return apierrors.NewForbidden(v1alpha1.GroupVersion.WithResource(v1alpha1.ResourceConnectors).GroupResource(), "", nil)
		}})
	c := NewConnectors(refusing, time.Hour, 4, 0)
	t.Cleanup(func() { c.Run(cancelled()) })
	volume, cancel := context.WithCancel(context.Background())
	cancel() // the publish gives up; the watch stays, listing again
	if _, err := c.Get(volume, nameOf(0)); err == nil {
		t.Fatal("a Connector whose list is refused was read")
	}
	done := make(chan error, 2)
	go func() { _, err := c.Lookup(context.Background(), nameOf(0)); done <- err }()
	go func() { _, err := c.ReadWith(context.Background(), nameOf(0), refusing); done <- err }()
	for range 2 {
		select {
		case err := <-done:
			if err == nil {
				t.Error("a Connector whose list is refused was read")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a lookup waited for a watch that never lists")
		}
	}
}

// TestANodeKeepsABoundedStatus: a Connector's status over 16 KiB (written by whoever may write
// connectors/status, which the size bound leaves aside) is kept without its conditions and
// annotations, the addresses templates read kept; still over, without any.
func TestANodeKeepsABoundedStatus(t *testing.T) {
	proxy := &v1alpha1.ProxyStatus{}
	many := make([]metav1.Condition, 2000)
	for i := range many {
		many[i] = metav1.Condition{Type: fmt.Sprintf("Padding%d", i), Status: metav1.ConditionTrue, Reason: "Padding", Message: "x"}
	}
	small := v1alpha1.ConnectorStatus{Proxy: proxy, Conditions: many[:3]}
	padded := v1alpha1.ConnectorStatus{Proxy: proxy, Conditions: many}
	// Still over without its conditions: an address of 32 KiB.
	huge := v1alpha1.ConnectorStatus{Conditions: many, API: &v1alpha1.ConnectorAPIStatus{Path: strings.Repeat("x", 32<<10)}}
	for name, tc := range map[string]struct {
		status     v1alpha1.ConnectorStatus
		conditions int
		proxyKept  bool
	}{
		"small":  {small, 3, true},
		"padded": {padded, 0, true},
		"huge":   {huge, 0, false},
	} {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Status: tc.status}
		h := kept(c)
		if h.obj == nil {
			t.Fatalf("%s: not kept", name)
		}
		if got := h.obj.Status; len(got.Conditions) != tc.conditions || (got.Proxy != nil) != tc.proxyKept || got.API != nil && name == "huge" ||
			statusBytes(&got) > maxStatusBytes {
			t.Errorf("%s: kept %d conditions, proxy %v, %d bytes; want %d conditions, proxy %v, at most %d bytes", name,
				len(got.Conditions), got.Proxy != nil, statusBytes(&got), tc.conditions, tc.proxyKept, maxStatusBytes)
		}
	}
}

// TestConnectorLookupsOfANamespaceAreBounded: a namespace's Pods make the node watch at most
// LookupsPerNamespace of its Connectors through the proxy's lookups, without pushing out
// another namespace's; a lookup of another is served from its list, kept ReadTTL (listed once),
// and a volume still watches any.
func TestConnectorLookupsOfANamespaceAreBounded(t *testing.T) {
	ctx := context.Background()
	b := fake.NewClientBuilder().WithScheme(testScheme(t))
	for _, ns := range []string{"tenant", "other"} {
		for i := range 6 {
			b = b.WithObjects(&v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("c-%d", i)}})
		}
	}
	lists := 0
	var versions []string
	counted := interceptor.NewClient(b.Build(), interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			lists++
			o := &client.ListOptions{}
			o.ApplyOptions(opts)
			versions = append(versions, o.Raw.ResourceVersion+"/"+string(o.Raw.ResourceVersionMatch))
			return c.List(ctx, list, opts...)
		}})
	c := NewConnectors(counted, time.Hour, 100, 0)
	c.LookupsPerNamespace, c.ReadTTL = 2, time.Hour
	now := time.Unix(1_000, 0)
	c.now = func() time.Time { return now }
	t.Cleanup(func() { c.Run(cancelled()) })
	at := func(ns string, i int) types.NamespacedName {
		return types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("c-%d", i)}
	}
	lookup := func(nn types.NamespacedName) {
		t.Helper()
		if got, err := c.Lookup(ctx, nn); err != nil || got.Name != nn.Name || got.Namespace != nn.Namespace {
			t.Fatalf("lookup of %s: %v %v", nn, got, err)
		}
	}
	watchedOf := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		var out []string
		for nn := range c.watched {
			out = append(out, nn.String())
		}
		slices.Sort(out)
		return out
	}
	for i := range 6 {
		lookup(at("tenant", i))
	}
	for i := range 2 {
		lookup(at("other", i))
	}
	if got, want := watchedOf(), []string{"other/c-0", "other/c-1", "tenant/c-0", "tenant/c-1"}; !slices.Equal(got, want) {
		t.Fatalf("watched after six lookups of one namespace and two of another: %v, want %v", got, want)
	}
	before := lists
	for i := range 6 {
		lookup(at("tenant", i))
	}
	if n := lists - before; n != 0 {
		t.Errorf("looking the namespace's Connectors up again listed %d times, want none (watched, or kept as listed)", n)
	}
	// Past ReadTTL, an unwatched one is listed again from the API server's watch cache
	// (resourceVersion 0: no read of etcd, no wait for a version the cache has not seen).
	now = now.Add(time.Hour + time.Second)
	versions = nil
	lookup(at("tenant", 2))
	if len(versions) != 1 || versions[0] != "0/" {
		t.Errorf("a list again past ReadTTL asked for %q, want one of any version (0)", versions)
	}
	// A new volume's lookup watches what its Pod uses, whatever the namespace's lookups hold.
	if _, err := c.LookupWith(ctx, at("tenant", 4), counted, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, at("tenant", 5)); err != nil {
		t.Fatal(err)
	}
	if got := watchedOf(); !slices.Contains(got, "tenant/c-4") || !slices.Contains(got, "tenant/c-5") || len(got) != 6 {
		t.Errorf("watched after a volume's lookup of tenant/c-4 and a volume's read of tenant/c-5: %v, want both watched too", got)
	}
}
