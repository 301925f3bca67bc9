// Package configwatch keeps one named ConfigMap of the system namespace in view: one informer
// on that single object (a field selector on its name), so that a change takes effect without
// a restart and nothing else of the namespace is listed. The feature flags and the global CA
// bundle are each read this way.
package configwatch

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watch calls changed with the ConfigMap namespace/name each time it is created or changes, and
// with nil when it is deleted, until ctx is done. Resyncs are not changes. Watch returns once
// the first list is in (changed has then been called if the ConfigMap exists).
func Watch(ctx context.Context, kube kubernetes.Interface, namespace, name string, changed func(*corev1.ConfigMap)) {
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 10*time.Minute,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := factory.Core().V1().ConfigMaps().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				changed(cm)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.ConfigMap)
			n, ok2 := obj.(*corev1.ConfigMap)
			if ok1 && ok2 && o.ResourceVersion != n.ResourceVersion {
				changed(n)
			}
		},
		DeleteFunc: func(any) { changed(nil) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
}
