// Package driver wires the process: API clients and caches, the node role (CSI gRPC server,
// proxy, Connectors API) and the controller role (Connector status, AccessPolicy and
// AccessRequest controllers under a Lease), the metrics and health listener. It holds no
// product logic of its own.
package driver

import (
	"context"
	"math"
	"net"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/binpages"
	"github.com/kube-connectors/connectors-csi/configwatch"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/trust"
)

// Version is the driver's version, stamped at build time with -ldflags -X.
var Version = "v0.0.0-dev"

// process is what both roles share: the API clients and the destination policy.
type process struct {
	o      *validated
	cfg    *rest.Config // every client made from it shares one rate limiter
	kube   kubernetes.Interface
	scheme *runtime.Scheme
	// destinations is where the proxy, the API and the status probes may connect.
	destinations *egress.Policy
	// flags are the feature flags in force and globalCA the global CA bundle, both read live
	// by either role.
	flags    *features.Source
	globalCA *trust.Global
	// issuerKeys are the ServiceAccount issuer's keys, one copy for every reviewer of the
	// process (the proxy's, publishes', the metrics listener's), read through a client of
	// their own: a token naming a key they lack has them read again (at most every 5 s),
	// which any client may cause.
	issuerKeys *access.IssuerKeys
}

// issuerKeysQPS, issuerKeysBurst: the issuer keys' own client; it reads them every 5
// minutes, and at most every 5 s for a key a token names that they lack.
const issuerKeysQPS, issuerKeysBurst = 1, 2

// limitedConfig is the process's client config with a rate limiter of its own.
func limitedConfig(p *process, qps float64, burst int) *rest.Config {
	cfg := rest.CopyConfig(p.cfg)
	cfg.QPS, cfg.Burst = float32(qps), burst
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	return cfg
}

// forCallers is cfg for the requests the node sends for whoever calls it (the proxy's, the
// Connectors API's and the metrics listener's TokenReviews and SubjectAccessReviews, and the
// proxy's reads: Connectors looked up by name, Secrets, Pod-scoped grants), sharing its rate
// limiter: sent as --callers-as when it is set (impersonated), so that API Priority and
// Fairness puts them in a priority level of their own. Anyone who reaches a node can have it
// send them (new tokens, made-up names), and every node is one user, hence one flow: a flood
// at many nodes would otherwise hold up publishes' requests in the node role's level.
func forCallers(p *process, cfg *rest.Config) *rest.Config {
	if p.o.callers == "" {
		return cfg
	}
	out := rest.CopyConfig(cfg)
	out.Impersonate = rest.ImpersonationConfig{UserName: p.o.callers}
	return out
}

// forAPICallers is forCallers for the Connectors API, whose requests add --api-callers-group to
// the callers' identity: the API takes any token the cluster accepts (the proxy, only its
// node's Pods' tokens, checked locally first), so a flood of made-up tokens at every node's API
// is reviews the proxy's must not wait behind.
func forAPICallers(p *process, cfg *rest.Config) *rest.Config {
	out := forCallers(p, cfg)
	if p.o.callers == "" || p.o.APICallersGroup == "" {
		return out
	}
	out.Impersonate.Groups = []string{p.o.APICallersGroup}
	return out
}

