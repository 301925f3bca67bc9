package approval

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// watchCounter counts the watches a controller is asked to start.
type watchCounter struct {
	controller.Controller
	started int
}

func (w *watchCounter) Watch(source.TypedSource[reconcile.Request]) error { w.started++; return nil }

// unservedKinds is a cache whose every kind is one the API server does not serve; it counts
// the informers asked of it (each a RESTMapper lookup, which fetches discovery again for an
// unknown group).
type unservedKinds struct {
	cache.Cache
	asked int
}

func (u *unservedKinds) GetInformer(_ context.Context, obj client.Object, _ ...cache.InformerGetOption) (cache.Informer, error) {
	u.asked++
	gvk := obj.GetObjectKind().GroupVersionKind()
	return nil, &meta.NoKindMatchError{GroupKind: gvk.GroupKind(), SearchedVersions: []string{gvk.Version}}
}

// countingMapper counts the kinds looked up (for a group it does not know, controller-runtime's
// mapper fetches the API server's discovery again).
type countingMapper struct {
	meta.RESTMapper
	lookups atomic.Int32
}

func (m *countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m.lookups.Add(1)
	return m.RESTMapper.RESTMapping(gk, versions...)
}

// servedKinds is a client whose mapper knows the kinds (and no other), and which allows the
// controller's reviews.
func servedKinds(mapper *countingMapper, kinds ...schema.GroupVersionKind) client.Client {
	known := meta.NewDefaultRESTMapper(nil)
	for _, gvk := range kinds {
		known.Add(gvk, meta.RESTScopeNamespace)
	}
	mapper.RESTMapper = known
	return fake.NewClientBuilder().WithRESTMapper(mapper).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if review, ok := obj.(*authorizationv1.SelfSubjectAccessReview); ok {
				review.Status.Allowed = true
				return nil
			}
			return c.Create(ctx, obj, opts...)
		}}).Build()
}

// TestAnUnservedCheckKindStartsNoWatch: a check of a kind the API server does not serve fails
// at every evaluation without starting a watch (each would be a goroutine for the life of the
// process, asking for an informer that never comes) and without asking for its informer; it is
// looked up once a minute, not at each evaluation.
func TestAnUnservedCheckKindStartsNoWatch(t *testing.T) {
	counter, informers, mapper := &watchCounter{}, &unservedKinds{}, &countingMapper{}
	c := &Controller{Cache: informers, ctrl: counter, unserved: utilcache.NewLRUExpireCache(maxUnservedKinds),
		kinds: newKindChecker(servedKinds(mapper))}
	gvk := schema.GroupVersionKind{Group: "nothing.example", Version: "v1", Kind: "Nothing"}
	for range 10 {
		if err := c.watchKind(context.Background(), gvk, "team"); !meta.IsNoMatchError(err) {
			t.Fatalf("watchKind: %v, want the kind's no-match error", err)
		}
	}
	if counter.started != 0 || informers.asked != 0 || mapper.lookups.Load() != 1 {
		t.Errorf("10 evaluations started %d watches, asked for the kind's informer %d times and looked it up %d times, want none, none and once",
			counter.started, informers.asked, mapper.lookups.Load())
	}
}

