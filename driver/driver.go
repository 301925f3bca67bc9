// Package driver wires the process: API clients and informer caches, the CSI gRPC server,
// the metrics and health listener. It holds no product logic of its own.
package driver

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/identity"
	"github.com/kube-connectors/connectors-csi/node"
	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/node/registration"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/ca"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/render"
)

// Version is the driver's version, stamped at build time with -ldflags -X.
var Version = "v0.0.0-dev"

// Run runs the driver until ctx is done.
func Run(ctx context.Context, opts Options) error {
	o, err := opts.validate()
	if err != nil {
		return err
	}
	klog.SetLogFilter(redactBodies{})
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "connectors-csi/" + Version
	cfg.QPS, cfg.Burst = float32(o.KubeAPIQPS), o.KubeAPIBurst
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mgr, err := newManager(ctx, cfg, o)
	if err != nil {
		return err
	}
	objects := mgr.GetCache()
	store, err := records.NewStore(o.StateDir)
	if err != nil {
		return err
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})

	// Publishes review with the driver's client; the proxy and the Connectors API, which any
	// client on the network can call, with their own client and rate limit, so that a flood of
	// requests cannot starve publishes.
	reviewer, err := access.New(kube, access.Config{
		Audiences: []string{o.TokenAudience},
		TokenTTL:  o.TokenCacheTTL,
		AllowTTL:  o.AuthzAllowTTL,
		DenyTTL:   o.AuthzDenyTTL,
	})
	if err != nil {
		return err
	}
	authCfg := rest.CopyConfig(cfg)
	authCfg.QPS, authCfg.Burst = float32(o.ProxyAuthQPS), o.ProxyAuthBurst
	proxyKube, err := kubernetes.NewForConfig(authCfg)
	if err != nil {
		return err
	}
	proxyReviewer, err := access.New(proxyKube, access.Config{Audiences: []string{o.TokenAudience}, TokenTTL: o.TokenCacheTTL,
		AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL})
	if err != nil {
		return err
	}
	caStore := &ca.Store{Secrets: kube.CoreV1().Secrets(o.SystemNamespace)}
	flags := features.Watch(ctx, kube, o.SystemNamespace)
	permissions, err := access.New(proxyKube, access.Config{Audiences: []string{o.TokenAudience}, TokenTTL: o.TokenCacheTTL,
		AllowTTL: o.ProxyPermissionTTL, DenyTTL: o.AuthzDenyTTL})
	if err != nil {
		return err
	}
	destinations := &egress.Policy{AllowLoopback: o.AllowLoopbackDestinations, Dial: o.Dial, Resolve: o.Resolve}
	connectorsProxy, err := proxy.New(objects, proxyReviewer, flags, kube, caStore, proxy.Config{
		SecretTTL: o.SecretCacheTTL, Permissions: permissions, Egress: destinations,
		TunnelLifetime: o.TunnelLifetime, MaxHeaderBytes: o.ProxyMaxHeaderBytes,
		SecretCacheSize: o.SecretCacheSize, RegistryTokenCacheSize: o.RegistryTokenCacheSize,
		LeafCacheSize: o.LeafCacheSize, TransportCacheSize: o.TransportCacheSize,
	})
	if err != nil {
		return err
	}
	// The Connectors API accepts any token the cluster accepts (the API server's audiences).
	apiReviewer, err := access.New(proxyKube, access.Config{TokenTTL: o.TokenCacheTTL, AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL})
	if err != nil {
		return err
	}
	connectorsProxy.API = &connectorsapi.Server{Proxy: connectorsProxy, Reviewer: apiReviewer, Flags: flags, RegistryPageSize: o.RegistryPageSize}
	var synced atomic.Bool
	watcher, err := client.NewWithWatch(cfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	gate := &approval.Gate{Authz: reviewer, Client: watcher, Flags: flags, Wait: o.ApprovalWait}
	nodeServer := node.NewServer(node.Server{
		Config:     node.Config{NodeID: o.NodeID, Audience: o.TokenAudience, VolumeSizeLimit: o.volumeSizeBytes},
		Objects:    objects,
		Authorizer: &approval.SubjectAccessReviewer{Authz: reviewer},
		Approval:   gate,
		Renderer:   render.NewRenderer(o.ProxyURL, o.NoProxy),
		CA:         caStore,
		Mounter:    newMounter(o),
		Records:    store,
		Events:     events.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: o.DriverName, Host: o.NodeID}),
	})
	identityServer := &identity.Server{Name: o.DriverName, Version: Version, Ready: synced.Load}

	if err := (&connectorstatus.Reconciler{
		Client:   mgr.GetClient(),
		Secrets:  mgr.GetAPIReader(),
		ProxyURL: o.ProxyURL,
		HTTP:     egress.Client(&http.Transport{Proxy: nil, DialContext: destinations.DialContext, DisableCompression: true}, 10*time.Second),
		Recheck:  o.StatusRecheck,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	states, err := approval.NewStates(o.CELCacheSize)
	if err != nil {
		return err
	}
	if err := (&approval.PolicyController{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), SystemNamespace: o.SystemNamespace, States: states,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&approval.Controller{
		Client:          mgr.GetClient(),
		Reader:          mgr.GetAPIReader(),
		Cache:           mgr.GetCache(),
		SystemNamespace: o.SystemNamespace,
		Recorder:        mgr.GetEventRecorder(o.DriverName),
		Retention:       o.RequestRetention,
		States:          states,
	}).SetupWithManager(mgr); err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mgr.Start(ctx) })
	g.Go(func() error {
		if objects.WaitForCacheSync(ctx) {
			synced.Store(true)
			klog.FromContext(ctx).Info("Informer caches synced")
		}
		return nil
	})
	g.Go(func() error { return serveCSI(ctx, o.socketPath, identityServer, nodeServer) })
	if o.MetricsListen != "" {
		g.Go(func() error { return serveMetrics(ctx, o.MetricsListen, synced.Load, o.socketPath, destinations) })
	}
	if o.KubeletRegDir != "" {
		reg := &registration.Server{DriverName: o.DriverName, Endpoint: o.KubeletPluginSock}
		g.Go(func() error { return registration.Serve(ctx, o.KubeletRegDir, reg) })
	}
	if o.ProxyListen != "" {
		g.Go(func() error { return serveProxy(ctx, o, connectorsProxy, destinations) })
	}
	klog.FromContext(ctx).Info("Driver started", "version", Version, "driver", o.DriverName, "node", o.NodeID,
		"endpoint", o.Endpoint, "proxyURL", o.ProxyURL)
	return g.Wait()
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// newManager makes the controller-runtime manager whose informer caches serve every replica
// (Connectors and ConnectorClasses) and whose controllers run on the elected leader. Secrets
// are never cached: the driver does not watch Secrets (SPEC §4.5).
func newManager(ctx context.Context, cfg *rest.Config, o *validated) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Logger: klog.FromContext(ctx),
		Cache: cache.Options{
			ReaderFailOnMissingInformer: true,
			// The publish path and the proxy only read these; skipping the copy per read keeps
			// a proxied request from copying a Connector and its class. The status controller
			// copies before it changes anything.
			ByObject: map[client.Object]cache.ByObject{
				&v1alpha1.Connector{}:      {UnsafeDisableDeepCopy: ptr.To(true)},
				&v1alpha1.ConnectorClass{}: {UnsafeDisableDeepCopy: ptr.To(true)},
			},
		},
		// Secrets are never cached; the RBAC objects of grants are written, not watched.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{
			&corev1.Secret{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}, &corev1.ConfigMap{}}}},
		Metrics:                       metricsserver.Options{BindAddress: "0"}, // served on --metrics-listen
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "connectors-csi-controllers",
		LeaderElectionNamespace:       o.SystemNamespace,
		LeaderElectionReleaseOnCancel: true,
		// Tests run several drivers in one process; metric names stay per process either way.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("controller manager: %w", err)
	}
	for _, obj := range []client.Object{&v1alpha1.Connector{}, &v1alpha1.ConnectorClass{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return nil, fmt.Errorf("informer for %T: %w", obj, err)
		}
	}
	return mgr, nil
}

func newMounter(o *validated) mount.Mounter {
	if o.Mounter != nil {
		return o.Mounter
	}
	if o.UnprivilegedMounts {
		return mount.NewDirectories()
	}
	return mount.NewTmpfs()
}
