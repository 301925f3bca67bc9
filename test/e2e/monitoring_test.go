package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// monitoringRules reads deploy/monitoring/prometheusrule.yaml and returns its spec (the rule
// groups) as a Prometheus rule file.
func monitoringRules(t *testing.T) []byte {
	t.Helper()
	var rule struct {
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	b, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "deploy", "monitoring", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rule); err != nil || len(rule.Spec.Groups) == 0 {
		t.Fatalf("deploy/monitoring/prometheusrule.yaml: no rule groups (%v)", err)
	}
	out, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requirePrometheus fails the test, naming the install step, when Debian's prometheus is missing.
func requirePrometheus(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"prometheus", "promtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: run hack/tools.sh (hack/tools/prometheus.sh)", bin)
		}
	}
}

// TestMonitoringRules runs Debian's real Prometheus against the driver's /metrics with the rules
// of deploy/monitoring (promtool checks them first), causes the failures they are about —
// requests through a Connector whose tool is down (502), a publish the ServiceAccount may not
// make (PermissionDenied), that Connector not Ready, an approval-gated Pod's AccessRequest
// pending — and asserts through Prometheus's HTTP API that those alerts fire and the others
// (auth unavailable, no controller leader) do not. The test shortens what only waits: every
// rule's `for` to 0s, the pending threshold from an hour to a second. Every query of the Grafana
// dashboard must evaluate too.
func TestMonitoringRules(t *testing.T) {
	requirePrometheus(t)
	dir := t.TempDir()
	rules := string(monitoringRules(t))
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesFile, rules)
	if out, err := exec.Command("promtool", "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules deploy/monitoring/prometheusrule.yaml: %v\n%s", err, out)
	}
	for _, change := range [][2]string{{"connectors_accessrequest_oldest_pending_seconds > 3600", "connectors_accessrequest_oldest_pending_seconds > 1"}} {
		if !strings.Contains(rules, change[0]) {
			t.Fatalf("the rules no longer contain %q", change[0])
		}
		rules = strings.ReplaceAll(rules, change[0], change[1])
	}
	for _, d := range []string{"5m", "10m", "15m"} {
		rules = strings.ReplaceAll(rules, "for: "+d, "for: 0s")
	}
	writeFile(t, rulesFile, rules)

	// The node and the controller run in this process and share its registry: the node's
	// metrics listener serves both, as each Pod's would serve its own.
	metricsAddr, first := freeLoopbackAddr(t), true
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) {
		if first { // the node role's options (the controller's come second), as deployed
			o.MetricsListen, o.MetricsAuth, first = metricsAddr, driver.MetricsAuthDelegated, false
		}
	})
	// Prometheus scrapes as the PodMonitor has it: over TLS, with the reader's token.
	tokenFile := filepath.Join(dir, "reader-token")
	writeFile(t, tokenFile, applyMetricsReader(t))
	ctx := context.Background()
	ns := newNamespace(t)
	class := gitClass(t)
	tool, down := startGitServer(t, false), startGitServer(t, false)
	gitConnector(t, ns, "gated", class, tool)
	gitConnector(t, ns, "down", class, down)
	gitConnector(t, ns, "forbidden", class, tool)
	down.Close()
	allowConnectors(t, ns, "builder", "gated", "down")
	gateByApprovalTask(t, ns, "gate", "gated")
	gated := pipelineRunPod(t, env.kubelet, ns, "run-1", "promote", map[string]string{"connectors": "gated"})
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		return status.Code(env.kubelet.Publish(ctx, gated, "connectors")) == codes.Unavailable
	}) {
		t.Fatal("the gated Pod's publish is not waiting for its AccessRequest")
	}
	forbidden := podWithVolume(t, env.kubelet, ns, "forbidden", map[string]string{"connectors": "forbidden"}, nil)
	if err := env.kubelet.Publish(ctx, forbidden, "connectors"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("publish of a Connector the ServiceAccount may not get: %v, want PermissionDenied", err)
	}
	client := podWithVolume(t, env.kubelet, ns, "client", map[string]string{"connectors": "down"}, nil)
	grantPodProxy(t, ns, client.Name, "down") // approval's flags want connectors/proxy too
	if err := env.kubelet.Publish(ctx, client, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(ctx, client, "connectors") })
	token := visibleFiles(t, env.kubelet.TargetPath(client, "connectors"))["context.token"]
	stop := make(chan struct{})
	defer close(stop)
	// All through the test, as in a cluster: a client of the Connector whose tool is down, and
	// kubelet retrying the publish it may not make (a rate needs failures after the first scrape).
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			req, _ := http.NewRequest("GET", env.proxyURL+"/namespaces/"+ns+"/connectors/down/repo.git/info/refs", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if res, err := noRedirects.Do(req); err == nil {
				res.Body.Close()
			}
			_ = env.kubelet.Publish(ctx, forbidden, "connectors")
		}
	}()

	prom := startPrometheus(t, dir, metricsAddr, rulesFile, tokenFile)
	want := []string{"ConnectorsProxyErrors", "ConnectorsPublishesFailing", "ConnectorNotReady", "ConnectorsAccessRequestPendingTooLong"}
	var firing []string
	if !kubelet.WaitUntil(90*time.Second, func() bool {
		firing = prom.firing(t)
		return !slices.ContainsFunc(want, func(a string) bool { return !slices.Contains(firing, a) })
	}) {
		t.Fatalf("firing alerts %v, want at least %v\n--- targets ---\n%s", firing, want, prom.get(t, "/api/v1/targets"))
	}
	for _, quiet := range []string{"ConnectorsAuthUnavailable", "ConnectorsControllerLeaderAbsent"} {
		if slices.Contains(firing, quiet) {
			t.Errorf("%s fires, but nothing in the test causes it", quiet)
		}
	}
	checkDashboard(t, prom)
}

