package approval

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
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

// TestAnUnservedCheckKindStartsNoWatch: a check of a kind the API server does not serve fails
// at every evaluation without starting a watch (each would be a goroutine for the life of the
// process, asking for an informer that never comes), and asks for its informer once a minute,
// not at each evaluation.
func TestAnUnservedCheckKindStartsNoWatch(t *testing.T) {
	counter, informers := &watchCounter{}, &unservedKinds{}
	c := &Controller{Cache: informers, ctrl: counter, unserved: utilcache.NewLRUExpireCache(maxUnservedKinds),
		kinds: newKindChecker(fake.NewClientBuilder().WithRESTMapper(meta.NewDefaultRESTMapper(nil)).Build())}
	gvk := schema.GroupVersionKind{Group: "nothing.example", Version: "v1", Kind: "Nothing"}
	for range 10 {
		if err := c.watchKind(context.Background(), gvk); !meta.IsNoMatchError(err) {
			t.Fatalf("watchKind: %v, want the kind's no-match error", err)
		}
	}
	if counter.started != 0 || informers.asked != 1 {
		t.Errorf("10 evaluations started %d watches and asked for the kind's informer %d times, want none and once", counter.started, informers.asked)
	}
}
