package driver

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"

	"github.com/kube-connectors/connectors-csi/admission"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// Defaults of the proxy's limits, shared by the flags and by drivers started from Go.
const (
	defaultMaxConnections         = 8192
	defaultMaxHeaderBytes         = 64 << 10
	defaultProxyAuthQPS           = 50
	defaultPublishReviewQPS       = 10
	defaultRefusalEventInterval   = time.Minute
	defaultProxyAuthBurst         = 100
	defaultAPIAuthQPS             = 20
	defaultAPIAuthBurst           = 40
	maxTokenInvalidatedRetry      = 5 * time.Second
	defaultSecretCacheSize        = 1000
	defaultSecretCacheBytes       = 32 << 20
	defaultRegistryTokenBytes     = 8 << 20
	defaultGatingCacheTTL         = 10 * time.Second
	defaultGatingCacheSize        = 1000
	defaultMaxPolicyBytes         = 64 << 10
	defaultVolumesMaxBytes        = "64Mi"
	defaultStatusAPIQPS           = 20
	defaultStatusAPIBurst         = 40
	defaultRetainedPerNamespace   = 1000
	defaultEventQPS               = 10
	defaultEventBurst             = 100
	defaultWebhookLiveQPS         = 5
	defaultWebhookReviewQPS       = 20
	defaultPodRecheckQPS          = 20
	defaultMaxCheckObjectBytes    = 256 << 10
	defaultRegistryTokenCacheSize = 10000
	defaultLeafCacheSize          = 1000
	defaultTransportCacheSize     = 64
	defaultOwnerTransportSize     = 1024
	defaultAPITransportSize       = 1024
	defaultPermissionCacheSize    = 10000
	defaultConnectorCacheSize     = 1000
	defaultLookupsPerNamespace    = 16
	defaultConnectorIdle          = 10 * time.Minute
	// Longer than kubelet's longest wait between retries of a publish (2 min 2 s).
	defaultAccessRequestIdle   = 5 * time.Minute
	defaultAPIConnectorTTL     = 10 * time.Second
	defaultConnectorMissingTTL = 5 * time.Second
	defaultTunnelLifetime      = time.Hour
	defaultUpgradeRecheck      = 5 * time.Second
	// An answer's recheck costs about what a Pod's requests cost the reviews (their caches
	// last 10 s): one long answer, every 5 s, 0.28 reviews a second; every 30 s, about 0.1.
	defaultAnswerRecheck       = 30 * time.Second
	defaultReadHeaderTimeout   = 30 * time.Second
	defaultClientIdleTimeout   = 120 * time.Second
	defaultUpstreamIdleTimeout = 90 * time.Second
	defaultLaneMaxBodyBytes    = 64 << 10
	defaultMetricsAuthQPS      = 1
	defaultMetricsAuthBurst    = 4
	defaultMetricsAuthTTL      = 2 * time.Minute
)

// What --metrics-auth may be.
const (
	// MetricsAuthDelegated serves the metrics listener over TLS, and /metrics (and the
	// profiles) only to a bearer token the API server accepts whose user may get the path.
	MetricsAuthDelegated = "delegated"
	// MetricsAuthNone serves it over plain HTTP to anyone who reaches it.
	MetricsAuthNone = "none"
)

// Options are the driver's settings, one flag each (SPEC §3.6).
type Options struct {
	// Role is what the process runs: RoleNode, RoleController or RoleAll.
	Role            string
	Endpoint        string
	NodeID          string
	DriverName      string
	Kubeconfig      string
	SystemNamespace string
	StateDir        string
	ProxyListen     string
	ProxyURL        string
	NoProxy         string
	TokenAudience   string
	MetricsListen   string
	// MetricsAuth is MetricsAuthDelegated ("" too) or MetricsAuthNone; MetricsCertFile and
	// MetricsKeyFile, when set, are the listener's certificate (else a self-signed one made
	// at start); MetricsAuthQPS and MetricsAuthBurst limit its reviews.
	MetricsAuth      string
	MetricsCertFile  string
	MetricsKeyFile   string
	MetricsAuthQPS   float64
	MetricsAuthBurst int
	// MetricsAuthTTL is how long a scraper's accepted token and allowed access are kept.
	MetricsAuthTTL time.Duration
	// Profiling serves net/http/pprof under /debug/pprof/ on the metrics listener.
	Profiling bool
	// ReleaseStartupPages drops the executable's pages touched while starting, once ready, and
	// then every ReleasePagesInterval (0: once).
	ReleaseStartupPages  bool
	ReleasePagesInterval time.Duration
	// StartupGrace, when positive, is how long /healthz says a driver waiting for the API
	// server at its start is alive; past it, the liveness probe restarts it. Off by default: a
	// restart mends none of what holds a start (an outage, a list forbidden, a credential
	// refused), and one during an outage costs kubelet's back-off after it.
	StartupGrace    time.Duration
	LeaderElect     bool
	VolumeSizeLimit string
	// VolumesMaxBytes bounds the memory of the node's volumes together (quantity; "" is 64Mi).
	VolumesMaxBytes    string
	KubeletRegDir      string
	KubeletPluginSock  string
	UnprivilegedMounts bool
	KubeAPIQPS         float64
	KubeAPIBurst       int
	AuthzAllowTTL      time.Duration
	TokenCacheTTL      time.Duration
	AuthzDenyTTL       time.Duration
	// TokenInvalidatedRetry is how long the reviewers wait to ask again about a token the API
	// server said has been invalidated (access.Config.InvalidatedRetry).
	TokenInvalidatedRetry time.Duration
	SecretCacheTTL        time.Duration
	StatusRecheck         time.Duration
	StatusWorkers         int
	// StatusAPIQPS and StatusAPIBurst are the Connector status controller's own rate limit.
	StatusAPIQPS   float64
	StatusAPIBurst int
	// RetainedPerNamespace bounds the revoked AccessRequests of one Pod namespace kept in a
	// Connector's namespace.
	RetainedPerNamespace int
	// EventQPS and EventBurst bound the controllers' Events (what they would record past it is
	// dropped and counted).
	EventQPS   float64
	EventBurst int
	// WebhookLiveQPS limits the webhook's live reads of classes its cache has not seen, and
	// WebhookReviewQPS its SubjectAccessReviews of the Secrets writers name.
	WebhookLiveQPS   float64
	WebhookReviewQPS float64
	ClusterDomain    string
	// BuiltInProxyServices are the Service names under which a ConnectorClass's spec.proxy.ref
	// means the built-in proxy.
	BuiltInProxyServices []string
	RegistryPageSize     int
	// APICallAnswerBytes and APINodeAnswerBytes bound what the Connectors API's list calls read from
	// tools: one call, and all in flight on the node.
	APICallAnswerBytes, APINodeAnswerBytes int64
	OpenAPICacheSize                       int
	CELCacheSize                           int
	RegoCacheSize                          int
	RegoTimeout                            time.Duration
	RegoMaxBodyBytes                       int
	// RegoStateMemoryLimit and RegoStateProcesses bound the child processes that evaluate
	// check states (state.rego): each one's memory, and how many run at once.
	RegoStateMemoryLimit string
	RegoStateProcesses   int
	ApprovalWait         time.Duration
	// GatingCacheTTL and GatingCacheSize bound the node's memory of whether policies gate a
	// Connector (approval.GatingMemo).
	GatingCacheTTL     time.Duration
	GatingCacheSize    int
	ProxyPermissionTTL time.Duration
	// ProxyPermissionSettle bounds the decisions made just after a Pod's AccessRequest changed.
	ProxyPermissionSettle time.Duration
	RefusalEventInterval  time.Duration
	RefusalEventQPS       float64
	RequestRetention      time.Duration
	// DisableScopedConnectors turns off kube-public and project-level Connectors (see
	// package scopes); the flag is --scoped-connectors, default true.
	DisableScopedConnectors bool
	PodRecheck              time.Duration
	// PodRecheckQPS paces the rechecks of live AccessRequests (evaluations nothing woke), whose
	// reads go through a client of their own.
	PodRecheckQPS float64
	// EvaluationBudget and MaxCheckObjects bound one AccessRequest's evaluation: its checks'
	// time together, and the objects one check reads.
	EvaluationBudget time.Duration
	MaxCheckObjects  int
	// MaxPolicyBytes bounds the policy specs one AccessRequest records (approval.Controller),
	// MaxCheckObjectBytes the check objects the controller's cache keeps whole.
	MaxPolicyBytes      int
	MaxCheckObjectBytes int
	RepublishRecheck    time.Duration

	AllowLoopbackDestinations bool
	RefusedDestinations       []netip.Prefix
	// NAT64Prefixes are the network's own NAT64 prefixes, besides the well-known one.
	NAT64Prefixes []netip.Prefix
	// ForwardPassthrough is --forward-passthrough: none, public (when empty) or all, and
	// PassthroughConnectPorts --forward-passthrough-connect-ports (443 when empty),
	// PassthroughHTTPPorts --forward-passthrough-http-ports (80 when empty).
	ForwardPassthrough                            string
	PassthroughConnectPorts, PassthroughHTTPPorts []string
	// ProxyTokens is --proxy-tokens: node (when empty) or any.
	ProxyTokens string
	// ProxyDeniedPaths is --proxy-denied-paths; nil: proxy.DefaultDeniedPaths.
	ProxyDeniedPaths []string
	// ProxyGraphQLPaths, ProxyDeniedGraphQLFields and ProxyGraphQLBodyBytes are
	// --proxy-graphql-paths, --proxy-denied-graphql-fields and --proxy-graphql-body-bytes; nil:
	// proxy.DefaultGraphQLPaths, proxy.DefaultDeniedGraphQLFields.
	ProxyGraphQLPaths        []string
	ProxyDeniedGraphQLFields []string
	ProxyGraphQLBodyBytes    int64
	ProxyGraphQLHeldBytes    int64 // --proxy-graphql-held-bytes
	TunnelLifetime           time.Duration
	UpgradeRecheck           time.Duration
	AnswerRecheck            time.Duration
	// The proxy's client connections: how long a request's head may take to arrive, and how
	// long a kept-alive connection may wait for its next request; and how long a connection
	// to a tool may wait idle in the proxy's pools.
	ProxyReadHeaderTimeout   time.Duration
	ProxyIdleTimeout         time.Duration
	ProxyUpstreamIdleTimeout time.Duration
	ProxyMaxConnections      int
	ProxyMaxHeaderBytes      int
	// ProxyWithoutFastLane serves every proxy request through net/http's server (the flag
	// --proxy-fast-lane=false); the zero value keeps the fast lane, as the flag's default does.
	ProxyWithoutFastLane bool
	// ProxyLaneMaxBodyBytes is the largest request body the fast lane reads whole when it does
	// not fit in a connection's buffer; larger ones it streams (--proxy-fast-lane-max-body-bytes).
	ProxyLaneMaxBodyBytes int
	ProxyAuthQPS          float64
	ProxyAuthBurst        int
	// PublishReviewQPS paces the publishes' SubjectAccessReviews by the Pod's namespace (burst
	// publishReviewBurst times it); 0: not paced.
	PublishReviewQPS float64
	// CallersAs is the ServiceAccount (namespace/name) the requests sent for the node's callers
	// are sent as (forCallers), impersonated; empty: as the process itself.
	CallersAs string
	// APICallersGroup is the group the Connectors API's requests for its callers add to
	// CallersAs's identity (forAPICallers); empty: none.
	APICallersGroup string
	// APIAuthQPS and APIAuthBurst are the Connectors API's own rate limit for its reviews.
	APIAuthQPS             float64
	APIAuthBurst           int
	SecretCacheSize        int
	SecretCacheBytes       int64
	RegistryTokenBytes     int64
	RegistryTokenCacheSize int
	LeafCacheSize          int
	TransportCacheSize     int
	OwnerTransportSize     int
	APITransportSize       int
	PermissionCacheSize    int
	ConnectorCacheSize     int
	// LookupsPerNamespace bounds the Connectors of one namespace a node watches for its
	// proxy's lookups alone.
	LookupsPerNamespace int
	ConnectorIdle       time.Duration
	// AccessRequestIdle is how long a node keeps watching one of its AccessRequests that no
	// volume's record names (a pending publish's) after a publish last read it.
	AccessRequestIdle time.Duration
	// APIConnectorTTL is how long the Connectors API keeps a Connector it read that the node
	// does not watch.
	APIConnectorTTL     time.Duration
	ConnectorMissingTTL time.Duration

	// The Connector admission webhook of the controller role (off when WebhookListen is empty).
	WebhookListen        string
	WebhookCertDir       string
	WebhookService       string
	WebhookConfiguration string
	WebhookCARecheck     time.Duration

	// Dial and Resolve replace the network for the proxy's, the API's and the probes'
	// outbound connections; for tests only (no flag), so that a refused destination is proven
	// never dialed and no name lookup leaves the machine.
	Dial    egress.DialFunc
	Resolve egress.ResolveFunc
	// Mounter replaces the tmpfs mounter; for tests only (no flag).
	Mounter mount.Mounter
	// ProxyListening is told the proxy's address once it listens; for tests only (no flag).
	ProxyListening func(addr string)
}

