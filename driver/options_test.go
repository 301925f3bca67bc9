package driver

import (
	"flag"
	"io"
	"math"
	"strings"
	"testing"
)

func TestWebhookListenIsHostPort(t *testing.T) {
	base := Options{Role: RoleController, VolumeSizeLimit: "4Mi", ApprovalWait: 1, RequestRetention: 1, StatusRecheck: 1,
		KubeAPIQPS: 1, KubeAPIBurst: 1, TokenAudience: "a"}
	for listen, want := range map[string]string{"": "", ":9443": "", "127.0.0.1:8443": "", "9443": "not host:port", ":0": "port must be", ":http": "port must be"} {
		o := base
		o.WebhookListen = listen
		v, err := o.validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("--webhook-listen %q: %v, want %q", listen, err, want)
		}
		if want == "" && listen != "" && (v.WebhookService != defaultWebhookService || v.WebhookConfiguration != defaultWebhookConfiguration || v.WebhookCARecheck != defaultWebhookCARecheck) {
			t.Errorf("--webhook-listen %q: unset webhook options not defaulted: %+v", listen, v.Options)
		}
	}
}

// TestProxyTimeoutFlags: the proxy's timeouts default when unset and are refused, by flag
// name, when negative.
func TestProxyTimeoutFlags(t *testing.T) {
	v := &validated{}
	if err := v.proxyLimits(); err != nil {
		t.Fatal(err)
	}
	if v.ProxyReadHeaderTimeout != defaultReadHeaderTimeout || v.ProxyIdleTimeout != defaultClientIdleTimeout ||
		v.ProxyUpstreamIdleTimeout != defaultUpstreamIdleTimeout || v.TunnelLifetime != defaultTunnelLifetime ||
		v.UpgradeRecheck != defaultUpgradeRecheck {
		t.Errorf("unset timeouts not defaulted: %+v", v.Options)
	}
	for flag, set := range map[string]func(*Options){
		"--proxy-read-header-timeout":      func(o *Options) { o.ProxyReadHeaderTimeout = -1 },
		"--proxy-idle-timeout":             func(o *Options) { o.ProxyIdleTimeout = -1 },
		"--proxy-upstream-idle-timeout":    func(o *Options) { o.ProxyUpstreamIdleTimeout = -1 },
		"--proxy-tunnel-max-lifetime":      func(o *Options) { o.TunnelLifetime = -1 },
		"--proxy-upgrade-recheck-interval": func(o *Options) { o.UpgradeRecheck = -1 },
		"--proxy-permission-ttl":           func(o *Options) { o.ProxyPermissionTTL = -1 },
		"--proxy-permission-settle":        func(o *Options) { o.ProxyPermissionSettle = -1 },
	} {
		v := &validated{}
		set(&v.Options)
		if err := v.proxyLimits(); err == nil || err.Error() != flag+" must not be negative" {
			t.Errorf("%s=-1: %v", flag, err)
		}
	}
	v = &validated{Options: Options{APICallAnswerBytes: 2 << 20, APINodeAnswerBytes: 1 << 20}}
	if err := v.proxyLimits(); err == nil || !strings.Contains(err.Error(), "--api-call-max-answer-bytes (2097152) must not be more than --api-node-max-answer-bytes") {
		t.Errorf("a call's answer bound over the node's: %v", err)
	}
}

// TestRefusedDestinationsFlag: addresses and CIDR prefixes, the last setting wins, and anything
// else is refused naming it.
func TestRefusedDestinationsFlag(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.BindFlags(fs)
	if err := fs.Parse([]string{"--refused-destinations=198.51.100.0/24", "--refused-destinations=192.0.2.7, 2001:db8::/32,::ffff:192.0.2.8"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range o.RefusedDestinations {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "192.0.2.7/32 2001:db8::/32 192.0.2.8/32" {
		t.Errorf("--refused-destinations read as %v", got)
	}
	if err := fs.Parse([]string{"--refused-destinations=metadata.internal"}); err == nil || !strings.Contains(err.Error(), `"metadata.internal" is neither an address nor a CIDR prefix`) {
		t.Errorf("a name: %v", err)
	}
}

// TestNAT64PrefixesFlag: prefixes of the lengths RFC 6052 allows; anything else refused naming it.
func TestNAT64PrefixesFlag(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.BindFlags(fs)
	if err := fs.Parse([]string{"--nat64-prefixes=64:ff9b:1::/48, 2001:db8::/96"}); err != nil {
		t.Fatal(err)
	}
	if len(o.NAT64Prefixes) != 2 || o.NAT64Prefixes[0].String() != "64:ff9b:1::/48" || o.NAT64Prefixes[1].String() != "2001:db8::/96" {
		t.Errorf("--nat64-prefixes read as %v", o.NAT64Prefixes)
	}
	for _, bad := range []string{"64:ff9b:1::/50", "10.0.0.0/8", "64:ff9b:1::"} {
		if err := fs.Parse([]string{"--nat64-prefixes=" + bad}); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(bad, "/50")) {
			t.Errorf("--nat64-prefixes=%s: %v, want an error naming it", bad, err)
		}
	}
}

// TestMemoryLimitLeavesRoomForVolumes: the node's volumes' tmpfs pages share the container's
// memory limit with the Go heap; GOMEMLIMIT (the container's limit) is lowered by their bound.
func TestMemoryLimitLeavesRoomForVolumes(t *testing.T) {
	for _, tc := range []struct{ limit, volumes, want int64 }{
		{256 << 20, 64 << 20, 192 << 20},
		{math.MaxInt64, 64 << 20, math.MaxInt64}, // no limit set
		{100 << 20, 64 << 20, 100 << 20},         // too small to share
		{256 << 20, 0, 256 << 20},                // volumes unbounded
	} {
		if got := memoryLimitBesideVolumes(tc.limit, tc.volumes); got != tc.want {
			t.Errorf("limit %d, volumes %d: %d, want %d", tc.limit, tc.volumes, got, tc.want)
		}
	}
}

// TestMetricsAuthFlags: unset, the metrics listener is guarded with the default review limit;
// a value that is not a mode, half a certificate, or a certificate for the open listener are
// refused, naming the flag.
func TestMetricsAuthFlags(t *testing.T) {
	v := &validated{}
	if err := v.metricsAuth(); err != nil {
		t.Fatal(err)
	}
	if v.MetricsAuth != MetricsAuthDelegated || v.MetricsAuthQPS != defaultMetricsAuthQPS || v.MetricsAuthBurst != defaultMetricsAuthBurst ||
		v.MetricsAuthTTL != defaultMetricsAuthTTL {
		t.Errorf("unset metrics options not defaulted: %q %v %d", v.MetricsAuth, v.MetricsAuthQPS, v.MetricsAuthBurst)
	}
	for want, set := range map[string]func(*Options){
		`--metrics-auth "open"`: func(o *Options) { o.MetricsAuth = "open" },
		"go together":           func(o *Options) { o.MetricsCertFile = "tls.crt" },
		"with --metrics-auth=delegated only": func(o *Options) {
			o.MetricsAuth, o.MetricsCertFile, o.MetricsKeyFile = MetricsAuthNone, "tls.crt", "tls.key"
		},
		"--metrics-auth-qps":       func(o *Options) { o.MetricsAuthQPS = -1 },
		"--metrics-auth-cache-ttl": func(o *Options) { o.MetricsAuthTTL = -1 },
	} {
		v := &validated{}
		set(&v.Options)
		if err := v.metricsAuth(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}
