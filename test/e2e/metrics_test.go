package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// series names one Prometheus series as the exposition format writes it: the labels sorted.
func series(name string, labels map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// scrapeUntil scrapes addr until every series of want grew by its value since before (a
// request's metrics are recorded after its answer is written, which the client may read
// first), for at most 10 s, and returns the last scrape: the caller asserts on it.
func scrapeUntil(t *testing.T, addr string, before, want map[string]float64) map[string]float64 {
	t.Helper()
	var after map[string]float64
	kubelet.WaitUntil(10*time.Second, func() bool {
		after = scrape(t, addr)
		for s, w := range want {
			if after[s]-before[s] != w {
				return false
			}
		}
		return true
	})
	return after
}

// scrape reads the driver's /metrics over HTTP, as Prometheus would: series → value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	for sc := bufio.NewScanner(res.Body); sc.Scan(); {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}

// TestProxyMetrics drives the real proxy and reads its /metrics: a request through the reverse
// and the forward proxy counts under its Connector, class, mode and status, with the body bytes;
// a refused request counts with empty Connector labels (a client naming Connectors it may not
// use adds no series); the proxy's reviewer counts its token checks and authorization answers.
func TestProxyMetrics(t *testing.T) {
	tool := startGitServer(t, false)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ctx := context.Background()
	ns := newNamespace(t)
	class := gitClass(t)
	gitConnector(t, ns, "tool", class, tool)
	allowConnectors(t, ns, "builder", "tool")
	_, token := publishedToken(t, env, ns, "client", "tool")
	refs := "/repo.git/info/refs?service=git-upload-pack"
	connectorLabels := func(mode, code string) map[string]string {
		return map[string]string{"connector_namespace": ns, "connector": "tool", "class": class, "mode": mode, "code": code}
	}
	refused := series("connectors_proxy_requests_total", map[string]string{"connector_namespace": "", "connector": "", "class": "", "mode": "reverse", "code": "401"})
	malformed := series("connectors_token_authentications_total", map[string]string{"reviewer": "proxy", "result": "malformed"})
	before := scrape(t, metricsAddr)
	// Publish failures' series exist at 0 before any failure, so that rate() sees the first.
	internal := series("connectors_csi_rpc_duration_seconds_count", map[string]string{"method": "/csi.v1.Node/NodePublishVolume", "code": "Internal"})
	if _, ok := before[internal]; !ok {
		t.Errorf("%s is not served before any such failure", internal)
	}

	for range 3 {
		if code, body := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool"+refs,
			map[string]string{"Authorization": "Bearer " + token})); code != http.StatusOK {
			t.Fatalf("reverse: status %d %s", code, body)
		}
	}
	if code, body := do(t, forwardClient(env.proxyURL, ns+"/tool", token), newRequest(t, "GET", tool.URL+refs, nil)); code != http.StatusOK {
		t.Fatalf("forward: status %d %s", code, body)
	}
	const bogus = "no-such-connector-for-metrics"
	if code, _ := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/"+bogus+refs,
		map[string]string{"Authorization": "Bearer not-a-token"})); code != http.StatusUnauthorized {
		t.Fatalf("a bad token: status %d, want 401", code)
	}

	reverseDurations := `connectors_proxy_request_duration_seconds_count{mode="reverse"}`
	grew := map[string]float64{
		series("connectors_proxy_requests_total", connectorLabels("reverse", "200")): 3,
		series("connectors_proxy_requests_total", connectorLabels("forward", "200")): 1,
		refused:          1,
		malformed:        1,
		reverseDurations: 4,
	}
	after := scrapeUntil(t, metricsAddr, before, grew)
	for s, want := range grew {
		if got := after[s] - before[s]; got != want {
			t.Errorf("%s grew by %v, want %v", s, got, want)
		}
	}
	if got := after[series("connectors_proxy_response_bytes_total", map[string]string{"connector_namespace": ns, "connector": "tool", "mode": "reverse"})]; got <= 0 {
		t.Errorf("no response bytes counted for the reverse requests (%v)", got)
	}
	var answered float64
	for s, v := range after {
		if strings.HasPrefix(s, "connectors_authorization_decisions_total{") && strings.Contains(s, `reviewer="proxy"`) && strings.Contains(s, `decision="allow"`) {
			answered += v - before[s]
		}
		if strings.Contains(s, bogus) {
			t.Errorf("a refused request added the series %s", s)
		}
	}
	// controller-runtime's registry is served too: the API requests by verb and code.
	var apiRequests float64
	for s, v := range after {
		if strings.HasPrefix(s, "rest_client_requests_total{") && strings.Contains(s, `method="POST"`) && strings.Contains(s, `code="201"`) {
			apiRequests += v
		}
	}
	if apiRequests == 0 {
		t.Error("no rest_client_requests_total{method=POST,code=201} (the reviews the driver created)")
	}
	// The three reverse requests share one keep-alive connection, whose route the fast lane
	// keeps for a second (laneMemo): one answer for them, one for the forward request.
	if answered < 2 {
		t.Errorf("the proxy's reviewer counted %v allowed authorization answers, want at least 2 (one per connection's route)", answered)
	}

	// The Connector deleted: its series leave /metrics (the node watches it, so it sees that).
	if err := cp.Client.Delete(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tool"}}); err != nil {
		t.Fatal(err)
	}
	hasSeries := func() bool {
		for s := range scrape(t, metricsAddr) {
			if strings.Contains(s, `connector_namespace="`+ns+`"`) {
				return true
			}
		}
		return false
	}
	if !kubelet.WaitUntil(20*time.Second, func() bool { return !hasSeries() }) {
		t.Error("the deleted Connector's series are still served")
	}
}

// gathered sums the samples of the in-process driver's metric name whose labels include want
// (a histogram's: its sample count), from the default registry /metrics serves.
func gathered(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