// Roles of the process.
const (
	// RoleNode is the DaemonSet: CSI, the proxy, the Connectors API. No controller, no election.
	RoleNode = "node"
	// RoleController is the Deployment: the Connector status, AccessPolicy and AccessRequest
	// controllers, under a Lease.
	RoleController = "controller"
	// RoleAll runs both in one process: demo, single node, tests.
	RoleAll = "all"
)

func (o *validated) runsNode() bool       { return o.Role != RoleController }
func (o *validated) runsController() bool { return o.Role != RoleNode }

// BindFlags registers every option on fs.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Role, "role", RoleAll, "what this process runs: node (CSI, proxy, Connectors API: the DaemonSet), controller (status, AccessPolicy and AccessRequest controllers: the Deployment), all (both: demo, single node)")
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint (unix://<path>)")
	fs.StringVar(&o.NodeID, "node-id", os.Getenv("NODE_NAME"), "node name reported by NodeGetInfo (default: env NODE_NAME)")
	fs.StringVar(&o.DriverName, "driver-name", "connectors-csi", "CSI driver name")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file for API server access (default: in-cluster)")
	fs.StringVar(&o.SystemNamespace, "system-namespace", "connectors-system", "namespace of the configuration, templates and the proxy CA")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/kubelet/plugins/connectors-csi", "directory of the per-volume records")
	fs.StringVar(&o.ProxyListen, "proxy-listen", ":3128", "proxy and Connectors API listener (:0 picks a port)")
	fs.StringVar(&o.ProxyURL, "proxy-url", "", "proxy base URL rendered into volumes (default: http://connectors-proxy.<system-namespace>.svc.cluster.local:3128)")
	fs.StringVar(&o.NoProxy, "no-proxy", "localhost,127.0.0.1,::1", "no_proxy value written into each volume's .env")
	fs.StringVar(&o.TokenAudience, "token-audience", "connectors-csi", "audience of the projected token the driver expects and the proxy accepts")
	fs.StringVar(&o.MetricsListen, "metrics-listen", ":9090", "listener of /metrics, /healthz and /readyz (empty: off)")
	fs.BoolVar(&o.ReleaseStartupPages, "release-startup-pages", true, "once ready, give back the pages of the executable that only start-up touched (its package initializers): they leave RSS and stay in the page cache")
	fs.DurationVar(&o.ReleasePagesInterval, "release-pages-interval", 5*time.Minute, "with --release-startup-pages, give the executable's pages back again this often, so that RSS holds only what the last interval used (0: once, after start-up)")
	fs.DurationVar(&o.StartupGrace, "startup-grace", 0, "how long /healthz answers ok while the driver waits at its start for the API server (its feature flags); past it, 503, so that the liveness probe restarts it (0: as long as it waits)")
	fs.StringVar(&o.MetricsAuth, "metrics-auth", MetricsAuthDelegated, "who may read /metrics on --metrics-listen: delegated (over TLS, a bearer token the API server accepts, of a user RBAC lets get the non-resource URL /metrics; /healthz and /readyz stay open) or none (plain HTTP, anyone who reaches the listener: the proxy's metrics name every tenant's Connectors)")
	fs.StringVar(&o.MetricsCertFile, "metrics-tls-cert-file", "", "with --metrics-auth=delegated, the listener's certificate (PEM, read again when it changes; default: a self-signed one made at start)")
	fs.StringVar(&o.MetricsKeyFile, "metrics-tls-key-file", "", "the key of --metrics-tls-cert-file")
	fs.Float64Var(&o.MetricsAuthQPS, "metrics-auth-qps", defaultMetricsAuthQPS, "sustained TokenReviews and SubjectAccessReviews per second of the metrics listener (its own limit: anyone who reaches it can make it review)")
	fs.IntVar(&o.MetricsAuthBurst, "metrics-auth-burst", defaultMetricsAuthBurst, "burst of --metrics-auth-qps")
	fs.DurationVar(&o.MetricsAuthTTL, "metrics-auth-cache-ttl", defaultMetricsAuthTTL, "how long the metrics listener keeps a token's review and an access decision, either way: every node reviews its scraper's token once per period, which at 5,000 nodes is what the API server pays for scraping (0: the default)")
	fs.BoolVar(&o.Profiling, "profiling", false, "also serve Go's profiles (/debug/pprof/) on --metrics-listen; with --metrics-auth=delegated, to users RBAC lets get /debug/pprof/*")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "run the controllers (controller and all roles) under a Lease")
	fs.StringVar(&o.VolumeSizeLimit, "volume-size-limit", "4Mi", "the most a volume's files take together (its tmpfs is twice that: an update writes the changed files beside the old)")
	fs.StringVar(&o.VolumesMaxBytes, "node-volumes-max-bytes", defaultVolumesMaxBytes, "memory the node's volumes may hold together (their tmpfs pages count against the driver's memory limit, not the Pods'), a namespace's volumes half of it; a new volume past it fails with ResourceExhausted, naming this flag (and a mounted one's republish whose content its Connector or an approval grows past it, the volume keeping its files; a mounted one's renewal, a new token or a class or proxy CA changed, is counted, never refused; 0: no bound)")
	fs.StringVar(&o.KubeletRegDir, "kubelet-registration-dir", "", "serve kubelet's plugin-registration API from a socket here (empty: off)")
	fs.StringVar(&o.KubeletPluginSock, "kubelet-plugin-endpoint", "", "the CSI socket path as kubelet sees it (default: derived from --endpoint)")
	fs.Float64Var(&o.KubeAPIQPS, "kube-api-qps", 50, "sustained requests per second to the API server (SubjectAccessReviews, events)")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", 100, "burst of requests to the API server")
	fs.DurationVar(&o.AuthzAllowTTL, "authorization-allow-ttl", 10*time.Second, "how long an allowed SubjectAccessReview is cached")
	fs.DurationVar(&o.TokenCacheTTL, "token-cache-ttl", 10*time.Second, "how long an accepted TokenReview is cached (a rejected one: --authorization-deny-ttl)")
	fs.DurationVar(&o.AuthzDenyTTL, "authorization-deny-ttl", 2*time.Second, "how long a denied SubjectAccessReview is cached")
	fs.DurationVar(&o.TokenInvalidatedRetry, "token-invalidated-retry-delay", 500*time.Millisecond, "how long to wait before asking the API server once more about a token it answered 'has been invalidated' for, which it answers both when the token's Pod is gone and when it failed to read the Pod (0: the first answer is a rejection)")
	fs.DurationVar(&o.SecretCacheTTL, "secret-cache-ttl", 10*time.Second, "how long the proxy keeps a Connector's Secret after reading it")
	fs.DurationVar(&o.StatusRecheck, "connector-recheck-interval", 5*time.Minute, "how often the leader probes each Connector's tool again for its status")
	fs.IntVar(&o.StatusWorkers, "connector-status-workers", 4, "Connectors the status controller checks at once")
	fs.Float64Var(&o.StatusAPIQPS, "connector-status-api-qps", defaultStatusAPIQPS, "sustained requests per second of the Connector status controller (a Secret read per probe, a status write per change), apart from --kube-api-qps: probing every Connector is background work that grows with their number, and never holds an approval behind it")
	fs.Float64Var(&o.WebhookLiveQPS, "webhook-live-read-qps", defaultWebhookLiveQPS, "reads per second (burst twice that) of ConnectorClasses the admission webhook's cache has not seen, from the API server: anyone who may create a Connector may have reviews sent, and a class the cache holds costs none")
	fs.Float64Var(&o.WebhookReviewQPS, "webhook-review-qps", defaultWebhookReviewQPS, "SubjectAccessReviews per second (burst twice that) the admission webhook sends to ask whether a Connector's writer may get the Secret it names (answers cached --authorization-allow-ttl and --authorization-deny-ttl; each namespace's Connectors at most 2 a second, burst 20)")
	fs.IntVar(&o.StatusAPIBurst, "connector-status-api-burst", defaultStatusAPIBurst, "burst of the Connector status controller's requests")
	fs.Float64Var(&o.EventQPS, "controller-event-qps", defaultEventQPS, "sustained Events per second the controllers record, for AccessRequests and for the rest (Connectors' status, CA Secrets) each (each Event a request within --kube-api-qps; an AccessRequest records one per condition change): past it, and its burst, an Event is dropped and counted in connectors_events_dropped_total, so that a storm of approvals or Pods leaves the controllers' status and grant writes their requests")
	fs.IntVar(&o.EventBurst, "controller-event-burst", defaultEventBurst, "burst of the controllers' Events, for AccessRequests and for the rest each")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", defaultClusterDomain, "the cluster's DNS domain, for the addresses of Services a ConnectorClass's proxy or api refers to")
	o.BuiltInProxyServices = defaultBuiltInProxyServices
	fs.Func("builtin-proxy-services", "comma-separated names of Services in the system namespace that are the built-in proxy: a ConnectorClass whose spec.proxy.ref names one is served by it (default connectors-proxy,connectors-proxy-service: this project's and Alauda's)", func(v string) error {
		o.BuiltInProxyServices = nil
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.BuiltInProxyServices = append(o.BuiltInProxyServices, n)
			}
		}
		return nil
	})
	fs.IntVar(&o.RegistryPageSize, "api-registry-page-size", 100, "page size the Connectors API asks registries for (catalog, tag lists)")
	fs.Int64Var(&o.APICallAnswerBytes, "api-call-max-answer-bytes", connectorsapi.DefaultCallAnswerBytes, "bytes one Connectors API list call (gitrefs, a registry's repositories or tags) reads from the tool over all its answers, each counting 1 KiB besides its body (502 beyond)")
	fs.Int64Var(&o.APINodeAnswerBytes, "api-node-max-answer-bytes", connectorsapi.DefaultNodeAnswerBytes, "bytes the Connectors API's list calls in flight on the node read from tools together, those of one caller (the namespace of its ServiceAccount, or a user) a quarter of it or one call's bound, whichever is more (503 beyond: the driver serves every tenant on the node)")
	fs.IntVar(&o.OpenAPICacheSize, "api-openapi-cache-size", defaultOpenAPICacheSize, "ConnectorClass OpenAPI route tables (one per class generation) the Connectors API keeps (the least recently used go first)")
	fs.IntVar(&o.CELCacheSize, "cel-cache-size", defaultCELCacheSize, "how many compiled CEL expressions the controller keeps, for check states and for probes' response.cel each (the least recently used go first)")
	fs.IntVar(&o.RegoCacheSize, "rego-cache-size", defaultRegoCacheSize, "how many compiled Rego modules (generators, authExtractors, api.permissions, check states) each process keeps (the least recently used go first)")
	fs.DurationVar(&o.RegoTimeout, "rego-eval-timeout", defaultRegoTimeout, "how long one evaluation of a Rego module may run before it fails")
	fs.StringVar(&o.RegoStateMemoryLimit, "rego-state-memory-limit", defaultRegoStateMemoryLimit, "heap one evaluation of a check's state.rego may take beyond what its process holds at start: tenants write them, so each runs in a child process of the controller that ends when it takes more (the check fails, naming this flag)")
	fs.IntVar(&o.RegoStateProcesses, "rego-state-processes", defaultRegoStateProcesses, "how many child processes evaluating check states (state.rego) the controller runs at once (each ends after a minute without work)")
	fs.IntVar(&o.RegoMaxBodyBytes, "rego-max-body-bytes", defaultRegoMaxBodyBytes, "largest JSON request body given to a Rego module as input.request.body (larger ones are null) and rewritten by a generator that injects into the body (larger ones are refused with 413)")
	fs.DurationVar(&o.ProxyPermissionTTL, "proxy-permission-ttl", 10*time.Second, "how long a connectors/proxy decision, allowed or denied, is cached; the node drops a Pod's decisions as soon as it sees one of the Pod's AccessRequests change (granted, revoked), so this bounds only grants made or removed by hand")
	fs.DurationVar(&o.ProxyPermissionSettle, "proxy-permission-settle", 2*time.Second, "for this long after the node sees one of a Pod's AccessRequests change, the Pod's connectors/proxy decisions are kept only until this time has passed, then asked again: the API server that answers them may not have seen the RoleBinding change yet; 0 keeps them for their whole TTL")
	fs.DurationVar(&o.RefusalEventInterval, "proxy-refusal-event-interval", defaultRefusalEventInterval, "a proxy refusal (403) of a Pod's request is recorded as a Warning Event (reason ProxyRefused) on the Pod; the same refusal of the same Pod at most once per this interval")
	fs.Float64Var(&o.RefusalEventQPS, "proxy-refusal-event-qps", 1, "sustained ProxyRefused Events per second a node writes (burst 10; beyond it refusals are counted in connectors_proxy_refusal_events_dropped_total, not recorded); 0 records none")
	fs.DurationVar(&o.ApprovalWait, "approval-wait", 10*time.Second, "how long a publish waits for a pending AccessRequest before answering Unavailable (kubelet retries)")
	fs.DurationVar(&o.GatingCacheTTL, "approval-gating-cache-ttl", defaultGatingCacheTTL, "how long a node remembers whether AccessPolicies offer approval for a Connector (a publish of a Pod without connectors/proxy asks; a policy created meanwhile is seen after this; 0: ask each time)")
	fs.IntVar(&o.GatingCacheSize, "approval-gating-cache-size", defaultGatingCacheSize, "how many Connectors' answers of --approval-gating-cache-ttl a node keeps (the least recently used go first)")
	fs.BoolFunc("scoped-connectors", "share Connectors of kube-public with every namespace's workloads and those of a project's namespace (cpaas.io/inner-namespace) with its members (cpaas.io/project), through RoleBindings the controller keeps (default true; false where tenants may label namespaces)", func(v string) error {
		on, err := strconv.ParseBool(v)
		o.DisableScopedConnectors = !on
		return err
	})
	fs.DurationVar(&o.RequestRetention, "accessrequest-retention", 24*time.Hour, "how long a revoked AccessRequest is kept before it is deleted")
	fs.IntVar(&o.RetainedPerNamespace, "accessrequest-retained-per-namespace", defaultRetainedPerNamespace, "how many revoked AccessRequests of the Pods of one namespace a Connector's namespace keeps at most (the oldest are deleted before their retention): a tenant ending gated Pods in a loop would otherwise fill a shared Connector's namespace with them; 0: no bound")
	fs.DurationVar(&o.RepublishRecheck, "republish-recheck-interval", 5*time.Minute, "an unchanged republish within this interval of the last authorization makes no API call (and no write unless the token changed); 0 authorizes every republish")
	fs.DurationVar(&o.EvaluationBudget, "accessrequest-evaluation-budget", 10*time.Second, "how long the checks of one AccessRequest may take together, so that no tenant's policy holds the controller's workers; the checks not read by then are read again 10s later (the request waits, naming this flag, and keeps a grant it holds)")
	fs.IntVar(&o.MaxPolicyBytes, "accessrequest-max-policy-bytes", defaultMaxPolicyBytes, "how large the AccessPolicies that select a request's Connector may be together (their specs' JSON), as the request records them (status.policies[].policySpec, kept --accessrequest-retention after its Pod); larger ones fail the request, naming this flag")
	fs.IntVar(&o.MaxCheckObjectBytes, "check-object-max-bytes", defaultMaxCheckObjectBytes, "how large, about as JSON, an object of a check kind (an ApprovalTask, a PipelineRun) the controller keeps whole: its checks' kinds are watched cluster-wide and tenants write their objects, so a larger one is kept as a stub of its name and labels, and a check that matches it fails, naming this flag")
	fs.IntVar(&o.MaxCheckObjects, "accessrequest-check-max-objects", 100, "how many objects one check of an AccessPolicy may match; more fail the check (naming this flag)")
	fs.DurationVar(&o.PodRecheck, "accessrequest-pod-recheck-interval", 5*time.Minute, "how often the controller reads the Pod of a live AccessRequest again (Pods are not watched; unpublish and the Pod's token revoke at once)")
	fs.Float64Var(&o.PodRecheckQPS, "accessrequest-pod-recheck-qps", defaultPodRecheckQPS, "rechecks of live AccessRequests per second (each reads the Pod, up to two of its Tekton owners and, holding no grant, the Role and RoleBinding of its name, through a client of their own, apart from --kube-api-qps): with more live requests than this × --accessrequest-pod-recheck-interval, rechecks come further apart, and never hold an approval behind them")
	fs.StringVar(&o.ProxyTokens, "proxy-tokens", proxy.TokensOfNode, "which tokens the proxy takes: node (those of Pods on this node, --node-id: a Pod's requests go to its own node's proxy, and another node's Pod, or a token of no Pod, is refused before anything is looked up) or any (any token of the proxy's audience, for a proxy run apart from the node's Pods, or an API server older than Kubernetes 1.30, whose tokens name no node)")
	listFlag(fs, "proxy-denied-paths", "comma-separated paths the proxy never sends a Connector's credential to, for every Connector whatever its class (a class's spec.proxy.deniedPaths adds its own): each a \"/\" and path segments (\"*\" any one) looked for at the start of a request's path under the Connector's address or one segment further, without regard to ASCII case, \";\" parameters, a format suffix or percent-encoding; default: the tools' endpoints that answer with the credential or mint one (JFrog's API key, GitLab's token rotation, GitHub's deploy keys, Harbor's robot accounts: the README lists them); empty: none",
		&o.ProxyDeniedPaths, proxy.ValidDeniedPath)
	listFlag(fs, "proxy-graphql-paths", "comma-separated paths of the tools' GraphQL endpoints, looked for as --proxy-denied-paths' are: the proxy reads each request to one (its query string and body) before it sends it with a Connector's credential, and refuses one that names a --proxy-denied-graphql-fields field, or that it cannot read (a multipart or encoded body, a body over --proxy-graphql-body-bytes); default: /api/graphql,/api/glql (GitLab's; matched with any extension, as Rails routes them); empty: none read",
		&o.ProxyGraphQLPaths, proxy.ValidGraphQLPath)
	listFlag(fs, "proxy-denied-graphql-fields", "comma-separated GraphQL field names no request to a --proxy-graphql-paths endpoint may name (as a word anywhere in its documents, under any alias): mutations that mint a credential the caller would hold, fields that answer one (a class's spec.proxy.deniedGraphQLFields adds its own); default: GitLab's (runnerCreate, personalAccessTokenCreate, pipelineTriggers...: the README lists them); empty: none of the node's (requests are read for a class's own only)",
		&o.ProxyDeniedGraphQLFields, proxy.ValidGraphQLField)
	fs.Int64Var(&o.ProxyGraphQLBodyBytes, "proxy-graphql-body-bytes", proxy.DefaultGraphQLBodyBytes, "how much of a request's body to a --proxy-graphql-paths endpoint the proxy reads (and holds) to look for denied fields; a larger body is refused (413); at most an eighth of --proxy-graphql-held-bytes")
	fs.Int64Var(&o.ProxyGraphQLHeldBytes, "proxy-graphql-held-bytes", proxy.DefaultGraphQLHeldBytes, "how many bytes of GraphQL bodies the proxy holds at once, read and not yet sent, for all of the node's Pods, each namespace (or user) an eighth of it; past either a request is refused (503) until others are sent")
	fs.StringVar(&o.ForwardPassthrough, "forward-passthrough", proxy.PassthroughPublic, "what the forward proxy does with a destination no named Connector covers: none (403), public (forward it without any credential when it resolves to public addresses only; CONNECT becomes a plain tunnel) or all (any destination the rules allow)")
	portsFlag(fs, "forward-passthrough-connect-ports", "comma-separated ports a pass-through CONNECT may reach (default 443: a tunnel is opaque, so other ports would make the proxy a relay for any TCP service)", &o.PassthroughConnectPorts)
	portsFlag(fs, "forward-passthrough-http-ports", "comma-separated ports a pass-through plain-HTTP request may reach (default 80: a request's body is whatever the client writes, which a server of another protocol, mail or SSH, reads as its own commands)", &o.PassthroughHTTPPorts)
	fs.BoolVar(&o.AllowLoopbackDestinations, "allow-loopback-destinations", false, "allow Connector addresses and forwarded destinations on loopback (tests, single-node setups); link-local, unspecified and multicast destinations and the driver's own listeners are always refused")
	fs.Func("refused-destinations", "comma-separated addresses and CIDR prefixes no Connector, forwarded request or probe may reach, besides those always refused (link-local, the cloud metadata and host services outside it, unspecified, multicast, the driver's own listeners): the platform's own services Pods can reach", func(v string) error {
		o.RefusedDestinations = nil
		for _, item := range strings.Split(v, ",") {
			prefix, err := parsePrefix(strings.TrimSpace(item))
			if err != nil {
				return err
			}
			o.RefusedDestinations = append(o.RefusedDestinations, prefix)
		}
		return nil
	})
	fs.Func("nat64-prefixes", "comma-separated NAT64 prefixes of the cluster's network besides the well-known 64:ff9b::/96 (a local-use one of 64:ff9b:1::/48, RFC 8215; 32, 40, 48, 56, 64 or 96 bits): an address in one is refused or allowed as the IPv4 address it embeds, so that one cannot reach cloud metadata or --refused-destinations through it", func(v string) error {
		o.NAT64Prefixes = nil
		for _, item := range strings.Split(v, ",") {
			prefix, err := netip.ParsePrefix(strings.TrimSpace(item))
			if err == nil {
				err = egress.NAT64Prefix(prefix)
			}
			if err != nil {
				return err
			}
			o.NAT64Prefixes = append(o.NAT64Prefixes, prefix)
		}
		return nil
	})
	fs.DurationVar(&o.TunnelLifetime, "proxy-tunnel-max-lifetime", defaultTunnelLifetime, "how long a CONNECT tunnel, or a connection the tool switched to another protocol (WebSocket, SPDY), may stay open before the proxy closes it")
	fs.DurationVar(&o.UpgradeRecheck, "proxy-upgrade-recheck-interval", defaultUpgradeRecheck, "how often the caller of a connection the tool switched to another protocol is checked again (token, get, create on connectors/proxy; from the caches): the connection is closed once one is refused")
	fs.DurationVar(&o.AnswerRecheck, "proxy-answer-recheck-interval", defaultAnswerRecheck, "how often the caller of an answer still streaming (a watch, a followed log; through the proxy or the Connectors API) is checked again (token, get, the request's verb on connectors/proxy, or the grants that allowed the API call; from the caches): the answer is ended once one is refused; each check of a long answer costs about what a Pod's requests do")
	fs.DurationVar(&o.ProxyReadHeaderTimeout, "proxy-read-header-timeout", defaultReadHeaderTimeout, "how long the proxy waits for a request's head once its first byte came (also inside CONNECT tunnels); a slower client is disconnected")
	fs.DurationVar(&o.ProxyIdleTimeout, "proxy-idle-timeout", defaultClientIdleTimeout, "how long a kept-alive client connection (also a CONNECT tunnel's requests) may wait for its next request before the proxy closes it")
	fs.DurationVar(&o.ProxyUpstreamIdleTimeout, "proxy-upstream-idle-timeout", defaultUpstreamIdleTimeout, "how long a connection to a tool may wait idle in the proxy's pools before it is closed")
	fs.IntVar(&o.ProxyMaxConnections, "proxy-max-connections", defaultMaxConnections, "open client connections the proxy listener accepts; more are answered 503 and closed")
	fs.IntVar(&o.ProxyMaxHeaderBytes, "proxy-max-header-bytes", defaultMaxHeaderBytes, "largest request header the proxy reads (431 beyond), and answer head it reads from a tool (502 beyond; the controller's probes too)")
	fs.Var(negatedBool{&o.ProxyWithoutFastLane}, "proxy-fast-lane", "serve the reverse and forward proxies' plain GET and HEAD requests, and those with bodies (of known length: read whole up to --proxy-fast-lane-max-body-bytes, streamed beyond; chunked, or sent after a 100 Continue: streamed), to http and https tools on each client connection's own goroutine, outside net/http's server (same checks, less CPU); off: every request through net/http (default true)")
	fs.IntVar(&o.ProxyLaneMaxBodyBytes, "proxy-fast-lane-max-body-bytes", defaultLaneMaxBodyBytes, "largest request body (of known length) the fast lane reads whole before sending it; larger ones, chunked ones, those sent after a 100 Continue, and any while 128 times this is held by such bodies, are streamed to the tool as they come, the connection staying in the fast lane (0: the default; 1: only bodies that fit in the lane's 4 KiB buffer with their head are read whole)")
	fs.Float64Var(&o.ProxyAuthQPS, "proxy-auth-qps", defaultProxyAuthQPS, "sustained requests per second of the proxy to the API server (TokenReviews, SubjectAccessReviews, Secret and Connector reads: its own limit, apart from publishes)")
	fs.IntVar(&o.ProxyAuthBurst, "proxy-auth-burst", defaultProxyAuthBurst, "burst of --proxy-auth-qps")
	fs.Float64Var(&o.PublishReviewQPS, "publish-review-qps-per-namespace", defaultPublishReviewQPS, "SubjectAccessReviews per second (burst five times that) the node sends for one namespace's publishes (its cache's misses), within --kube-api-qps: a tenant's storm of failing volumes waits for its own turns; 0: not paced")
	fs.Float64Var(&o.APIAuthQPS, "connectors-api-auth-qps", defaultAPIAuthQPS, "sustained TokenReviews and SubjectAccessReviews per second of the Connectors API (its own limit, apart from the proxy's and publishes': it takes any token the cluster accepts, so any client can make it review)")
	fs.IntVar(&o.APIAuthBurst, "connectors-api-auth-burst", defaultAPIAuthBurst, "burst of --connectors-api-auth-qps")
	fs.StringVar(&o.APICallersGroup, "api-callers-group", "connectors-csi:connectors-api", "with --callers-as, a group the Connectors API's requests for its callers (its TokenReviews, SubjectAccessReviews and reads) add to that identity (the process needs impersonate on the group), so that API Priority and Fairness puts them in a priority level apart from the proxy's: the API takes any token the cluster accepts, and anyone who reaches a node can have it review one (deployed: connectors-csi-api-callers); empty: none")
	fs.StringVar(&o.CallersAs, "callers-as", "", "a ServiceAccount (<namespace>/<name>) to send the requests the node sends for its callers as (impersonated; the process needs impersonate on it): the proxy's, the Connectors API's and the metrics listener's TokenReviews and SubjectAccessReviews, and the proxy's reads of Connectors by name, Secrets and Pod-scoped grants; anyone who reaches a node can make it send them, and API Priority and Fairness can then put them in a priority level apart from publishes' (deployed: connectors-csi-callers); empty: as the process itself")
	fs.IntVar(&o.SecretCacheSize, "secret-cache-size", defaultSecretCacheSize, "Secrets the proxy keeps at most (each for --secret-cache-ttl)")
	fs.Int64Var(&o.SecretCacheBytes, "secret-cache-max-bytes", defaultSecretCacheBytes, "bytes of Secret data the proxy (and the status controller) keep at most together; the least recently read go first, and a larger Secret is read each time")
	fs.IntVar(&o.RegistryTokenCacheSize, "registry-token-cache-size", defaultRegistryTokenCacheSize, "registry tokens (by Connector, credential, registry and scope) the proxy keeps at most")
	fs.Int64Var(&o.RegistryTokenBytes, "registry-token-cache-max-bytes", defaultRegistryTokenBytes, "bytes of registry tokens the proxy keeps at most together (an eighth more for the registries' challenges); the least recently used go first")
	fs.IntVar(&o.LeafCacheSize, "leaf-cache-size", defaultLeafCacheSize, "TLS leaf certificates (one per CONNECT host) the proxy keeps at most")
	fs.IntVar(&o.TransportCacheSize, "transport-cache-size", defaultTransportCacheSize, "upstream connection pools (one per Connector CA bundle) the proxy keeps at most")
	fs.IntVar(&o.OwnerTransportSize, "transport-owner-cache-size", defaultOwnerTransportSize, "upstream connection pools of the requests the proxy's own pools do not take (other methods, upgrades, HTTP/2-only tools), one per Connector and caller namespace, kept at most (the least recently used are closed)")
	fs.IntVar(&o.APITransportSize, "api-transport-cache-size", defaultAPITransportSize, "upstream connection pools of the Connectors API's calls (to tools and class API services), one per Connector and caller (a ServiceAccount's namespace, else the user), kept at most apart from the proxy's (the least recently used are closed)")
	fs.IntVar(&o.PermissionCacheSize, "proxy-permission-cache-size", defaultPermissionCacheSize, "connectors/proxy decisions (by Pod, Connector and verb) the proxy keeps at most")
	fs.IntVar(&o.ConnectorCacheSize, "connector-cache-size", defaultConnectorCacheSize, "Connectors a node watches at most (the ones its volumes and proxy requests use)")
	fs.IntVar(&o.LookupsPerNamespace, "connector-lookup-watches-per-namespace", defaultLookupsPerNamespace, "Connectors of one namespace a node watches at most for its proxy's requests alone (not named by a volume of the node); the proxy lists others and keeps them --connectors-api-connector-ttl; 0: only half of --connector-cache-size bounds them")
	fs.DurationVar(&o.ConnectorIdle, "connector-idle-timeout", defaultConnectorIdle, "a node stops watching a Connector nothing read for this long")
	fs.DurationVar(&o.AccessRequestIdle, "accessrequest-watch-idle-timeout", defaultAccessRequestIdle, "a node stops watching one of its AccessRequests that no volume holds (a pending publish's) when no publish read it for this long; the requests volumes hold are watched until the node revokes them")
	fs.DurationVar(&o.APIConnectorTTL, "connectors-api-connector-ttl", defaultAPIConnectorTTL, "how long the Connectors API keeps a Connector it read that none of the node's volumes or proxy requests use (the API watches none: anyone may call any node's API), and the proxy one it does not watch (--connector-lookup-watches-per-namespace); 0 reads it for each call")
	fs.DurationVar(&o.ConnectorMissingTTL, "connector-missing-ttl", defaultConnectorMissingTTL, "how long a node remembers that a Connector the proxy or the Connectors API was asked for does not exist (they list it once and watch it only if it does; 0: not remembered)")
	fs.StringVar(&o.WebhookListen, "webhook-listen", "", "controller role: host:port of the Connector admission webhook (HTTPS; deploy/ uses :9443); empty: no webhook")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", "", "directory with the webhook's tls.crt and tls.key, reloaded when they change, when another tool keeps them and the caBundle; empty: the controller keeps a self-signed certificate in the Secret "+admission.CertSecretName+" and writes its CA into the caBundle of --webhook-configuration")
	fs.StringVar(&o.WebhookService, "webhook-service", defaultWebhookService, "the webhook's Service in the system namespace: the names of the self-signed certificate")
	fs.StringVar(&o.WebhookConfiguration, "webhook-configuration", defaultWebhookConfiguration, "the ValidatingWebhookConfiguration whose caBundle the controller keeps (self-signed certificate only)")
	fs.DurationVar(&o.WebhookCARecheck, "webhook-ca-recheck-interval", defaultWebhookCARecheck, "how often the controller checks the self-signed certificate and the caBundle again (a re-applied configuration gets its caBundle back)")
	fs.BoolVar(&o.UnprivilegedMounts, "unprivileged-mounts", false, "for tests without root: write volumes into plain directories instead of tmpfs mounts")
}