// TestCheckKindsAreLookedUpAtTheirPace: a tenant's policies may name hundreds of kinds nobody
// serves, each checked at every reconcile; past a burst, a namespace's kinds are looked up at
// kindLookupsPerNamespace, all namespaces' at kindLookupsPerSecond, the others deferred (not an
// answer, asked again later), and each answer, a no-match too, is kept.
func TestCheckKindsAreLookedUpAtTheirPace(t *testing.T) {
	mapper := &countingMapper{}
	served := schema.GroupVersionKind{Group: "tekton.dev", Version: "v1", Kind: "PipelineRun"}
	k := newKindChecker(servedKinds(mapper, served))
	kind := func(i int) schema.GroupVersionKind {
		return schema.GroupVersionKind{Group: fmt.Sprintf("g%d.example", i), Version: "v1", Kind: "K"}
	}
	ask := func(namespace string, kinds ...int) (deferred int) {
		t.Helper()
		for _, i := range kinds {
			switch err := k.check(context.Background(), kind(i), namespace); {
			case errors.Is(err, errLookupDeferred):
				deferred++
			case !meta.IsNoMatchError(err):
				t.Fatalf("kind %d: %v, want no match or deferred", i, err)
			}
		}
		return deferred
	}
	var tenants []int
	for i := range 300 {
		tenants = append(tenants, i)
	}
	if deferred := ask("busy", tenants...); mapper.lookups.Load() > kindLookupNamespaceBurst+1 || int(mapper.lookups.Load())+deferred != 300 {
		t.Errorf("300 kinds of one namespace at once: %d looked up, %d deferred; want at most the namespace's burst looked up, the rest deferred",
			mapper.lookups.Load(), deferred)
	}
	if ask("quiet", 1000) != 0 {
		t.Errorf("another namespace's kind was deferred after one namespace spent its turns")
	}
	for i := range 300 {
		ask(fmt.Sprintf("ns-%d", i), 2000+i)
	}
	if looked := int(mapper.lookups.Load()); looked > kindLookupBurst+kindLookupsPerSecond {
		t.Errorf("kinds of 302 namespaces at once: %d looked up, want at most the burst of all", looked)
	}
	before := mapper.lookups.Load()
	if ask("busy", 0, 1, 2, 3) != 0 || mapper.lookups.Load() != before { // kept answers: no lookup
		t.Errorf("kinds answered before were deferred or looked up again")
	}
}

// TestAKindNotLookedUpKeepsTheGrant: a check whose kind's watch this leader has not started,
// and whose lookup is deferred (other namespaces spent every turn), is retried and keeps the
// grant its request holds; failed, it would revoke a running Pod's access for the controller's
// reason, or another tenant's.
func TestAKindNotLookedUpKeepsTheGrant(t *testing.T) {
	approvalTask := schema.GroupVersionKind{Group: "openshift-pipelines.org", Version: "v1alpha1", Kind: "ApprovalTask"}
	states, err := NewStates(16, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Controller{Cache: &unservedKinds{}, ctrl: &watchCounter{}, unserved: utilcache.NewLRUExpireCache(maxUnservedKinds),
		kinds: newKindChecker(servedKinds(&countingMapper{}, approvalTask)), templates: NewTemplates(), States: states}
	for i := range 40 { // 40 namespaces, a kind each
		_ = c.watchKind(context.Background(), schema.GroupVersionKind{Group: fmt.Sprintf("g%d.example", i), Version: "v1", Kind: "K"}, fmt.Sprintf("ns-%d", i))
	}
	ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "victim", Name: "r"},
		Spec: v1alpha1.AccessRequestSpec{Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", Namespace: "victim", Name: "p", UID: "u"}}}}
	ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSynced}}
	if !holdsGrant(ar) {
		t.Fatal("the request does not hold a grant")
	}
	check := v1alpha1.Check{Name: "approval", Spec: &v1alpha1.CheckSpec{}}
	check.Spec.Selector.ObjectRef.APIVersion, check.Spec.Selector.ObjectRef.Kind = "openshift-pipelines.org/v1alpha1", "ApprovalTask"
	var reads []checkRead
	mc, outcome := c.evaluateCheck(context.Background(), ar, check, map[string]any{"object": map[string]any{}}, &reads)
	if outcome != outcomeRetry || !strings.Contains(mc.Message, "not looked up yet") {
		t.Errorf("a check whose kind was not looked up: %s %q, want %s saying it was not looked up", outcome, mc.Message, outcomeRetry)
	}
}

// slowInformers is a cache whose informers sync only when released: GetInformer waits, and
// gives up as controller-runtime's does (a Timeout) when its context ends first.
type slowInformers struct {
	cache.Cache
	asked   atomic.Int32
	waiting chan struct{} // a call is waiting
	release chan struct{} // the informers have synced
}

func (s *slowInformers) GetInformer(ctx context.Context, _ client.Object, _ ...cache.InformerGetOption) (cache.Informer, error) {
	s.asked.Add(1)
	s.waiting <- struct{}{}
	select {
	case <-s.release:
		return nil, nil
	case <-ctx.Done():
		return nil, apierrors.NewTimeoutError("failed waiting for *unstructured.Unstructured Informer to sync", 0)
	}
}

// joined is a context that says when it is first waited on: watchKind waits on its caller's
// context only after joining the start already under way.
type joined struct {
	context.Context
	once  sync.Once
	asked chan struct{}
}

func (j *joined) Done() <-chan struct{} {
	j.once.Do(func() { close(j.asked) })
	return j.Context.Done()
}

