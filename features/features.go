// Package features reads the feature flags of the connectors-config ConfigMap (SPEC §7) live:
// one informer on that single ConfigMap, so a change takes effect without a restart.
package features

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// ConfigMapName is the name of the flags ConfigMap in the system namespace.
const ConfigMapName = "connectors-config"

// Flag keys of the ConfigMap.
const (
	keyProxyPermissions     = "enable-connector-proxy-permissions"
	keyAPIsPermissions      = "enable-connector-apis-permissions"
	keyAPIsWritePassthrough = "enable-connector-apis-write-passthrough"
	keyApproval             = "enable-connectors-approval"
	keyMultiConnector       = "enable-multi-connector"
)

// Flags are the feature flags. The zero value is every flag's default.
type Flags struct {
	ProxyPermissions     bool
	APIsPermissions      bool
	APIsWritePassthrough bool
	// Approval is effective only together with ProxyPermissions.
	Approval       bool
	MultiConnector bool
}

// ApprovalEffective reports whether the approval flow is on.
func (f Flags) ApprovalEffective() bool { return f.Approval && f.ProxyPermissions }

// Parse reads flags from ConfigMap data; a missing or unparsable value keeps the default.
func Parse(data map[string]string) Flags {
	b := func(key string, def bool) bool {
		v, err := strconv.ParseBool(data[key])
		if err != nil {
			return def
		}
		return v
	}
	return Flags{
		ProxyPermissions:     b(keyProxyPermissions, false),
		APIsPermissions:      b(keyAPIsPermissions, false),
		APIsWritePassthrough: b(keyAPIsWritePassthrough, false),
		Approval:             b(keyApproval, false),
		MultiConnector:       b(keyMultiConnector, true),
	}
}

// Source holds the current flags.
type Source struct{ flags atomic.Pointer[Flags] }

// Static returns a Source with fixed flags, for tests and tools.
func Static(f Flags) *Source {
	s := &Source{}
	s.flags.Store(&f)
	return s
}

// defaults are the flags without a ConfigMap, parsed once: Flags is on every request's path.
var defaults = Parse(nil)

// Flags returns the current flags.
func (s *Source) Flags() Flags {
	if f := s.flags.Load(); f != nil {
		return *f
	}
	return defaults
}

// Watch keeps a Source current from the ConfigMap until ctx is done; it returns once the first
// list is in.
func Watch(ctx context.Context, kube kubernetes.Interface, namespace string) *Source {
	s := &Source{}
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 10*time.Minute,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
		}))
	inf := factory.Core().V1().ConfigMaps().Informer()
	set := func(obj any) {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			f := Parse(cm.Data)
			s.flags.Store(&f)
			klog.FromContext(ctx).Info("Feature flags", "flags", f)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(any) { f := defaults; s.flags.Store(&f) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return s
}