// Defaults of --cluster-domain and --builtin-proxy-services (this project's Service name for
// the proxy and Alauda's).
const defaultClusterDomain = "cluster.local"

var defaultBuiltInProxyServices = []string{"connectors-proxy", "connectors-proxy-service"}

// defaultOpenAPICacheSize is --api-openapi-cache-size's default: classes are few.
const defaultOpenAPICacheSize = 256

// Defaults of the webhook's flags, also for drivers started from Go.
const (
	defaultWebhookService       = "connectors-csi-webhook"
	defaultWebhookConfiguration = "connectors-csi"
	defaultWebhookCARecheck     = 5 * time.Minute
)

// defaultCELCacheSize is --cel-cache-size's default: policies are few, their expressions fewer.
const defaultCELCacheSize = 1024

// Defaults of the Rego flags: classes and policies are few; a module that needs more than a
// quarter second per request is broken; bodies a module reads are API requests, not packs.
const (
	defaultRegoCacheSize    = 1024
	defaultRegoTimeout      = 250 * time.Millisecond
	defaultRegoMaxBodyBytes = 64 << 10
	// A state.rego reads one object: a few MiB is plenty. A child holds 60 MB resident when it
	// starts, 8 MB of it its own (the rest is the binary's pages, shared with the controller);
	// two, each at its bound, fit beside the controller in its 512Mi with room to spare, and an
	// evaluation takes at most 250 ms, so four workers seldom wait for one.
	defaultRegoStateMemoryLimit = "64Mi"
	defaultRegoStateProcesses   = 2
)

