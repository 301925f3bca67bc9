package driver

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/identity"
	"github.com/kube-connectors/connectors-csi/node"
	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/node/registration"
	"github.com/kube-connectors/connectors-csi/objectcache"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/ca"
	"github.com/kube-connectors/connectors-csi/regoeval"
	"github.com/kube-connectors/connectors-csi/render"
	"github.com/kube-connectors/connectors-csi/secretcache"
	"github.com/kube-connectors/connectors-csi/turns"
)

// startNode starts the node role: the CSI Identity and Node services, the proxy and the
// Connectors API, kubelet registration. It runs no controller and takes part in no election.
func startNode(ctx context.Context, g *errgroup.Group, p *process, ready *atomic.Bool) error {
	o := p.o
	informers, err := newObjectCache(ctx, p)
	if err != nil {
		return err
	}
	watcher, err := client.NewWithWatch(p.cfg, client.Options{Scheme: p.scheme})
	if err != nil {
		return err
	}
	connectors := objectcache.NewConnectors(watcher, o.ConnectorIdle, o.ConnectorCacheSize, o.ConnectorMissingTTL)
	connectors.OnDelete, connectors.OnDrop = proxy.ForgetConnector, proxy.ForgetConnector
	requests := objectcache.NewRequests(watcher, o.AccessRequestIdle)
	objects := objectcache.Reader{Connectors: connectors, Rest: informers}
	// The proxy, the Connectors API and new volumes are asked for whatever names their callers
	// make up: a Connector is watched for them only if it exists (Connectors.Lookup).
	lookups := objectcache.Reader{Connectors: connectors, Rest: informers, Lookup: true}
	requestChanges := approval.NewChanges()
	store, err := records.NewStore(o.StateDir)
	if err != nil {
		return err
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	go func() { <-ctx.Done(); events.Shutdown() }()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.kube.CoreV1().Events("")})
	recorder := events.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: o.DriverName, Host: o.NodeID})

	// Publishes review with the process's client; the proxy and the Connectors API, which any
	// client on the network can call, each with a client and rate limit of its own, so that a
	// flood of requests to one starves neither publishes nor the other, and as the callers'
	// identity (forCallers). The API takes any token the cluster accepts: a well-formed token
	// with a future exp costs it a review.
	authCfg := forCallers(p, limitedConfig(p, o.ProxyAuthQPS, o.ProxyAuthBurst))
	proxyKube, err := kubernetes.NewForConfig(authCfg)
	if err != nil {
		return err
	}
	apiCfg := forAPICallers(p, limitedConfig(p, o.APIAuthQPS, o.APIAuthBurst))
	// Told apart from the proxy's in the API server's audit log.
	apiCfg.UserAgent += " connectors-api"
	apiKube, err := kubernetes.NewForConfig(apiCfg)
	if err != nil {
		return err
	}
	// The API's reads of Connectors go with its client and rate limit too, and start no watch
	// (Connectors.ReadWith): anyone may call any node's API with a token of their own.
	apiClient, err := client.New(apiCfg, client.Options{Scheme: p.scheme})
	if err != nil {
		return err
	}
	connectors.ReadTTL = o.APIConnectorTTL
	connectors.LookupsPerNamespace = o.LookupsPerNamespace
	// Pod tokens are for the driver's audience: a token none of the ServiceAccount issuer's
	// keys signed is refused before any TokenReview (the process's one copy of the keys).
	keys := p.issuerKeys
	reviewer, err := access.New(p.kube, access.Config{Audiences: []string{o.TokenAudience}, TokenTTL: o.TokenCacheTTL,
		AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL, Name: "publish", Keys: keys, InvalidatedRetry: o.TokenInvalidatedRetry,
		Turns: publishTurns(o.PublishReviewQPS)})
	if err != nil {
		return err
	}
	proxyReviewer, err := access.New(proxyKube, access.Config{Audiences: []string{o.TokenAudience}, TokenTTL: o.TokenCacheTTL,
		AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL, Name: "proxy", Keys: keys, InvalidatedRetry: o.TokenInvalidatedRetry,
		Node: proxyNode(o)})
	if err != nil {
		return err
	}
	// With the proxy's client and rate limit too: a Pod-scoped grant's owner is read from the
	// API server when the node's cache of its own requests does not settle it.
	proxyClient, err := client.New(authCfg, client.Options{Scheme: p.scheme})
	if err != nil {
		return err
	}
	// Uncached: the proxy caches these decisions per Pod and drops them on AccessRequest events.
	permissions, err := access.New(proxyKube, access.Config{Audiences: []string{o.TokenAudience}, TokenTTL: o.TokenCacheTTL, Name: "proxy_permissions", Keys: keys,
		InvalidatedRetry: o.TokenInvalidatedRetry})
	if err != nil {
		return err
	}
	// The Connectors API accepts any token the cluster accepts (the API server's audiences).
	apiReviewer, err := access.New(apiKube, access.Config{TokenTTL: o.TokenCacheTTL, AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL,
		Name: "connectorsapi", InvalidatedRetry: o.TokenInvalidatedRetry})
	if err != nil {
		return err
	}
	caStore := &ca.Store{Secrets: p.kube.CoreV1().Secrets(o.SystemNamespace)}
	flags := p.flags
	regoEngine, err := o.regoEngine("rego_node")
	if err != nil {
		return err
	}
	// Secrets are read for proxied requests, which any client may send: with the proxy's client.
	connectors.Lookups = proxyClient
	connectorsProxy, err := proxy.New(lookups, proxyReviewer, flags, proxyKube, caStore, proxy.Config{
		Rego: regoEngine, GlobalCA: p.globalCA, Passthrough: o.ForwardPassthrough, PassthroughConnectPorts: o.PassthroughConnectPorts,
		PassthroughHTTPPorts: o.PassthroughHTTPPorts,
		SecretTTL:            o.SecretCacheTTL, Egress: p.destinations,
		Permissions: permissions, PermissionAllowTTL: o.ProxyPermissionTTL,
		// Denials as long as grants: a Pod gated by approval is denied connectors/proxy
		// namespace-wide before its Pod-scoped grant is asked for, at every expiry; a grant of
		// its AccessRequest ends the denial at once.
		PermissionDenyTTL: o.ProxyPermissionTTL, PermissionSettle: o.ProxyPermissionSettle,
		PermissionCacheSize: o.PermissionCacheSize,
		TunnelLifetime:      o.TunnelLifetime, UpgradeRecheck: o.UpgradeRecheck, AnswerRecheck: o.AnswerRecheck, MaxHeaderBytes: o.ProxyMaxHeaderBytes,
		ReadHeaderTimeout: o.ProxyReadHeaderTimeout, IdleTimeout: o.ProxyIdleTimeout, UpstreamIdleTimeout: o.ProxyUpstreamIdleTimeout,
		SecretCacheSize: o.SecretCacheSize, SecretCacheBytes: o.SecretCacheBytes, RegistryTokenCacheSize: o.RegistryTokenCacheSize, RegistryTokenBytes: o.RegistryTokenBytes,
		LeafCacheSize: o.LeafCacheSize, TransportCacheSize: o.TransportCacheSize, OwnerTransportCacheSize: o.OwnerTransportSize,
		APITransportCacheSize: o.APITransportSize,
		Refusals:              &proxy.RefusalEvents{Recorder: recorder, Interval: o.RefusalEventInterval, QPS: o.RefusalEventQPS},
		PodGrants:             &approval.PodGrants{Local: requests, Live: proxyClient},
		Node:                  proxyNode(o),
		DeniedPaths:           o.ProxyDeniedPaths,
		GraphQLPaths:          o.ProxyGraphQLPaths,
		DeniedGraphQLFields:   o.ProxyDeniedGraphQLFields,
		GraphQLBodyBytes:      o.ProxyGraphQLBodyBytes,
		GraphQLHeldBytes:      o.ProxyGraphQLHeldBytes,
		APIObjects:            objectcache.Reader{Connectors: connectors, Rest: informers, Unwatched: true, Lists: apiClient},
		APISecretReads:        secretcache.FromWatchCache(apiKube),
	})
	if err != nil {
		return err
	}
	routes, err := connectorsapi.NewRoutes(o.OpenAPICacheSize)
	if err != nil {
		return err
	}
	connectorsProxy.API = &connectorsapi.Server{Proxy: connectorsProxy, Reviewer: apiReviewer, Flags: flags, Routes: routes,
		RegistryPageSize: o.RegistryPageSize, Answers: connectorsapi.NewAnswerLimits(o.APICallAnswerBytes, o.APINodeAnswerBytes),
		// A class's spec.api.permissions.rego names the verb; the method's otherwise.
		Verbs: regoeval.APIVerbs{Engine: regoEngine, Methods: connectorsapi.MethodVerbs{}}}
	// The node learns grants and revocations of its own AccessRequests from its watches of them:
	// waiting publishes wake up, and the Pod's cached proxy decisions are dropped.
	// Only a request labelled for this node names a Pod to forget: the label is the node's to
	// give (an admission policy), and whoever else may create requests could name any Pod in
	// one, to have its decisions dropped at each change.
	ownLabel := approval.LabelValue(o.NodeID)
	requests.OnChange = func(ar *v1alpha1.AccessRequest) {
		requestChanges.Notify(client.ObjectKeyFromObject(ar))
		if ref := ar.Spec.Context.ObjectRef; ref.Kind == "Pod" && ar.Labels[v1alpha1.LabelNode] == ownLabel {
			connectorsProxy.ForgetPod(ref.Namespace, ref.Name)
		}
	}
	renderer := render.NewRenderer(o.ProxyURL, o.NoProxy, int(min(o.volumeSizeBytes, math.MaxInt32)))
	renderer.ClusterDomain = o.ClusterDomain
	nodeServer := node.NewServer(node.Server{
		Config: node.Config{NodeID: o.NodeID, Audience: o.TokenAudience, VolumeSizeLimit: o.volumeSizeBytes, VolumesMaxBytes: o.volumesMaxBytes,
			RepublishRecheck: o.RepublishRecheck},
		Objects: objects,
		// Listed with the publishes' client: proxy load never delays a Pod's start.
		Lookups:     objectcache.Reader{Connectors: connectors, Rest: informers, Lookup: true, Volume: true, Lists: watcher},
		LiveClasses: watcher,
		Authorizer:  &approval.SubjectAccessReviewer{Authz: reviewer},
		Approval: &approval.Gate{Authz: reviewer, Client: watcher, Requests: requests, Changes: requestChanges,
			Flags: flags, Wait: o.ApprovalWait, NodeID: o.NodeID, Gating: approval.NewGatingMemo(o.GatingCacheSize, o.GatingCacheTTL)},
		Renderer: renderer,
		CA:       caStore,
		Mounter:  newMounter(o),
		Records:  store,
		Events:   recorder,
		Flags:    flags,
	})
	identityServer := &identity.Server{Name: o.DriverName, Version: Version, Ready: ready.Load}

	g.Go(func() error { return informers.Start(ctx) })
	g.Go(func() error { connectors.Run(ctx); return nil })
	g.Go(func() error { requests.Run(ctx); return nil })
	g.Go(func() error {
		if informers.WaitForCacheSync(ctx) {
			ready.Store(true)
			klog.FromContext(ctx).Info("Informer caches synced")
		}
		return nil
	})
	g.Go(func() error { return serveCSI(ctx, o.socketPath, identityServer, nodeServer) })
	if o.KubeletRegDir != "" {
		reg := &registration.Server{DriverName: o.DriverName, Endpoint: o.KubeletPluginSock}
		g.Go(func() error { return registration.Serve(ctx, o.KubeletRegDir, reg) })
	}
	if o.ProxyListen != "" {
		g.Go(func() error { return serveProxy(ctx, o, connectorsProxy, p.destinations) })
	}
	return nil
}

