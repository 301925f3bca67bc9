// Package features reads the feature flags of the connectors-config ConfigMap (SPEC §7) live,
// so that a change takes effect without a restart.
package features

import (
	"context"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/configwatch"
)

// ConfigMapName is the name of the flags ConfigMap in the system namespace.
const ConfigMapName = "connectors-config"

// Flag keys of the ConfigMap.
const (
	keyProxyPermissions     = "enable-connector-proxy-permissions"
	keyAPIsPermissions      = "enable-connector-apis-permissions"
	keyAPIsWritePassthrough = "enable-connector-apis-write-passthrough"
	keyApproval             = "enable-connectors-approval"
	KeyMultiConnector       = "enable-multi-connector"
	KeyCustomCACerts        = "enable-custom-ca-certs"
)

// ReasonInvalidFeatureFlag is the reason of the Event on the ConfigMap for a value that is not
// a boolean.
const ReasonInvalidFeatureFlag = "InvalidFeatureFlag"

// Flags are the feature flags. The zero value is every flag's default.
type Flags struct {
	ProxyPermissions     bool
	APIsPermissions      bool
	APIsWritePassthrough bool
	// Approval is effective only together with ProxyPermissions.
	Approval       bool
	MultiConnector bool
	// CustomCACerts adds the global CA bundle (labelled Secrets of the system namespace) to
	// every Connector's trust, and the CACertReady condition to every Connector's status.
	CustomCACerts bool
}

// ApprovalEffective reports whether the approval flow is on.
func (f Flags) ApprovalEffective() bool { return f.Approval && f.ProxyPermissions }

// flags are the ConfigMap's keys, each with its field and default.
var flags = []struct {
	key   string
	field func(*Flags) *bool
	def   bool
}{
	{keyProxyPermissions, func(f *Flags) *bool { return &f.ProxyPermissions }, false},
	{keyAPIsPermissions, func(f *Flags) *bool { return &f.APIsPermissions }, false},
	{keyAPIsWritePassthrough, func(f *Flags) *bool { return &f.APIsWritePassthrough }, false},
	{keyApproval, func(f *Flags) *bool { return &f.Approval }, false},
	{KeyMultiConnector, func(f *Flags) *bool { return &f.MultiConnector }, false},
	{KeyCustomCACerts, func(f *Flags) *bool { return &f.CustomCACerts }, false},
}

// Values are the flags by ConfigMap key, as the ConfigMap writes them ("true" or "false"): the
// body of GET /connectors-operator/featureflags.
func (f Flags) Values() map[string]string {
	out := make(map[string]string, len(flags))
	for _, fl := range flags {
		out[fl.key] = strconv.FormatBool(*fl.field(&f))
	}
	return out
}

// Invalid is a flag whose value is not a boolean.
type Invalid struct{ Key, Value string }

// Parse reads flags from ConfigMap data, key by key: a missing key takes its default, and an
// unparsable one keeps its value in last (the flags in force) and is returned as Invalid. A
// typo must not switch a permission check off.
func Parse(data map[string]string, last Flags) (Flags, []Invalid) {
	out := last
	var invalid []Invalid
	for _, f := range flags {
		raw, set := data[f.key]
		if !set {
			*f.field(&out) = f.def
			continue
		}
		v, err := strconv.ParseBool(raw)
		if err != nil {
			invalid = append(invalid, Invalid{Key: f.key, Value: raw})
			continue
		}
		*f.field(&out) = v
	}
	return out, invalid
}

// defaults are the flags without a ConfigMap, parsed once: Flags is on every request's path.
var defaults, _ = Parse(nil, Flags{})

// invalidGauge is connectors_feature_flag_invalid{flag}: 1 while a flag's value is not a
// boolean. Registered once per process (tests run several drivers in one).
var invalidGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "connectors_feature_flag_invalid",
	Help: "1 while the flag's value in connectors-config is not a boolean (its last valid value stays in force), else 0.",
}, []string{"flag"})

func init() { prometheus.MustRegister(invalidGauge) }

// Source holds the current flags.
type Source struct {
	flags atomic.Pointer[Flags]
	// events reports invalid values on the ConfigMap; nil where another process does.
	events record.EventRecorder
}

// Static returns a Source with fixed flags, for tests and tools.
func Static(f Flags) *Source {
	s := &Source{}
	s.flags.Store(&f)
	return s
}

// Flags returns the current flags; a nil Source has the defaults.
func (s *Source) Flags() Flags {
	if s == nil {
		return defaults
	}
	if f := s.flags.Load(); f != nil {
		return *f
	}
	return defaults
}

// Watch keeps a Source current from the ConfigMap as cms sees it (register before cms
// starts). Invalid values are logged and counted in connectors_feature_flag_invalid, and,
// with recordEvents, recorded as Events on the ConfigMap: one process of the cluster (the
// controller) records them, not every node. Deleting the ConfigMap returns every flag to its
// default.
func Watch(ctx context.Context, cms *configwatch.Watcher, kube kubernetes.Interface, recordEvents bool) *Source {
	s := &Source{}
	if recordEvents {
		broadcaster := record.NewBroadcaster(record.WithContext(ctx))
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
		context.AfterFunc(ctx, broadcaster.Shutdown)
		s.events = broadcaster.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: "connectors-csi"})
	}
	log := klog.FromContext(ctx)
	cms.Handle(ConfigMapName, func(cm *corev1.ConfigMap) {
		if cm != nil {
			s.update(log, cm)
			return
		}
		f := defaults
		s.flags.Store(&f)
		clearInvalid()
		log.Info("The feature flags ConfigMap was deleted; every flag is back to its default", "flags", f)
	})
	return s
}

// update applies the ConfigMap's flags over the current ones and reports invalid values.
func (s *Source) update(log klog.Logger, cm *corev1.ConfigMap) {
	f, invalid := Parse(cm.Data, s.Flags())
	s.flags.Store(&f)
	log.Info("Feature flags", "flags", f)
	clearInvalid()
	for _, bad := range invalid {
		invalidGauge.WithLabelValues(bad.Key).Set(1)
		log.Error(nil, "A feature flag is not a boolean; its last valid value stays in force", "flag", bad.Key, "value", bad.Value)
		if s.events != nil {
			s.events.Eventf(cm, corev1.EventTypeWarning, ReasonInvalidFeatureFlag,
				"%s is %q, not a boolean (true or false); its last valid value stays in force", bad.Key, bad.Value)
		}
	}
}

func clearInvalid() {
	for _, f := range flags {
		invalidGauge.WithLabelValues(f.key).Set(0)
	}
}
