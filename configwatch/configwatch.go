// Package configwatch keeps the system namespace's ConfigMaps that the driver reads live (the
// feature flags, the global CA bundle) in view on one watch stream: one informer on the
// namespace's ConfigMaps, whose few objects (these, the role and check templates,
// kube-root-ca.crt) cost less than a stream per name on every node.
package configwatch

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watcher hands each watched ConfigMap's changes to its handlers.
type Watcher struct {
	factory  informers.SharedInformerFactory
	handlers map[string][]func(*corev1.ConfigMap)
}

// New returns a Watcher of namespace's ConfigMaps; register handlers with Handle, then Start.
func New(kube kubernetes.Interface, namespace string) *Watcher {
	return &Watcher{
		factory:  informers.NewSharedInformerFactoryWithOptions(kube, 10*time.Minute, informers.WithNamespace(namespace)),
		handlers: map[string][]func(*corev1.ConfigMap){},
	}
}

// Handle calls changed with the ConfigMap name each time it is created or changes, and with
// nil when it is deleted. Resyncs are not changes. Call it before Start.
func (w *Watcher) Handle(name string, changed func(*corev1.ConfigMap)) {
	w.handlers[name] = append(w.handlers[name], changed)
}

// Start watches until ctx is done and returns once the first list is in (the handlers of the
// ConfigMaps that exist have then been called).
func (w *Watcher) Start(ctx context.Context) {
	dispatch := func(obj any, deleted bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		for _, h := range w.handlers[cm.Name] {
			if deleted {
				h(nil)
			} else {
				h(cm)
			}
		}
	}
	_, _ = w.factory.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { dispatch(obj, false) },
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.ConfigMap)
			n, ok2 := obj.(*corev1.ConfigMap)
			if ok1 && ok2 && o.ResourceVersion != n.ResourceVersion {
				dispatch(n, false)
			}
		},
		DeleteFunc: func(obj any) { dispatch(obj, true) },
	})
	w.factory.Start(ctx.Done())
	w.factory.WaitForCacheSync(ctx.Done())
}