// newObjectCache makes the informer cache the node reads besides Connectors and its own
// AccessRequests (which it watches one by one: objectcache): ConnectorClasses (few; shared
// read-only, as a proxied request must not copy its class), kept without managedFields.
func newObjectCache(ctx context.Context, p *process) (cache.Cache, error) {
	c, err := cache.New(p.cfg, cache.Options{
		Scheme:                      p.scheme,
		ReaderFailOnMissingInformer: true,
		DefaultTransform:            cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.ConnectorClass{}: {UnsafeDisableDeepCopy: ptr.To(true)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("object cache: %w", err)
	}
	if _, err := c.GetInformer(ctx, &v1alpha1.ConnectorClass{}); err != nil {
		return nil, fmt.Errorf("informer for ConnectorClasses: %w", err)
	}
	return c, nil
}

// proxyNode is the node whose Pods' tokens alone the proxy takes: this one, unless
// --proxy-tokens=any.
func proxyNode(o *validated) string {
	if o.ProxyTokens == proxy.TokensOfAny {
		return ""
	}
	return o.NodeID
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

// publishReviewBurst is the burst of a namespace's publish reviews, in seconds of its rate: a
// Deployment's Pods starting on a node together, or a node's volumes republished after a
// restart, ask at once.
const publishReviewBurst = 5

// publishTurns paces the publishes' reviews by namespace at qps (nil: not paced).
func publishTurns(qps float64) *turns.ByNamespace {
	if qps == 0 {
		return nil
	}
	return turns.New(qps, max(int(qps*publishReviewBurst), 1))
}