// prometheusServer is a running Prometheus and its HTTP API's address.
type prometheusServer struct{ url string }

// startPrometheus runs Debian's prometheus, scraping target every second (over TLS, not
// verified, with the bearer token in tokenFile, as deploy/monitoring/podmonitor.yaml does) and
// evaluating rulesFile every second, until the test ends.
func startPrometheus(t *testing.T, dir, target, rulesFile, tokenFile string) *prometheusServer {
	t.Helper()
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: connectors-csi
    scheme: https
    tls_config: {insecure_skip_verify: true}
    authorization: {type: Bearer, credentials_file: %q}
    static_configs: [{targets: [%q]}]
`, rulesFile, tokenFile, target)
	writeFile(t, filepath.Join(dir, "prometheus.yml"), config)
	addr := freeLoopbackAddr(t)
	log := &syncBuffer{}
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p := &prometheusServer{url: "http://" + addr}
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		res, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}) {
		t.Fatalf("prometheus did not become ready:\n%s", lastLines(log.String(), 30))
	}
	return p
}

// get answers an API path's body.
func (p *prometheusServer) get(t *testing.T, path string) string {
	t.Helper()
	res, err := http.Get(p.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, res.Status, "\n")
	buf := make([]byte, 64<<10)
	n, _ := res.Body.Read(buf)
	b.Write(buf[:n])
	return b.String()
}

// firing lists the alerts Prometheus has firing.
func (p *prometheusServer) firing(t *testing.T) []string {
	t.Helper()
	res, err := http.Get(p.url + "/api/v1/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range body.Data.Alerts {
		if a.State == "firing" && !slices.Contains(out, a.Labels["alertname"]) {
			out = append(out, a.Labels["alertname"])
		}
	}
	slices.Sort(out)
	return out
}

// checkDashboard evaluates every query of deploy/monitoring/dashboard.json in Prometheus.
func checkDashboard(t *testing.T, p *prometheusServer) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "deploy", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard.json has no panels")
	}
	for _, panel := range dash.Panels {
		for _, target := range panel.Targets {
			res, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(target.Expr))
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Status string `json:"status"`
				Error  string `json:"error"`
			}
			err = json.NewDecoder(res.Body).Decode(&body)
			res.Body.Close()
			if err != nil || body.Status != "success" {
				t.Errorf("dashboard panel %q: query %q: %s %s (%v)", panel.Title, target.Expr, body.Status, body.Error, err)
			}
		}
	}
}