// regoEngine is the process's evaluator of Rego modules, its cache reported as cacheName.
func (o *validated) regoEngine(cacheName string) (*regoeval.Engine, error) {
	return regoeval.New(cacheName, o.regoConfig())
}

func (o *validated) regoConfig() regoeval.Config {
	return regoeval.Config{CacheSize: o.RegoCacheSize, Timeout: o.RegoTimeout, MaxBodyBytes: int64(o.RegoMaxBodyBytes)}
}

// regoStates evaluates check states in child processes (regoeval.Sandbox).
func (o *validated) regoStates() (*regoeval.Sandbox, error) {
	return regoeval.NewSandbox(regoeval.SandboxConfig{Engine: o.regoConfig(), MemoryLimit: o.regoStateMemoryBytes, Processes: o.RegoStateProcesses})
}

// validated are the options in the form the driver uses.
type validated struct {
	Options
	socketPath      string
	volumeSizeBytes int64
	volumesMaxBytes int64
	// regoStateMemoryBytes is RegoStateMemoryLimit in bytes.
	regoStateMemoryBytes int64
	webhookHost          string
	webhookPort          int
	// callers is the user name of CallersAs, "" without it.
	callers string
}

func (o *Options) validate() (*validated, error) {
	v := &validated{Options: *o}
	switch v.Role {
	case "":
		v.Role = RoleAll
	case RoleNode, RoleController, RoleAll:
	default:
		return nil, fmt.Errorf("--role %q: must be node, controller or all", o.Role)
	}
	if v.runsNode() {
		path, ok := strings.CutPrefix(o.Endpoint, "unix://")
		if !ok || path == "" {
			return nil, fmt.Errorf("--endpoint %q: must be unix://<path>", o.Endpoint)
		}
		v.socketPath = path
		if v.KubeletPluginSock == "" {
			v.KubeletPluginSock = path
		}
		if o.NodeID == "" {
			return nil, fmt.Errorf("--node-id is empty and NODE_NAME is not set")
		}
	}
	for _, prefix := range o.NAT64Prefixes {
		if err := egress.NAT64Prefix(prefix); err != nil {
			return nil, fmt.Errorf("--nat64-prefixes: %w", err)
		}
	}
	if o.CallersAs != "" {
		ns, name, ok := strings.Cut(o.CallersAs, "/")
		if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return nil, fmt.Errorf("--callers-as %q: must be <namespace>/<name> of a ServiceAccount", o.CallersAs)
		}
		v.callers = serviceaccount.MakeUsername(ns, name)
	}
	q, err := resource.ParseQuantity(o.VolumeSizeLimit)
	if err != nil || q.Value() <= 0 {
		return nil, fmt.Errorf("--volume-size-limit %q: not a positive quantity such as 4Mi", o.VolumeSizeLimit)
	}
	v.volumeSizeBytes = q.Value()
	if v.VolumesMaxBytes == "" { // Options built in code without it (tests, benchmarks)
		v.VolumesMaxBytes = defaultVolumesMaxBytes
	}
	if q, err = resource.ParseQuantity(v.VolumesMaxBytes); err != nil || q.Value() < 0 {
		return nil, fmt.Errorf("--node-volumes-max-bytes %q: not a quantity such as 64Mi", v.VolumesMaxBytes)
	}
	if v.volumesMaxBytes = q.Value(); v.volumesMaxBytes > 0 && v.volumesMaxBytes/2 < v.volumeSizeBytes {
		return nil, fmt.Errorf("--node-volumes-max-bytes %s: a namespace's share, half of it, is less than one volume (--volume-size-limit %s)", v.VolumesMaxBytes, o.VolumeSizeLimit)
	}
	if o.RegoStateMemoryLimit == "" { // Options built in code without it (tests, benchmarks)
		v.RegoStateMemoryLimit = defaultRegoStateMemoryLimit
	}
	if o.RegoStateProcesses == 0 {
		v.RegoStateProcesses = defaultRegoStateProcesses
	}
	if q, err = resource.ParseQuantity(v.RegoStateMemoryLimit); err != nil || q.Value() <= 0 {
		return nil, fmt.Errorf("--rego-state-memory-limit %q: not a positive quantity such as 64Mi", v.RegoStateMemoryLimit)
	}
	v.regoStateMemoryBytes = q.Value()
	if v.RegoStateProcesses < 0 {
		return nil, fmt.Errorf("--rego-state-processes %d: must be positive", v.RegoStateProcesses)
	}
	if o.ClusterDomain == "" { // Options built in code without it (tests, benchmarks)
		v.ClusterDomain = defaultClusterDomain
	}
	if o.ProxyURL == "" {
		v.ProxyURL = fmt.Sprintf("http://connectors-proxy.%s.svc.%s:3128", o.SystemNamespace, v.ClusterDomain)
	}
	if o.BuiltInProxyServices == nil {
		v.BuiltInProxyServices = defaultBuiltInProxyServices
	}
	switch o.ForwardPassthrough {
	case "":
		v.ForwardPassthrough = proxy.PassthroughPublic
	case proxy.PassthroughNone, proxy.PassthroughPublic, proxy.PassthroughAll:
	default:
		return nil, fmt.Errorf("--forward-passthrough %q: not one of none, public, all", o.ForwardPassthrough)
	}
	switch o.ProxyTokens {
	case "":
		v.ProxyTokens = proxy.TokensOfNode
	case proxy.TokensOfNode, proxy.TokensOfAny:
	default:
		return nil, fmt.Errorf("--proxy-tokens %q: not one of node, any", o.ProxyTokens)
	}
	if o.RetainedPerNamespace < 0 {
		return nil, fmt.Errorf("--accessrequest-retained-per-namespace must not be negative")
	}
	if o.APIConnectorTTL < 0 {
		return nil, fmt.Errorf("--connectors-api-connector-ttl must not be negative")
	}
	if o.LookupsPerNamespace < 0 {
		return nil, fmt.Errorf("--connector-lookup-watches-per-namespace must not be negative")
	}
	if o.GatingCacheTTL < 0 {
		return nil, fmt.Errorf("--approval-gating-cache-ttl must not be negative")
	}
	if o.ApprovalWait <= 0 || o.RequestRetention <= 0 {
		return nil, fmt.Errorf("--approval-wait and --accessrequest-retention must be positive")
	}
	if o.StatusRecheck <= 0 {
		return nil, fmt.Errorf("--connector-recheck-interval must be positive")
	}
	if err := rateOrDefault("--connector-status-api-qps and --connector-status-api-burst", &v.StatusAPIQPS, &v.StatusAPIBurst,
		defaultStatusAPIQPS, defaultStatusAPIBurst); err != nil {
		return nil, err
	}
	if err := rateOrDefault("--controller-event-qps and --controller-event-burst", &v.EventQPS, &v.EventBurst,
		defaultEventQPS, defaultEventBurst); err != nil {
		return nil, err
	}
	switch {
	case o.PodRecheckQPS < 0:
		return nil, fmt.Errorf("--accessrequest-pod-recheck-qps must not be negative")
	case o.PodRecheckQPS == 0:
		v.PodRecheckQPS = defaultPodRecheckQPS
	}
	switch {
	case o.WebhookLiveQPS < 0:
		return nil, fmt.Errorf("--webhook-live-read-qps must not be negative")
	case o.WebhookLiveQPS == 0:
		v.WebhookLiveQPS = defaultWebhookLiveQPS
	}
	switch {
	case o.WebhookReviewQPS < 0:
		return nil, fmt.Errorf("--webhook-review-qps must not be negative")
	case o.WebhookReviewQPS == 0:
		v.WebhookReviewQPS = defaultWebhookReviewQPS
	}
	if err := proxy.CheckGraphQLBytes(o.ProxyGraphQLBodyBytes, o.ProxyGraphQLHeldBytes); err != nil {
		return nil, err
	}
	switch {
	case o.CELCacheSize < 0:
		return nil, fmt.Errorf("--cel-cache-size must be positive")
	case o.CELCacheSize == 0: // Options built in code without it (tests, benchmarks)
		v.CELCacheSize = defaultCELCacheSize
	}
	if o.SecretCacheTTL < 0 {
		return nil, fmt.Errorf("--secret-cache-ttl must not be negative")
	}
	if o.KubeAPIQPS <= 0 || o.KubeAPIBurst <= 0 {
		return nil, fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive")
	}
	if o.AuthzAllowTTL < 0 || o.AuthzDenyTTL < 0 || o.TokenCacheTTL < 0 || o.TokenInvalidatedRetry < 0 {
		return nil, fmt.Errorf("--authorization-allow-ttl, --authorization-deny-ttl, --token-cache-ttl and --token-invalidated-retry-delay must not be negative")
	}
	// The request waits that long; and k8s.io/apiserver's token cache gives a review and its
	// second ask 30 s together, past which the token would be a failure to ask (503), every time.
	if o.TokenInvalidatedRetry > maxTokenInvalidatedRetry {
		return nil, fmt.Errorf("--token-invalidated-retry-delay %s: at most %s", o.TokenInvalidatedRetry, maxTokenInvalidatedRetry)
	}
	if o.EvaluationBudget < 0 || o.MaxCheckObjects < 0 {
		return nil, fmt.Errorf("--accessrequest-evaluation-budget and --accessrequest-check-max-objects must not be negative")
	}
	if err := v.proxyLimits(); err != nil {
		return nil, err
	}
	if o.TokenAudience == "" {
		return nil, fmt.Errorf("--token-audience must not be empty")
	}
	if v.StartupGrace < 0 {
		return nil, fmt.Errorf("--startup-grace must not be negative")
	}
	if err := v.webhook(); err != nil {
		return nil, err
	}
	if err := v.metricsAuth(); err != nil {
		return nil, err
	}
	return v, nil
}

