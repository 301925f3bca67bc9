package driver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

var rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "connectors_csi_rpc_duration_seconds",
	Help:    "Duration of CSI RPCs by method and gRPC code.",
	Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
}, []string{"method", "code"})

func init() { prometheus.MustRegister(rpcDuration) }

// publishCodes are the codes NodePublishVolume answers with (README, "What a publish does").
// Their series exist from the start, at 0, so that rate() sees a node's first failure of a
// kind too: a series born at 1 has no earlier sample to rise from.
var publishCodes = []codes.Code{codes.OK, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied,
	codes.FailedPrecondition, codes.Unavailable, codes.Internal}

func initPublishSeries() {
	for _, c := range publishCodes {
		rpcDuration.WithLabelValues(csi.Node_NodePublishVolume_FullMethodName, c.String())
	}
}

// observe logs and measures every RPC by method and result code. Requests are never logged:
// they carry the Pod's token.
func observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	code := status.Code(err)
	rpcDuration.WithLabelValues(info.FullMethod, code.String()).Observe(time.Since(start).Seconds())
	if err != nil {
		klog.FromContext(ctx).Info("CSI call failed", "method", info.FullMethod, "code", code.String(), "err", err)
	} else {
		klog.FromContext(ctx).V(4).Info("CSI call", "method", info.FullMethod)
	}
	return resp, err
}

// recovered turns a panic in a CSI call into that call's Internal error, logged with its stack:
// unrecovered, it would end the process, and with it the proxy of every Pod on the node. The
// request is not logged (it carries the Pod's token).
func recovered(ctx context.Context, p any) error {
	klog.FromContext(ctx).Error(fmt.Errorf("panic: %v", p), "CSI call panicked", "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "the driver failed on this call (a panic, in the node's log)")
}

// serveCSI serves the Identity and Node services on a unix socket until ctx is done.
func serveCSI(ctx context.Context, socketPath string, ids csi.IdentityServer, ns csi.NodeServer) error {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o750); err != nil {
		return err
	}
	// A socket left by a previous process would make Listen fail.
	if err := os.Remove(socketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socketPath, err)
	}
	initPublishSeries()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(observe, recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(recovered))))
	csi.RegisterIdentityServer(srv, ids)
	csi.RegisterNodeServer(srv, ns)
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	klog.FromContext(ctx).Info("Serving CSI", "socket", socketPath)
	return srv.Serve(lis)
}

// probeCSI calls the Identity service's Probe over the CSI socket.
func probeCSI(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
	return err
}

// serveProxy serves the proxy listener until ctx is done. The listener is one of the driver's
// own destinations that no Connector may reach; it holds at most --proxy-max-connections
// clients, and headers are bounded by --proxy-max-header-bytes.
func serveProxy(ctx context.Context, o *validated, p *proxy.Proxy, destinations *egress.Policy) error {
	lis, err := listenProxy(o.ProxyListen)
	if err != nil {
		return fmt.Errorf("proxy listen on %s: %w", o.ProxyListen, err)
	}
	destinations.AddListener(lis.Addr())
	srv := newHTTPServer(p)
	srv.MaxHeaderBytes = o.ProxyMaxHeaderBytes
	srv.ReadHeaderTimeout, srv.IdleTimeout = o.ProxyReadHeaderTimeout, o.ProxyIdleTimeout
	clients := limitConnections(lis, o.ProxyMaxConnections)
	if !o.ProxyWithoutFastLane {
		clients = p.FastLane(clients, proxy.LaneLimits{HeaderTimeout: srv.ReadHeaderTimeout, IdleTimeout: srv.IdleTimeout,
			MaxBodyBytes: int64(o.ProxyLaneMaxBodyBytes)})
	}
	return serveHTTP(ctx, clients, srv, "Serving the Connectors proxy", o.ProxyListening)
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
}

// serveHTTP serves srv on lis until ctx is done, then shuts down gracefully.
func serveHTTP(ctx context.Context, lis net.Listener, srv *http.Server, what string, listening func(string)) error {
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	klog.FromContext(ctx).Info(what, "address", lis.Addr().String())
	if listening != nil {
		listening(lis.Addr().String())
	}
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serveMetrics serves /metrics, /healthz and /readyz (and, with profiling, /debug/pprof/)
// until ctx is done, /metrics and the profiles as protect guards them. /healthz is what the livenessprobe sidecar would check: that the CSI
// socket answers a Probe; while starting (waiting for the API server, within its grace), ok.
func serveMetrics(ctx context.Context, lis net.Listener, ready, starting func() bool, csiSocket string, profiling bool,
	protect *metricsProtection) error {
	mux := http.NewServeMux()
	// Ours and client-go's (in the default registry), and controller-runtime's own registry:
	// API requests by verb and code (rest_client_requests_total), reconciles, work queues.
	mux.Handle("/metrics", protect.guard(promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, ctrlmetrics.Registry},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})))
	if profiling {
		mux.Handle("/debug/pprof/", protect.guard(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", protect.guard(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", protect.guard(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", protect.guard(http.HandlerFunc(pprof.Trace)))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if csiSocket == "" { // the controller role serves no CSI socket: alive is healthy
			_, _ = w.Write([]byte("ok"))
			return
		}
		if starting() {
			_, _ = w.Write([]byte("ok: starting, waiting for the API server"))
			return
		}
		if err := probeCSI(r.Context(), csiSocket); err != nil {
			http.Error(w, "CSI socket does not answer: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	if protect.tls != nil {
		lis = tls.NewListener(lis, protect.tls)
	}
	return serveHTTP(ctx, lis, newHTTPServer(mux), "Serving metrics and health", nil)
}

// listenMetrics binds the metrics listener before anything else starts, so that health
// checks answer as soon as the process serves anything; it is one of the driver's own
// destinations, which no Connector may reach.
func listenMetrics(addr string, destinations *egress.Policy) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	destinations.AddListener(lis.Addr())
	return lis, nil
}