// TestAWatchStartIsWaitedForWithinEachBudget: the workers evaluating requests of a new check
// kind wait for the one starting its watch only as long as their own budget allows, and one
// whose budget outlasts the starter's starts the watch itself rather than take the starter's
// timeout for its own (a failed check revokes a running Pod's grant).
func TestAWatchStartIsWaitedForWithinEachBudget(t *testing.T) {
	gvk := schema.GroupVersionKind{Group: "tekton.dev", Version: "v1", Kind: "PipelineRun"}
	allowed := servedKinds(&countingMapper{}, gvk)
	newController := func(informers cache.Cache, counter *watchCounter) *Controller {
		return &Controller{Cache: informers, ctrl: counter, unserved: utilcache.NewLRUExpireCache(maxUnservedKinds), kinds: newKindChecker(allowed)}
	}
	result := func(c *Controller, ctx context.Context) <-chan error {
		out := make(chan error, 1)
		go func() { out <- c.watchKind(ctx, gvk, "team") }()
		return out
	}
	hang := func(t *testing.T, what string) {
		t.Helper()
		t.Fatalf("%s: watchKind did not return", what)
	}

	t.Run("a worker whose budget is spent stops waiting", func(t *testing.T) {
		informers := &slowInformers{waiting: make(chan struct{}, 2), release: make(chan struct{})}
		counter := &watchCounter{}
		c := newController(informers, counter)
		starter := result(c, context.Background())
		<-informers.waiting
		spent, cancel := context.WithCancel(context.Background())
		cancel()
		select {
		case err := <-result(c, spent):
			if !errors.Is(err, context.Canceled) {
				t.Errorf("the waiting worker got %v, want its own context's end", err)
			}
		case <-time.After(30 * time.Second):
			hang(t, "the waiting worker, its budget spent")
		}
		close(informers.release)
		if err := <-starter; err != nil || counter.started != 1 {
			t.Errorf("the starter: %v and %d watches, want the watch started once", err, counter.started)
		}
	})

	t.Run("a worker outlasting the starter starts the watch", func(t *testing.T) {
		informers := &slowInformers{waiting: make(chan struct{}, 2), release: make(chan struct{})}
		counter := &watchCounter{}
		c := newController(informers, counter)
		short, cancel := context.WithCancel(context.Background())
		starter := result(c, short)
		<-informers.waiting
		waiter := &joined{Context: context.Background(), asked: make(chan struct{})}
		waited := result(c, waiter)
		select {
		case <-waiter.asked:
		case <-time.After(30 * time.Second):
			hang(t, "the worker with time left never waited on its own context")
		}
		cancel()
		if err := <-starter; !interrupted(err) {
			t.Errorf("the starter got %v, want its own time run out", err)
		}
		select {
		case <-informers.waiting:
		case err := <-waited:
			t.Fatalf("the worker with time left got %v without starting the watch itself", err)
		}
		close(informers.release)
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("the worker with time left got %v, want the watch started", err)
			}
		case <-time.After(30 * time.Second):
			hang(t, "the worker with time left")
		}
		if n := informers.asked.Load(); n != 2 || counter.started != 1 {
			t.Errorf("informer asked %d times, %d watches started; want 2 and 1", n, counter.started)
		}
	})
}

// panickingInformers is a cache whose informers panic as they are asked for.
type panickingInformers struct{ cache.Cache }

func (panickingInformers) GetInformer(context.Context, client.Object, ...cache.InformerGetOption) (cache.Informer, error) {
	panic("an informer that cannot be made")
}

// TestAWatchStartThatPanicsIsAnError: a panic while a check kind's watch starts (which runs
// apart from the reconcile that asked, where controller-runtime would recover it) is that
// reconcile's error, not the controller's end.
func TestAWatchStartThatPanicsIsAnError(t *testing.T) {
	gvk := schema.GroupVersionKind{Group: "tekton.dev", Version: "v1", Kind: "PipelineRun"}
	c := &Controller{Cache: panickingInformers{}, ctrl: &watchCounter{}, unserved: utilcache.NewLRUExpireCache(maxUnservedKinds),
		kinds: newKindChecker(servedKinds(&countingMapper{}, gvk))}
	err := c.watchKind(context.Background(), gvk, "team")
	if err == nil || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("watchKind: %v, want the panic as an error", err)
	}
}