// webhook parses --webhook-listen and fills the webhook's unset options with their defaults.
func (v *validated) webhook() error {
	if v.WebhookListen == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(v.WebhookListen)
	if err != nil {
		return fmt.Errorf("--webhook-listen %q: not host:port: %v", v.WebhookListen, err)
	}
	if v.webhookPort, err = strconv.Atoi(port); err != nil || v.webhookPort <= 0 || v.webhookPort > 65535 {
		return fmt.Errorf("--webhook-listen %q: the port must be a number from 1 to 65535", v.WebhookListen)
	}
	v.webhookHost = host
	if v.WebhookService == "" {
		v.WebhookService = defaultWebhookService
	}
	if v.WebhookConfiguration == "" {
		v.WebhookConfiguration = defaultWebhookConfiguration
	}
	if v.WebhookCARecheck < 0 {
		return fmt.Errorf("--webhook-ca-recheck-interval must not be negative")
	}
	if v.WebhookCARecheck == 0 {
		v.WebhookCARecheck = defaultWebhookCARecheck
	}
	return nil
}

// metricsAuth checks the metrics listener's protection; unset values (drivers started from
// Go) take the flags' defaults.
func (v *validated) metricsAuth() error {
	switch v.MetricsAuth {
	case "":
		v.MetricsAuth = MetricsAuthDelegated
	case MetricsAuthDelegated, MetricsAuthNone:
	default:
		return fmt.Errorf("--metrics-auth %q: not one of delegated, none", v.MetricsAuth)
	}
	if (v.MetricsCertFile == "") != (v.MetricsKeyFile == "") {
		return fmt.Errorf("--metrics-tls-cert-file and --metrics-tls-key-file go together: one is set, the other is not")
	}
	if v.MetricsCertFile != "" && v.MetricsAuth == MetricsAuthNone {
		return fmt.Errorf("--metrics-tls-cert-file is used with --metrics-auth=delegated only (none serves plain HTTP)")
	}
	if err := rateOrDefault("--metrics-auth-qps and --metrics-auth-burst", &v.MetricsAuthQPS, &v.MetricsAuthBurst,
		defaultMetricsAuthQPS, defaultMetricsAuthBurst); err != nil {
		return err
	}
	switch {
	case v.MetricsAuthTTL < 0:
		return fmt.Errorf("--metrics-auth-cache-ttl must not be negative")
	case v.MetricsAuthTTL == 0:
		v.MetricsAuthTTL = defaultMetricsAuthTTL
	}
	return nil
}

