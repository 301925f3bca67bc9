package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// metricsReader is the ServiceAccount deploy/monitoring/metrics-reader.yaml makes and lets get
// /metrics.
const metricsReader = "connectors-csi-metrics-reader"

// applyMetricsReader applies deploy/monitoring/metrics-reader.yaml as a user would and returns
// a token of its ServiceAccount. The envtest API server runs no token controller to fill the
// file's token Secret, so the token is requested (the real-node lane reads the Secret's).
func applyMetricsReader(t *testing.T) string {
	t.Helper()
	file := filepath.Join(controlplane.RepoRoot(), "deploy", "monitoring", "metrics-reader.yaml")
	if out, err := cp.Kubectl(nil, "apply", "--server-side", "-f", file); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tr, err := cp.Kube.CoreV1().ServiceAccounts(systemNS).CreateToken(context.Background(), metricsReader,
		&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// metricsClient reads a metrics listener over TLS without verifying its certificate, which the
// driver makes itself at start (as the PodMonitor's insecureSkipVerify).
var metricsClient = &http.Client{Timeout: 10 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed by design

// getMetricsPath GETs path of the metrics listener at addr over TLS, with token unless empty.
func getMetricsPath(t *testing.T, addr, path, token string) (code int, body string, challenge string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := metricsClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header.Get("WWW-Authenticate")
}

// TestMetricsAreGuarded: the node as deployed (its RBAC, --metrics-auth's default) serves its
// metrics listener over TLS (and so does the controller), and /metrics, which names every tenant's Connectors and their
// traffic, only to a user RBAC lets get it: deploy/monitoring/metrics-reader.yaml's
// ServiceAccount. No token and a made-up one are 401 (the made-up ones cost no TokenReview), a
// tenant's ServiceAccount is 403; the profiles need their own grant; /healthz and /readyz stay
// open, as kubelet probes them; plain HTTP reads nothing.
func TestMetricsAreGuarded(t *testing.T) {
	addr, controllerAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
	listeners := []string{addr, controllerAddr} // the node's options come first, then the controller's
	startDeployedDrivers(t, func(o *driver.Options) {
		o.MetricsListen, o.MetricsAuth, o.Profiling, listeners = listeners[0], driver.MetricsAuthDelegated, true, listeners[1:]
	})
	reader := applyMetricsReader(t)
	// The controller's listener asks as its own identity, with its own RBAC.
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		code, body, _ := getMetricsPath(t, controllerAddr, "/metrics", reader)
		return code == http.StatusOK && strings.Contains(body, "\ngo_goroutines ")
	}) {
		code, body, _ := getMetricsPath(t, controllerAddr, "/metrics", reader)
		t.Errorf("the controller's /metrics with the reader's token: %d %.300q, want 200 and its metrics", code, body)
	}
	if code, _, _ := getMetricsPath(t, controllerAddr, "/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("the controller's /metrics without a token: %d, want 401", code)
	}
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		code, _, _ := getMetricsPath(t, addr, "/readyz", "")
		return code == http.StatusOK
	}) {
		t.Fatal("/readyz without a token never answered 200")
	}
	if code, body, _ := getMetricsPath(t, addr, "/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz without a token: %d %q, want 200", code, body)
	}

	code, body, _ := getMetricsPath(t, addr, "/metrics", reader)
	if code != http.StatusOK || !strings.Contains(body, "\ngo_goroutines ") {
		t.Fatalf("/metrics with the reader's token: %d, want 200 and the driver's metrics:\n%.500s", code, body)
	}

	tenantNS := newNamespace(t)
	since := time.Now()
	for _, c := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/metrics", "", http.StatusUnauthorized},
		{"not a JWT", "/metrics", "secret", http.StatusUnauthorized},
		{"a tenant's ServiceAccount", "/metrics", apiToken(t, tenantNS, "builder"), http.StatusForbidden},
		{"the reader, at the profiles", "/debug/pprof/", reader, http.StatusForbidden},
	} {
		code, body, challenge := getMetricsPath(t, addr, c.path, c.token)
		if code != c.want || strings.Contains(body, "go_goroutines") || strings.Contains(body, "goroutine profile") {
			t.Errorf("%s: GET %s = %d %q, want %d and nothing of the driver's", c.name, c.path, code, body, c.want)
		}
		if (code == http.StatusUnauthorized) != (challenge != "") {
			t.Errorf("%s: %d with WWW-Authenticate %q: a 401 (and only a 401) names the scheme", c.name, code, challenge)
		}
	}
	if reviews := nodeCreates(t, "tokenreviews", since); len(reviews) != 1 {
		t.Errorf("no token, a non-JWT and a tenant's token cost %d TokenReviews, want one (the tenant's)", len(reviews))
	}

	// Made-up tokens, as anyone who reaches the port can send: refused, and no review sent.
	since = time.Now()
	for i, token := range forgedTokens(t, 20, "system:serviceaccount:"+systemNS+":"+metricsReader, "https://kubernetes.default.svc") {
		if code, body, _ := getMetricsPath(t, addr, "/metrics", token); code != http.StatusUnauthorized {
			t.Fatalf("made-up token %d: %d %q, want 401", i, code, body)
		}
	}
	if reviews := nodeCreates(t, "tokenreviews", since); len(reviews) != 0 {
		t.Errorf("20 made-up tokens cost %d TokenReviews, want none", len(reviews))
	}

	// Plain HTTP gets the TLS server's refusal, not the metrics.
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "go_goroutines") {
		t.Errorf("/metrics over plain HTTP: %d %q, want 400 from the TLS server", res.StatusCode, b)
	}
}
