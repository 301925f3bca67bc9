package proxy

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
)

// The proxy's request metrics. A request is labelled with its Connector only once the caller
// was authorized for it and it exists: refusals before that carry empty Connector labels, so a
// client cannot add series by naming Connectors. The series are therefore bounded by the
// Connectors used through this node times the modes and status codes.
var (
	proxyRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_proxy_requests_total",
		Help: "Requests the proxy answered, by Connector (empty when refused before one was authorized), class, mode and HTTP status code.",
	}, []string{"connector_namespace", "connector", "class", "mode", "code"})
	proxyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "connectors_proxy_request_duration_seconds",
		Help:    "Time from a request's arrival to the end of its answer, by mode (for mode tunnel: the CONNECT tunnel's life).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"mode"})
	proxyBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_proxy_response_bytes_total",
		Help: "Bytes of answer bodies the proxy sent to clients, by Connector and mode.",
	}, []string{"connector_namespace", "connector", "mode"})
)

// fastLaneRequests counts the fast lane's work (see FastLane).
var fastLaneRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "connectors_proxy_fast_lane_total",
	Help: "Requests the proxy's fast lane served, through net/http's parsers (outcome served) or with their heads read in place along a remembered route (outcome served_in_place), and client connections it handed to the full HTTP server (outcome handed_over) with their first request it does not take.",
}, []string{"outcome"})

var laneServed, laneServedInPlace = fastLaneRequests.WithLabelValues("served"), fastLaneRequests.WithLabelValues("served_in_place")

// laneBodyBytes is what the fast lane's buffers for bodies read out whole hold (readLarge).
var laneBodyBytes = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "connectors_proxy_fast_lane_body_bytes",
	Help: "Bytes of the buffers the proxy's fast lane holds request bodies in that did not fit in a connection's buffer (at most 128 times --proxy-fast-lane-max-body-bytes; beyond, such requests go to the full HTTP server).",
})

func init() {
	prometheus.MustRegister(proxyRequests, proxyDuration, proxyBytes, fastLaneRequests, laneBodyBytes)
}

// Modes of connectors_proxy_*.
const (
	modeReverse     = "reverse"     // /namespaces/<ns>/connectors/<name>/… or a Connector's own host
	modeForward     = "forward"     // absolute-form http:// request
	modeTunnel      = "tunnel"      // the CONNECT request itself (200: the tunnel opened)
	modeTunnelled   = "tunnelled"   // a request inside an intercepted CONNECT tunnel
	modePassthrough = "passthrough" // forwarded or tunnelled to a host of no Connector
	modeAPI         = "api"         // the Connectors API
)

// statusLabels are the code label's values, made once (strconv allocates above 99): a status
// code net/http knows is its number, another its class (4xx): a tool chooses the codes, and
// every new value would be one more series of each Connector's metrics.
var statusLabels = func() (out [600]string) {
	for i := range out {
		switch {
		case http.StatusText(i) != "":
			out[i] = strconv.Itoa(i)
		case i >= 100:
			out[i] = strconv.Itoa(i/100) + "xx"
		default:
			out[i] = "other"
		}
	}
	return out
}()

func codeLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return "other"
}

// meteredWriter records a request's final status, the body bytes sent and, once send has it,
// its route. It passes Flush and friends on through Unwrap (http.ResponseController, which
// ReverseProxy uses) and implements Hijack for the CONNECT handlers.
type meteredWriter struct {
	http.ResponseWriter
	mode  string
	code  int
	bytes int64
	rt    *route

	// For RefusalEvents: the request, its authenticated caller (whose Pod is looked up only
	// for a refusal, off the path of requests that pass) and the refusal it got, if any.
	r        *http.Request
	caller   user.Info
	refusal  string
	refusals *RefusalEvents
	// handedOver: the fast lane gave the request to the full path, which records it.
	handedOver bool
}

func (m *meteredWriter) WriteHeader(code int) {
	if m.code == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		m.code = code
	}
	m.ResponseWriter.WriteHeader(code)
}