// rateOrDefault checks a rate limit's pair of flags: neither negative; unset (0), the default.
func rateOrDefault(flags string, qps *float64, burst *int, defaultQPS float64, defaultBurst int) error {
	if *qps < 0 || *burst < 0 {
		return fmt.Errorf("%s must not be negative", flags)
	}
	if *qps == 0 {
		*qps = defaultQPS
	}
	if *burst == 0 {
		*burst = defaultBurst
	}
	return nil
}

// defaulted is a flag's value, its name and its default.
type defaulted[T int | int64 | time.Duration] struct {
	name string
	v    *T
	def  T
}

// orDefaults refuses a negative value and sets an unset (0) one to its default.
func orDefaults[T int | int64 | time.Duration](flags []defaulted[T]) error {
	for _, f := range flags {
		if *f.v < 0 {
			return fmt.Errorf("%s must not be negative", f.name)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return nil
}

// proxyLimits fills unset proxy limits and cache sizes with their flags' defaults (the driver
// is also started from Go, by tests and tools) and refuses negative ones.
func (v *validated) proxyLimits() error {
	if err := orDefaults([]defaulted[int64]{{"--secret-cache-max-bytes", &v.SecretCacheBytes, defaultSecretCacheBytes}, {"--registry-token-cache-max-bytes", &v.RegistryTokenBytes, defaultRegistryTokenBytes},
		{"--api-call-max-answer-bytes", &v.APICallAnswerBytes, connectorsapi.DefaultCallAnswerBytes}, {"--api-node-max-answer-bytes", &v.APINodeAnswerBytes, connectorsapi.DefaultNodeAnswerBytes}}); err != nil {
		return err
	}
	if v.APICallAnswerBytes > v.APINodeAnswerBytes {
		return fmt.Errorf("--api-call-max-answer-bytes (%d) must not be more than --api-node-max-answer-bytes (%d): such a call could never be served", v.APICallAnswerBytes, v.APINodeAnswerBytes)
	}
	if err := orDefaults([]defaulted[int]{
		{"--proxy-max-connections", &v.ProxyMaxConnections, defaultMaxConnections}, {"--proxy-max-header-bytes", &v.ProxyMaxHeaderBytes, defaultMaxHeaderBytes},
		{"--proxy-fast-lane-max-body-bytes", &v.ProxyLaneMaxBodyBytes, defaultLaneMaxBodyBytes},
		{"--proxy-auth-burst", &v.ProxyAuthBurst, defaultProxyAuthBurst}, {"--secret-cache-size", &v.SecretCacheSize, defaultSecretCacheSize},
		{"--connectors-api-auth-burst", &v.APIAuthBurst, defaultAPIAuthBurst},
		{"--registry-token-cache-size", &v.RegistryTokenCacheSize, defaultRegistryTokenCacheSize}, {"--leaf-cache-size", &v.LeafCacheSize, defaultLeafCacheSize},
		{"--transport-cache-size", &v.TransportCacheSize, defaultTransportCacheSize},
		{"--transport-owner-cache-size", &v.OwnerTransportSize, defaultOwnerTransportSize},
		{"--api-transport-cache-size", &v.APITransportSize, defaultAPITransportSize},
		{"--proxy-permission-cache-size", &v.PermissionCacheSize, defaultPermissionCacheSize},
		{"--connector-cache-size", &v.ConnectorCacheSize, defaultConnectorCacheSize},
		{"--api-openapi-cache-size", &v.OpenAPICacheSize, defaultOpenAPICacheSize},
		{"--rego-cache-size", &v.RegoCacheSize, defaultRegoCacheSize}, {"--rego-max-body-bytes", &v.RegoMaxBodyBytes, defaultRegoMaxBodyBytes},
		{"--approval-gating-cache-size", &v.GatingCacheSize, defaultGatingCacheSize},
		{"--accessrequest-max-policy-bytes", &v.MaxPolicyBytes, defaultMaxPolicyBytes},
		{"--check-object-max-bytes", &v.MaxCheckObjectBytes, defaultMaxCheckObjectBytes},
	}); err != nil {
		return err
	}
	if v.ProxyAuthQPS < 0 || v.APIAuthQPS < 0 || v.PublishReviewQPS < 0 {
		return fmt.Errorf("--proxy-auth-qps, --connectors-api-auth-qps and --publish-review-qps-per-namespace must not be negative")
	}
	if v.RefusalEventInterval < 0 || v.RefusalEventQPS < 0 {
		return fmt.Errorf("--proxy-refusal-event-interval and --proxy-refusal-event-qps must not be negative")
	}
	if v.RefusalEventInterval == 0 {
		v.RefusalEventInterval = defaultRefusalEventInterval
	}
	// 0 is a setting of its own for these: decisions not kept, kept for their whole TTL; a
	// missing Connector not remembered.
	for name, d := range map[string]time.Duration{"--proxy-permission-ttl": v.ProxyPermissionTTL, "--proxy-permission-settle": v.ProxyPermissionSettle,
		"--connector-missing-ttl": v.ConnectorMissingTTL} {
		if d < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	switch {
	case v.RegoTimeout < 0:
		return fmt.Errorf("--rego-eval-timeout must not be negative")
	case v.RegoTimeout == 0:
		v.RegoTimeout = defaultRegoTimeout
	}
	if err := orDefaults([]defaulted[time.Duration]{
		{"--proxy-tunnel-max-lifetime", &v.TunnelLifetime, defaultTunnelLifetime},
		{"--proxy-upgrade-recheck-interval", &v.UpgradeRecheck, defaultUpgradeRecheck},
		{"--proxy-answer-recheck-interval", &v.AnswerRecheck, defaultAnswerRecheck},
		{"--proxy-read-header-timeout", &v.ProxyReadHeaderTimeout, defaultReadHeaderTimeout},
		{"--proxy-idle-timeout", &v.ProxyIdleTimeout, defaultClientIdleTimeout},
		{"--proxy-upstream-idle-timeout", &v.ProxyUpstreamIdleTimeout, defaultUpstreamIdleTimeout},
	}); err != nil {
		return err
	}
	if v.ConnectorIdle <= 0 {
		v.ConnectorIdle = defaultConnectorIdle
	}
	if v.AccessRequestIdle <= 0 {
		v.AccessRequestIdle = defaultAccessRequestIdle
	}
	if v.AccessRequestIdle <= v.ApprovalWait {
		// A waiting publish reads its request only when it changes: its watch must outlive it.
		return fmt.Errorf("--accessrequest-watch-idle-timeout (%v) must be longer than --approval-wait (%v)", v.AccessRequestIdle, v.ApprovalWait)
	}
	if v.ProxyAuthQPS == 0 {
		v.ProxyAuthQPS = defaultProxyAuthQPS
	}
	if v.APIAuthQPS == 0 {
		v.APIAuthQPS = defaultAPIAuthQPS
	}
	return nil
}

// negatedBool is a boolean flag stored negated, so that the Options' zero value means the
// flag's default (true).
type negatedBool struct{ off *bool }

func (b negatedBool) String() string {
	if b.off == nil {
		return "true"
	}
	return strconv.FormatBool(!*b.off)
}

func (b negatedBool) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*b.off = !on
	return nil
}

func (b negatedBool) IsBoolFlag() bool { return true }

// parsePrefix reads an address (a prefix of its full length) or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if addr, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()), nil
	}
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
	}
	return prefix.Masked(), nil
}

// portsFlag defines a flag of comma-separated TCP ports into ports.
func portsFlag(fs *flag.FlagSet, name, usage string, ports *[]string) {
	fs.Func(name, usage, func(v string) error {
		*ports = nil
		for _, port := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(port))
			if err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("%q is not a port", port)
			}
			*ports = append(*ports, strconv.Itoa(n))
		}
		return nil
	})
}

// listFlag defines a flag of comma-separated items, each checked by valid, into dst: unset,
// dst stays nil (the default); set, it holds the items given (none for an empty value).
func listFlag(fs *flag.FlagSet, name, usage string, dst *[]string, valid func(string) error) {
	fs.Func(name, usage, func(v string) error {
		*dst = []string{}
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item == "" {
				continue
			}
			if err := valid(item); err != nil {
				return err
			}
			*dst = append(*dst, item)
		}
		return nil
	})
}
