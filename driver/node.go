package driver

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
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
	// Pod tokens are for the driver's audience: a token none of the ServiceAccount issuer's
	// keys signed is refused before any TokenReview (the process's one copy of the keys).
	keys := p.issuerKeys
	reviewer, err := access.New(p.kube, access.Config{Audiences: []string{o.TokenAudience}, TokenTTL: o.TokenCacheTTL,
		AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL, Name: "publish", Keys: keys, InvalidatedRetry: o.TokenInvalidatedRetry})
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
		SecretTTL: o.SecretCacheTTL, Egress: p.destinations,
		Permissions: permissions, PermissionAllowTTL: o.ProxyPermissionTTL,
		// Denials as long as grants: a Pod gated by approval is denied connectors/proxy
		// namespace-wide before its Pod-scoped grant is asked for, at every expiry; a grant of
		// its AccessRequest ends the denial at once.
		PermissionDenyTTL: o.ProxyPermissionTTL, PermissionSettle: o.ProxyPermissionSettle,
		PermissionCacheSize: o.PermissionCacheSize,
		TunnelLifetime:      o.TunnelLifetime, UpgradeRecheck: o.UpgradeRecheck, MaxHeaderBytes: o.ProxyMaxHeaderBytes,
		ReadHeaderTimeout: o.ProxyReadHeaderTimeout, IdleTimeout: o.ProxyIdleTimeout, UpstreamIdleTimeout: o.ProxyUpstreamIdleTimeout,
		SecretCacheSize: o.SecretCacheSize, SecretCacheBytes: o.SecretCacheBytes, RegistryTokenCacheSize: o.RegistryTokenCacheSize, RegistryTokenBytes: o.RegistryTokenBytes,
		LeafCacheSize: o.LeafCacheSize, TransportCacheSize: o.TransportCacheSize, OwnerTransportCacheSize: o.OwnerTransportSize,
		APITransportCacheSize: o.APITransportSize,
		Refusals:              &proxy.RefusalEvents{Recorder: recorder, Interval: o.RefusalEventInterval, QPS: o.RefusalEventQPS},
		PodGrants:             &approval.PodGrants{Local: informers, Live: proxyClient},
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
	// The node learns grants and revocations of its own AccessRequests from its watch of them:
	// waiting publishes wake up, and the Pod's cached proxy decisions are dropped.
	if err := onRequestChange(ctx, informers, func(ar *v1alpha1.AccessRequest) {
		requestChanges.Notify(client.ObjectKeyFromObject(ar))
		if ref := ar.Spec.Context.ObjectRef; ref.Kind == "Pod" {
			connectorsProxy.ForgetPod(ref.Namespace, ref.Name)
		}
	}); err != nil {
		return err
	}
	renderer := render.NewRenderer(o.ProxyURL, o.NoProxy, int(min(o.volumeSizeBytes, math.MaxInt32)))
	renderer.ClusterDomain = o.ClusterDomain
	nodeServer := node.NewServer(node.Server{
		Config: node.Config{NodeID: o.NodeID, Audience: o.TokenAudience, VolumeSizeLimit: o.volumeSizeBytes, VolumesMaxBytes: o.volumesMaxBytes,
			RepublishRecheck: o.RepublishRecheck},
		Objects: objects,
		// Listed with the publishes' client: proxy load never delays a Pod's start.
		Lookups:     objectcache.Reader{Connectors: connectors, Rest: informers, Lookup: true, Lists: watcher},
		LiveClasses: watcher,
		Authorizer:  &approval.SubjectAccessReviewer{Authz: reviewer},
		Approval: &approval.Gate{Authz: reviewer, Client: watcher, Requests: informers, Changes: requestChanges,
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

// newObjectCache makes the informer caches the node reads besides Connectors (which it
// watches one by one, on demand: objectcache): ConnectorClasses (few; shared read-only, as a
// proxied request must not copy its class) and the AccessRequests of this node only (by the
// node label). All are kept without managedFields; AccessRequests without annotations too.
func newObjectCache(ctx context.Context, p *process) (cache.Cache, error) {
	c, err := cache.New(p.cfg, cache.Options{
		Scheme:                      p.scheme,
		ReaderFailOnMissingInformer: true,
		DefaultTransform:            cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.ConnectorClass{}: {UnsafeDisableDeepCopy: ptr.To(true)},
			&v1alpha1.AccessRequest{}: {Label: labels.SelectorFromSet(labels.Set{
				v1alpha1.LabelNode: approval.LabelValue(p.o.NodeID)}), Transform: stripRequest},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("object cache: %w", err)
	}
	for _, obj := range []client.Object{&v1alpha1.ConnectorClass{}, &v1alpha1.AccessRequest{}} {
		if _, err := c.GetInformer(ctx, obj); err != nil {
			return nil, fmt.Errorf("informer for %T: %w", obj, err)
		}
	}
	return c, nil
}

// stripRequest keeps of an AccessRequest what the node reads (spec, status conditions) and the
// labels a node gives its requests: not its managed fields; nor its annotations, owners,
// finalizers or other labels, which whoever may write AccessRequests could fill up to the API
// server's 256 KiB of annotations, and more of the others, on every request labelled for this
// node; nor the copies of the matched AccessPolicies in its status (the controller's), as
// large as a tenant's policy, times every request of the node's Pods that policy gates. The
// schema bounds the spec's strings; a spec larger than those bounds allow (a request written
// before them) is kept empty, which names no Pod and so is no request of the node's.
func stripRequest(obj any) (any, error) {
	if ar, ok := obj.(*v1alpha1.AccessRequest); ok {
		ar.ManagedFields, ar.Annotations, ar.Status.Policies = nil, nil, nil
		ar.OwnerReferences, ar.Finalizers, ar.GenerateName = nil, nil, ""
		maps.DeleteFunc(ar.Labels, func(key, _ string) bool { return !slices.Contains(requestLabelKeys, key) })
		if specBytes(&ar.Spec) > maxRequestSpecBytes {
			ar.Spec = v1alpha1.AccessRequestSpec{}
		}
	}
	return obj, nil
}

// maxRequestSpecBytes is more than the strings of a spec within the schema's bounds add up to
// (apiVersion, uid, resourceVersion and fieldPath 256 each at most, names 253, namespaces 63,
// kinds and groups fewer than 320).
const maxRequestSpecBytes = 4 << 10

// specBytes adds up the lengths of a request spec's strings.
func specBytes(s *v1alpha1.AccessRequestSpec) int {
	o := s.Context.ObjectRef
	return len(s.Subject.Kind) + len(s.Subject.APIGroup) + len(s.Subject.Name) + len(s.Subject.Namespace) +
		len(s.ConnectorRef.Name) + len(o.APIVersion) + len(o.Kind) + len(o.Name) + len(o.Namespace) + len(o.UID) +
		len(o.ResourceVersion) + len(o.FieldPath)
}

// requestLabelKeys are the labels a node gives the requests it makes (approval.Gate).
var requestLabelKeys = []string{v1alpha1.LabelNode, v1alpha1.LabelAccessRequestConnector,
	v1alpha1.LabelContextObjectKind, v1alpha1.LabelContextObjectNamespace, v1alpha1.LabelContextObjectName}

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

// onRequestChange calls changed with every AccessRequest of the node's cache that is added,
// updated or deleted.
func onRequestChange(ctx context.Context, objects cache.Cache, changed func(*v1alpha1.AccessRequest)) error {
	inf, err := objects.GetInformer(ctx, &v1alpha1.AccessRequest{})
	if err != nil {
		return err
	}
	call := func(obj any) {
		if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if ar, ok := obj.(*v1alpha1.AccessRequest); ok {
			changed(ar)
		}
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: call, UpdateFunc: func(_, obj any) { call(obj) }, DeleteFunc: call,
	})
	return err
}
