package driver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/admission"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/scopes"
	"github.com/kube-connectors/connectors-csi/secretcache"
	"github.com/kube-connectors/connectors-csi/statusmetrics"
	"github.com/kube-connectors/connectors-csi/trust"
)

// startController starts the controller role: the Connector status, AccessPolicy and
// AccessRequest controllers, run by the replica that holds the Lease (with --leader-elect).
func startController(ctx context.Context, g *errgroup.Group, p *process, ready *atomic.Bool) error {
	o := p.o
	mgr, err := newManager(ctx, p)
	if err != nil {
		return err
	}
	// The Events of tenants' AccessRequests at one rate, those of Connectors' status and of the
	// operator's CA Secrets at another (see pacedRecorder): a storm of approvals does not drop
	// the one Warning an invalid CA Secret gets.
	events := mgr.GetEventRecorder(o.DriverName)
	requestEvents := newPacedRecorder(events, o.EventQPS, o.EventBurst)
	recorder := newPacedRecorder(events, o.EventQPS, o.EventBurst)
	// The status metrics read the leader's caches only: a standby starts no informer for them.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		statusmetrics.Register(mgr.GetClient())
		<-ctx.Done()
		statusmetrics.Register(nil)
		return nil
	})); err != nil {
		return err
	}
	statusClient, statusKube, err := statusClients(p, mgr)
	if err != nil {
		return err
	}
	if err := (&connectorstatus.Reconciler{
		Client: statusClient,
		// A Secret is read at most once per recheck interval, whatever the events.
		Secrets:  secretcache.New(secretcache.FromWatchCache(statusKube), o.StatusRecheck, o.SecretCacheSize, o.SecretCacheBytes, "status_secrets"),
		ProxyURL: o.ProxyURL, ClusterDomain: o.ClusterDomain,
		Transports: trust.NewTransports(o.TransportCacheSize, "probe_transports", func(roots *x509.CertPool) *http.Transport {
			// A probed tool is whoever the Connector's owner points it at: its answer head is
			// bounded as the proxy's are (10 MiB when unset, per probe in flight), and no
			// connection is kept after its probe: a tool redirecting each probe to a new host
			// and keeping every connection open left thousands idle in the controller (a
			// Connector is probed every few minutes; keeping connections saves nothing).
			return &http.Transport{Proxy: nil, DialContext: p.destinations.DialContext, DisableCompression: true, DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, MaxResponseHeaderBytes: int64(o.ProxyMaxHeaderBytes)}
		}),
		Flags: p.flags, GlobalCA: p.globalCA, Recorder: recorder,
		Recheck:      o.StatusRecheck,
		Workers:      o.StatusWorkers,
		CELCacheSize: o.CELCacheSize,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&connectorstatus.ClassReconciler{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), ProxyURL: o.ProxyURL, SystemNamespace: o.SystemNamespace,
		BuiltInProxyServices: o.BuiltInProxyServices, ClusterDomain: o.ClusterDomain, Recheck: o.StatusRecheck,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	stateModules, err := o.regoStates()
	if err != nil {
		return err
	}
	states, err := approval.NewStates(o.CELCacheSize, stateModules)
	if err != nil {
		return err
	}
	if err := (&approval.PolicyController{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Grants: mgr.GetCache(), SystemNamespace: o.SystemNamespace, States: states,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	rechecks, recheckReader, err := recheckPace(p, mgr)
	if err != nil {
		return err
	}
	if err := (&approval.Controller{
		Rechecks:             rechecks,
		RecheckReader:        recheckReader,
		Client:               mgr.GetClient(),
		Reader:               mgr.GetAPIReader(),
		Cache:                mgr.GetCache(),
		SystemNamespace:      o.SystemNamespace,
		DriverName:           o.DriverName,
		Recorder:             requestEvents,
		Retention:            o.RequestRetention,
		RetainedPerNamespace: o.RetainedPerNamespace,
		PodRecheck:           o.PodRecheck,
		States:               states,
		EvaluationBudget:     o.EvaluationBudget,
		MaxCheckObjects:      o.MaxCheckObjects,
		MaxPolicyBytes:       o.MaxPolicyBytes,
		MaxCheckObjectBytes:  o.MaxCheckObjectBytes,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if !o.DisableScopedConnectors {
		if err := (&scopes.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if o.WebhookListen != "" {
		// Served by every replica, leader or not: the Service spreads reviews over them.
		live, err := limitedClient(p, mgr, o.WebhookLiveQPS)
		if err != nil {
			return err
		}
		authz, err := webhookAuthorizer(p, o)
		if err != nil {
			return err
		}
		mgr.GetWebhookServer().Register(admission.ConnectorPath,
			(&admission.ConnectorValidator{Reader: mgr.GetClient(), Live: live, Authz: authz}).Webhook(p.scheme))
	}
	if err := mgr.Add(&trust.Collector{Kube: p.kube, Namespace: o.SystemNamespace,
		Recorder: recorder, Resync: o.StatusRecheck}); err != nil {
		return err
	}
	g.Go(func() error { return mgr.Start(ctx) })
	g.Go(func() error {
		if mgr.GetCache().WaitForCacheSync(ctx) {
			ready.Store(true)
			klog.FromContext(ctx).Info("Controller caches synced")
		}
		return nil
	})
	return nil
}

// statusClients are the Connector status controller's clients, reading through the manager's
// cache as its client does, with a rate limiter of their own (--connector-status-api-qps):
// probing every Connector again each --connector-recheck-interval costs calls in proportion to
// their number, and sharing --kube-api-qps, 20,000 Connectors' rechecks would hold every
// approval behind them.
func statusClients(p *process, mgr ctrl.Manager) (client.Client, kubernetes.Interface, error) {
	cfg := limitedConfig(p, p.o.StatusAPIQPS, p.o.StatusAPIBurst)
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: p.scheme, Mapper: mgr.GetRESTMapper(),
		Cache: &client.CacheOptions{Reader: mgr.GetCache(), DisableFor: uncachedKinds()}})
	return c, kube, err
}

// recheckPace is the pace of the AccessRequest controller's rechecks (--accessrequest-pod-recheck-qps,
// a burst of one second's, none in hand at the start: a new leader's rechecks come at the pace
// from its first) and the live reader of what they read (liveReadsPerRecheck), with a rate
// limit of its own so that they never wait in --kube-api-qps's limiter before an approval's
// reads, nor approvals in theirs.
func recheckPace(p *process, mgr ctrl.Manager) (*rate.Limiter, client.Reader, error) {
	qps := p.o.PodRecheckQPS
	burst := max(1, int(math.Ceil(qps)))
	reader, err := client.New(limitedConfig(p, liveReadsPerRecheck*qps, liveReadsPerRecheck*burst), client.Options{Scheme: p.scheme, Mapper: mgr.GetRESTMapper()})
	pace := rate.NewLimiter(rate.Limit(qps), burst)
	pace.ReserveN(time.Now(), burst)
	return pace, reader, err
}

// liveReadsPerRecheck are the live reads of a recheck at most: the Pod, its TaskRun and
// PipelineRun, and the Role and RoleBinding a request that holds no grant deletes if there.
const liveReadsPerRecheck = 5

// webhookAuthorizer answers the webhook's question whether a Connector's writer may get its
// Secret: cached as the node's reviews are (--authorization-allow-ttl, --authorization-deny-ttl),
// with a rate limit of its own (--webhook-review-qps), apart from the controllers' client.
func webhookAuthorizer(p *process, o *validated) (*access.Reviewer, error) {
	kube, err := kubernetes.NewForConfig(limitedConfig(p, o.WebhookReviewQPS, int(math.Ceil(2*o.WebhookReviewQPS))))
	if err != nil {
		return nil, err
	}
	return access.New(kube, access.Config{AllowTTL: o.AuthzAllowTTL, DenyTTL: o.AuthzDenyTTL, Name: "webhook"})
}

// limitedClient reads live, with a rate limit of its own of qps (burst twice that).
func limitedClient(p *process, mgr ctrl.Manager, qps float64) (client.Client, error) {
	return client.New(limitedConfig(p, qps, int(math.Ceil(2*qps))), client.Options{Scheme: p.scheme, Mapper: mgr.GetRESTMapper()})
}

// uncachedKinds are read live by the controllers' clients: see newManager.
func uncachedKinds() []client.Object {
	return []client.Object{&corev1.Secret{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}}
}

// newManager makes the controller-runtime manager of the controllers: its caches keep no
// managedFields, Secrets are never cached (the driver watches no tenant's Secrets, SPEC §4.5;
// the CA collector's label-selected informer of the system namespace is its own), Roles and
// RoleBindings are read live by the client and cached only when labelled as grants (the
// AccessRequest controller reads them through the cache), labelled objects are cached as what
// the controller reads of its own or as stubs (viewOrStub), and ConfigMaps are watched in the system
// namespace only.
func newManager(ctx context.Context, p *process) (ctrl.Manager, error) {
	o := p.o
	hooks, err := webhookServer(ctx, p)
	if err != nil {
		return nil, err
	}
	// A scheme of the manager's own: given a leader election config, controller-runtime adds
	// kinds to it, while the node role's informers (role all) read the process's.
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(p.cfg, ctrl.Options{
		WebhookServer:                 hooks,
		Scheme:                        scheme,
		Logger:                        klog.FromContext(ctx),
		Cache:                         cacheOptions(o.SystemNamespace, o.MaxCheckObjectBytes),
		Client:                        client.Options{Cache: &client.CacheOptions{DisableFor: uncachedKinds()}},
		Metrics:                       metricsserver.Options{BindAddress: "0"}, // served on --metrics-listen
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "connectors-csi-controllers",
		LeaderElectionNamespace:       o.SystemNamespace,
		LeaderElectionReleaseOnCancel: true,
		// The Lease is renewed with a client and rate limit of its own: behind a backlog of the
		// controllers' writes, a renewal past the deadline would lose the lease.
		LeaderElectionConfig: limitedConfig(p, leaseQPS, leaseBurst),
		// Tests run several drivers in one process; metric names stay per process either way.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("controller manager: %w", err)
	}
	return mgr, nil
}

// leaseQPS and leaseBurst are the leader election's rate limit: a renewal every 2 s at most
// (controller-runtime's RetryPeriod), and the Events of a change of leader.
const (
	leaseQPS   = 5
	leaseBurst = 10
)

// cacheOptions are the controllers' cache's: see newManager. Check kinds' objects larger than
// maxCheckObjectBytes are kept as stubs (approval.BoundCheckObjects).
func cacheOptions(systemNamespace string, maxCheckObjectBytes int) cache.Options {
	stripManagedFields, boundCheckObjects := cache.TransformStripManagedFields(), approval.BoundCheckObjects(maxCheckObjectBytes)
	return cache.Options{
		DefaultTransform: func(in any) (any, error) {
			out, err := stripManagedFields(in)
			if err != nil {
				return nil, err
			}
			return boundCheckObjects(out)
		},
		// Role and check templates, read at every evaluation, from the system namespace only.
		ByObject: map[client.Object]cache.ByObject{
			// What the controller reads of requests, their policy specs kept once.
			&v1alpha1.AccessRequest{}: {Transform: approval.RequestCacheView()},
			// Without kubectl's copy of the last applied spec, which a Connector's bound does
			// not count (contract.ConnectorBytes): up to 256 KiB more of each of a tenant's.
			&v1alpha1.Connector{}: {Transform: withoutLastApplied(stripManagedFields)},
			&corev1.ConfigMap{}:   {Namespaces: map[string]cache.Config{systemNamespace: {}}},
			// Only the Services kept for Connectors' own hosts on the built-in proxy.
			&corev1.Service{}: {Label: labels.SelectorFromSet(labels.Set{connectorstatus.LabelHostService: "true"}),
				Transform: viewOrStub(connectorstatus.HostServiceCacheView)},
			// Only the grants' Roles and RoleBindings, read by the AccessRequest controller
			// through the cache (the client reads them live, as the scopes controller must).
			&rbacv1.Role{}:        {Label: grantSelector, Transform: viewOrStub(approval.GrantCacheView)},
			&rbacv1.RoleBinding{}: {Label: grantSelector, Transform: viewOrStub(approval.GrantCacheView)},
		},
	}
}

// withoutLastApplied is strip, then drops kubectl's copy of the last applied spec.
func withoutLastApplied(strip toolscache.TransformFunc) toolscache.TransformFunc {
	return func(in any) (any, error) {
		out, err := strip(in)
		if obj, ok := out.(client.Object); ok && err == nil {
			if a := obj.GetAnnotations(); a != nil {
				delete(a, corev1.LastAppliedConfigAnnotation)
			}
		}
		return out, err
	}
}

// grantSelector selects the Roles and RoleBindings of approvals' grants.
var grantSelector = labels.SelectorFromSet(labels.Set{approval.LabelGrant: "true"})

// viewOrStub is the cache's transform for a kind selected by a label that tenants may set too
// (Roles, RoleBindings and Services of their own namespaces): view gives what the controller
// reads of an object that may be its own, bounded in size; any other object is kept as a stub
// of its name, namespace, UID and resourceVersion, which reads as "exists, not ours". So a
// tenant's labelled objects cost the controller a few hundred bytes each, not up to the API
// server's object size (1.5 MiB of rules, subjects, ports or annotations). The stub is a new
// object of obj's type, so that a field added to the type is dropped too.
func viewOrStub(view func(client.Object) client.Object) toolscache.TransformFunc {
	return func(in any) (any, error) {
		obj, ok := in.(client.Object)
		if !ok {
			return in, nil
		}
		if kept := view(obj); kept != nil {
			return kept, nil
		}
		stub := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(client.Object)
		stub.SetName(obj.GetName())
		stub.SetNamespace(obj.GetNamespace())
		stub.SetUID(obj.GetUID())
		stub.SetResourceVersion(obj.GetResourceVersion())
		return stub, nil
	}
}

// webhookServer is the admission webhook's HTTPS server (nil: none, when --webhook-listen is
// empty). Its certificate comes from --webhook-cert-dir, or else is the self-signed one the
// controller keeps in a Secret; that one is loaded before the server is made, so that the
// server never answers without it.
func webhookServer(ctx context.Context, p *process) (webhook.Server, error) {
	o := p.o
	if o.WebhookListen == "" {
		return nil, nil
	}
	// HTTP/1.1 only: the API server needs nothing more, and HTTP/2's stream resets are a known
	// way to exhaust a server (CVE-2023-44487).
	opts := webhook.Options{Host: o.webhookHost, Port: o.webhookPort, CertDir: o.WebhookCertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}}
	if o.WebhookCertDir == "" {
		svc := o.WebhookService
		hosts := []string{svc, svc + "." + o.SystemNamespace, svc + "." + o.SystemNamespace + ".svc",
			svc + "." + o.SystemNamespace + ".svc.cluster.local"}
		if o.webhookHost != "" {
			// An address the webhook listens on is one a client may be configured to call.
			hosts = append(hosts, o.webhookHost)
		}
		certs := &admission.SelfSigned{
			Secrets: p.kube.CoreV1().Secrets(o.SystemNamespace), Webhooks: p.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations(),
			Configuration: o.WebhookConfiguration, Hosts: hosts, Recheck: o.WebhookCARecheck,
		}
		if err := certs.Start(ctx); err != nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		opts.TLSOpts = append(opts.TLSOpts, func(c *tls.Config) { c.GetCertificate = certs.GetCertificate })
	}
	return webhook.NewServer(opts), nil
}