// Run runs the driver's roles until ctx is done.
func Run(ctx context.Context, opts Options) error {
	o, err := opts.validate()
	if err != nil {
		return err
	}
	// controller-runtime's logger, and what logs through it (the caches' reflectors in the
	// node role too), writes to klog's; unset, it prints a warning with a stack once and drops
	// everything after. (klog's filter is set as the package loads: logfilter.go.)
	ctrllog.SetLogger(klog.Background())
	if o.runsNode() {
		// Before anything is served (the metrics report the limit): the node's volumes' tmpfs
		// pages count against the container's limit too.
		debug.SetMemoryLimit(memoryLimitBesideVolumes(debug.SetMemoryLimit(-1), o.volumesMaxBytes))
	}
	p, err := newProcess(o)
	if err != nil {
		return err
	}
	var metrics net.Listener
	if o.MetricsListen != "" {
		if metrics, err = listenMetrics(o.MetricsListen, p.destinations); err != nil {
			return err
		}
	}
	// Ended on every return: the metrics server starts before the roles, which may fail.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	var nodeReady, controllerReady, started atomic.Bool
	ready := func() bool { return nodeReady.Load() && controllerReady.Load() }
	startedAt := time.Now()
	starting := func() bool {
		return !started.Load() && (o.StartupGrace == 0 || time.Since(startedAt) < o.StartupGrace)
	}
	if metrics != nil {
		// Served before the flags are known, which waits for the API server: a driver
		// (re)started while the API server does not answer would fail its liveness probe,
		// be restarted in a loop, and leave the node without CSI and proxy for kubelet's
		// back-off after the API server is back. Until then it is alive, and not ready.
		csiSocket := ""
		if o.runsNode() {
			csiSocket = o.socketPath
		}
		protect, err := protectMetrics(p)
		if err != nil {
			_ = metrics.Close()
			return err
		}
		if protect.start != nil {
			// A watch that fails keeps the certificate last read: the node's CSI and proxy,
			// in the same group, must not end for it.
			go func() {
				if err := protect.start(ctx); err != nil {
					klog.FromContext(ctx).Error(err, "Cannot watch the metrics listener's certificate files; serving the one last read",
						"certFile", o.MetricsCertFile)
				}
			}()
		}
		g.Go(func() error { return serveMetrics(ctx, metrics, ready, starting, csiSocket, o.Profiling, protect) })
	}
	// The controller (or the all role) is the one process that reports invalid flags.
	// One watch of the system namespace's ConfigMaps serves both. Nothing is served before
	// the flags are known: one that restricts (enable-connector-proxy-permissions) would be
	// missed meanwhile.
	cms := configwatch.New(p.kube, o.SystemNamespace)
	p.flags = features.Watch(ctx, cms, p.kube, o.runsController())
	p.globalCA = trust.WatchGlobal(ctx, cms)
	cms.Start(ctx)
	if o.runsNode() {
		if err := startNode(ctx, g, p, &nodeReady); err != nil {
			return err
		}
	} else {
		nodeReady.Store(true)
	}
	if o.runsController() {
		if err := startController(ctx, g, p, &controllerReady); err != nil {
			return err
		}
	} else {
		controllerReady.Store(true)
	}
	started.Store(true)
	if o.ReleaseStartupPages {
		go releaseStartupPages(ctx, ready, o.ReleasePagesInterval)
	}
	klog.FromContext(ctx).Info("Driver started", "version", Version, "role", o.Role, "driver", o.DriverName, "node", o.NodeID,
		"endpoint", o.Endpoint, "proxyURL", o.ProxyURL, "goMemoryLimitMiB", goMemoryLimitMiB())
	return g.Wait()
}

func newProcess(o *validated) (*process, error) {
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// The role and the node in the User-Agent: the API server's audit log and metrics tell
	// which node sent what.
	cfg.UserAgent = "connectors-csi/" + Version + " (" + o.Role + ")"
	if o.runsNode() {
		cfg.UserAgent = "connectors-csi/" + Version + " (" + o.Role + "; " + o.NodeID + ")"
	}
	// One limiter for every client of the process (informers, reviews, writes), so that
	// --kube-api-qps is what the process may send, whatever it runs. The proxy's reviews have
	// their own (see startNode), and so does the Connector status controller's background
	// probing (statusClients).
	cfg.QPS, cfg.Burst = float32(o.KubeAPIQPS), o.KubeAPIBurst
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	p := &process{o: o, cfg: cfg, kube: kube, scheme: scheme,
		destinations: &egress.Policy{AllowLoopback: o.AllowLoopbackDestinations, Refused: o.RefusedDestinations, NAT64: o.NAT64Prefixes,
			Dial: o.Dial, Resolve: o.Resolve}}
	keysKube, err := kubernetes.NewForConfig(limitedConfig(p, issuerKeysQPS, issuerKeysBurst))
	if err != nil {
		return nil, err
	}
	p.issuerKeys = access.NewIssuerKeys(keysKube)
	return p, nil
}

// newScheme is a scheme of client-go's kinds and the Connectors kinds.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return scheme, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// releaseStartupPages waits until the process is ready (its caches synced: start-up is over)
// and gives back the executable's pages only start-up used (see binpages); then, every
// interval (0: never), those the last interval used, which fault back as they are needed.
func releaseStartupPages(ctx context.Context, ready func() bool, interval time.Duration) {
	if err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, false, func(context.Context) (bool, error) { return ready(), nil }); err != nil {
		return
	}
	for {
		released, err := binpages.Release()
		if err != nil {
			klog.FromContext(ctx).Error(err, "Could not give back the pages of the executable")
			return
		}
		klog.FromContext(ctx).V(4).Info("Gave back the pages of the executable", "mappedMiB", released>>20)
		if interval <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// memoryLimitBesideVolumes is the Go runtime's soft memory limit for a node whose volumes may
// hold volumes bytes: their tmpfs pages count against the container's memory limit, which
// deploy/ gives as GOMEMLIMIT, and Go does not see them. A limit not more than twice the
// volumes', or none, is left as it is.
func memoryLimitBesideVolumes(limit, volumes int64) int64 {
	if limit == math.MaxInt64 || volumes <= 0 || limit <= 2*volumes {
		return limit
	}
	return limit - volumes
}

// goMemoryLimitMiB is the Go runtime's soft memory limit (GOMEMLIMIT, which deploy/ sets to
// the container's memory limit), or -1 when there is none.
func goMemoryLimitMiB() int64 {
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		return limit >> 20
	}
	return -1
}