func (m *meteredWriter) Write(b []byte) (int, error) {
	if m.code == 0 {
		m.code = http.StatusOK
	}
	n, err := m.ResponseWriter.Write(b)
	m.bytes += int64(n)
	return n, err
}

func (m *meteredWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// Hijack hands the connection over (a CONNECT tunnel opening: its 200 is written on it).
func (m *meteredWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(m.ResponseWriter).Hijack()
	if err == nil && m.code == 0 {
		m.code = http.StatusOK
	}
	return conn, rw, err
}

// metered wraps w for the request r of mode, and returns the function that records it.
func (p *Proxy) metered(w http.ResponseWriter, r *http.Request, mode string) (*meteredWriter, func()) {
	m := &meteredWriter{ResponseWriter: w, mode: mode, r: r, refusals: p.cfg.Refusals}
	start := time.Now()
	return m, func() { m.record(time.Since(start)) }
}

func (m *meteredWriter) record(elapsed time.Duration) {
	if m.handedOver {
		return
	}
	code := m.code
	if code == 0 { // nothing written: net/http answers 200 with an empty body
		code = http.StatusOK
	}
	recordRequest(m.rt, m.mode, code, m.bytes, elapsed)
	if code == http.StatusForbidden && m.refusal != "" && m.caller != nil {
		if pod, ok := podOfUser(m.caller); ok {
			m.refusals.record(m.r.Context(), pod, m.mode, m.r.Method, code, m.refusal)
		}
	}
}

// recordRequest counts an answered request of mode along rt (nil: refused before one).
func recordRequest(rt *route, mode string, code int, bytes int64, elapsed time.Duration) {
	var m routeMeter
	m.record(rt, mode, code, bytes, elapsed)
}

// routeMeter records the requests of one route and mode: it keeps the series it looked up, so
// that the requests of a remembered route (laneMemo) do not hash the same labels again each
// time. A route is remembered for at most laneMemoTTL: a deleted Connector's requests
// counted meanwhile go to series ForgetConnector already dropped, and are not exported.
type routeMeter struct {
	code            int
	requests, bytes prometheus.Counter
	duration        prometheus.Observer
}

func (m *routeMeter) record(rt *route, mode string, code int, bytes int64, elapsed time.Duration) {
	var ns, name, class string
	if rt != nil {
		ns, name, class = rt.connector.Namespace, rt.connector.Name, rt.connector.Spec.ConnectorClassName
	}
	if m.requests == nil || m.code != code {
		m.code, m.requests = code, proxyRequests.WithLabelValues(ns, name, class, mode, codeLabel(code))
	}
	if m.duration == nil {
		m.duration = proxyDuration.WithLabelValues(mode)
	}
	m.duration.Observe(elapsed.Seconds())
	m.requests.Inc()
	if bytes > 0 {
		if m.bytes == nil {
			m.bytes = proxyBytes.WithLabelValues(ns, name, mode)
		}
		m.bytes.Add(float64(bytes))
	}
}

// ForgetConnector drops a deleted Connector's request and byte series: without it they would
// stay until the process restarts, one set per Connector ever used through this node.
func ForgetConnector(nn types.NamespacedName) {
	labels := prometheus.Labels{"connector_namespace": nn.Namespace, "connector": nn.Name}
	proxyRequests.DeletePartialMatch(labels)
	proxyBytes.DeletePartialMatch(labels)
}

// identified tells w's meter who the authenticated caller is.
func identified(w http.ResponseWriter, u user.Info) {
	if m, ok := w.(*meteredWriter); ok {
		m.caller = u
	}
}

// refused tells w's meter the refusal its request got.
func refused(w http.ResponseWriter, msg string) {
	if m, ok := w.(*meteredWriter); ok {
		m.refusal = msg
	}
}

// routed tells w's meter the route its request took (once authorized).
func routed(w http.ResponseWriter, rt *route) {
	if m, ok := w.(*meteredWriter); ok {
		m.rt = rt
	}
}

// setMode changes the mode w's request is recorded under (a forward request that went
// through pass-through).
func setMode(w http.ResponseWriter, mode string) {
	if m, ok := w.(*meteredWriter); ok {
		m.mode = mode
	}
}
