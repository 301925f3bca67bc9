// Command proxy benchmarks the Connectors proxy on loopback, side by side in one run: direct
// to the upstream, through the proxy as a reverse proxy and as a forward proxy, and through
// nginx configured to inject the same credential header, for 1 KiB and 1 MiB responses with
// keep-alive at a fixed concurrency. It prints a Markdown table: requests/s, p50/p99 latency,
// allocations per proxied request, and TokenReview/SubjectAccessReview round trips per 1000
// requests. Every request loop is bounded in count and time, and all traffic stays on loopback.
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

var (
	concurrency = flag.Int("c", 32, "concurrent keep-alive connections")
	duration    = flag.Duration("d", 4*time.Second, "time per case (bounded)")
	maxRequests = flag.Int("n", 200000, "request cap per case")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the run (driver included) to this file")
	memProfile  = flag.String("memprofile", "", "write an allocation profile of the run to this file")
	sizes       = flag.String("sizes", "1k,1m", "response sizes to measure (1k, 1m), comma-separated")
)

const (
	ns        = "bench"
	toolUser  = "bench-bot"
	toolPass  = "bench-password"
	namespace = "connectors-system"
)

func main() {
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if *memProfile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			if f, err := os.Create(*memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if err := run(); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	upstream, err := startUpstream()
	if err != nil {
		return err
	}
	cp, err := controlplane.Start()
	if err != nil {
		return err
	}
	defer cp.Stop()
	token, proxyAddr, err := startDriver(ctx, cp, upstream)
	if err != nil {
		return err
	}
	cred := "Basic " + base64.StdEncoding.EncodeToString([]byte(toolUser+":"+toolPass))
	type target struct {
		name   string
		client *http.Client
		url    func(size string) string
		header http.Header
		proxy  bool
	}
	direct := func(p func(*http.Request) (*url.URL, error)) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: p, MaxIdleConnsPerHost: *concurrency, DisableCompression: true}}
	}
	fwd, _ := url.Parse("http://" + proxyAddr)
	fwd.User = url.UserPassword(ns+"/tool", token)
	targets := []target{
		{"direct", direct(nil), func(s string) string { return upstream + "/" + s }, http.Header{"Authorization": {cred}}, false},
		{"connectors proxy (reverse)", direct(nil), func(s string) string {
			return "http://" + proxyAddr + "/namespaces/" + ns + "/connectors/tool/" + s
		}, http.Header{"Authorization": {"Bearer " + token}}, true},
		{"connectors proxy (forward)", direct(http.ProxyURL(fwd)), func(s string) string { return upstream + "/" + s }, nil, true},
		// The same Basic credential, computed by Alauda's generator.rego example over an Opaque
		// Secret instead of the built-in injection of a basic-auth Secret.
		{"connectors proxy (reverse, Rego generator of the Secret)", direct(nil), func(s string) string {
			return "http://" + proxyAddr + "/namespaces/" + ns + "/connectors/tool-rego/" + s
		}, http.Header{"Authorization": {"Bearer " + token}}, true},
		{"connectors proxy (reverse, Rego generator reading the request)", direct(nil), func(s string) string {
			return "http://" + proxyAddr + "/namespaces/" + ns + "/connectors/tool-rego-request/" + s
		}, http.Header{"Authorization": {"Bearer " + token}}, true},
	}
	if nginxAddr, stop, err := startNginx(upstream, cred); err == nil {
		defer stop()
		targets = append(targets, target{"nginx (header-injecting reverse proxy)", direct(nil),
			func(s string) string { return "http://" + nginxAddr + "/" + s }, nil, false})
	} else {
		fmt.Fprintln(os.Stderr, "nginx not measured:", err)
	}

	fmt.Printf("Concurrency %d, keep-alive, %s per case, %d CPUs.\n\n", *concurrency, *duration, runtime.NumCPU())
	fmt.Println("| size | path | req/s | × direct | p50 | p99 | allocs/req | TokenReviews /1000 | SARs /1000 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, size := range strings.Split(*sizes, ",") {
		var directRate float64
		for _, tg := range targets {
			tr0, sar0 := access.Reviews()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			res, err := load(tg.client, tg.url(size), tg.header)
			if err != nil {
				return fmt.Errorf("%s %s: %w", tg.name, size, err)
			}
			runtime.ReadMemStats(&m1)
			tr1, sar1 := access.Reviews()
			if tg.name == "direct" {
				directRate = res.rate
			}
			allocs, reviews, sars := "—", "—", "—"
			if tg.proxy {
				// The load generator allocates too; this is an upper bound for the proxy.
				allocs = fmt.Sprintf("%.0f", float64(m1.Mallocs-m0.Mallocs)/float64(res.n))
				reviews = fmt.Sprintf("%.2f", (tr1-tr0)*1000/float64(res.n))
				sars = fmt.Sprintf("%.2f", (sar1-sar0)*1000/float64(res.n))
			}
			fmt.Printf("| %s | %s | %.0f | %.2f | %s | %s | %s | %s | %s |\n", "1"+sizeName(size), tg.name,
				res.rate, res.rate/directRate, res.p50, res.p99, allocs, reviews, sars)
		}
	}
	return nil
}

func sizeName(s string) string {
	if s == "1k" {
		return " KiB"
	}
	return " MiB"
}

type result struct {
	n        int
	rate     float64
	p50, p99 time.Duration
}

// load runs GETs at fixed concurrency until the duration or the request cap is reached.
func load(c *http.Client, u string, h http.Header) (result, error) {
	deadline := time.Now().Add(*duration)
	var count atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, *concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && count.Add(1) <= int64(*maxRequests) {
				req, _ := http.NewRequest(http.MethodGet, u, nil)
				for k, v := range h {
					req.Header[k] = v
				}
				t0 := time.Now()
				res, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if err == nil && res.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return result{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) == 0 {
		return result{}, fmt.Errorf("no request completed")
	}
	q := func(p float64) time.Duration { return all[int(p*float64(len(all)-1))].Round(10 * time.Microsecond) }
	return result{n: len(all), rate: float64(len(all)) / elapsed.Seconds(), p50: q(0.5), p99: q(0.99)}, nil
}

// startUpstream serves 1 KiB and 1 MiB bodies to requests carrying the tool's credential.
func startUpstream() (string, error) {
	bodies := map[string][]byte{"/1k": make([]byte, 1<<10), "/1m": make([]byte, 1<<20)}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(toolUser+":"+toolPass))
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return "", err
	}
	go http.Serve(lis, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		body, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	}))
	return "http://" + lis.Addr().String(), nil
}

// startNginx runs Debian's nginx as a keep-alive reverse proxy that sets the credential header.
func startNginx(upstream, cred string) (string, func(), error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return "", nil, fmt.Errorf("nginx not installed (apt-get install nginx): %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := lis.Addr().String()
	lis.Close()
	dir, err := os.MkdirTemp("", "bench-nginx-")
	if err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s; proxy_temp_path %[2]s; fastcgi_temp_path %[2]s; uwsgi_temp_path %[2]s; scgi_temp_path %[2]s;
  upstream tool { server %[3]s; keepalive 128; }
  server {
    listen %[4]s;
    location / {
      proxy_pass http://tool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "%[5]s";
      proxy_buffering off;
    }
  }
}
`, runtime.NumCPU(), dir, strings.TrimPrefix(upstream, "http://"), addr, cred)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = os.RemoveAll(dir) }
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("nginx did not start")
}

// startDriver runs the driver in this process (so its review counters are readable) with a
// Connector for the upstream and a Pod token allowed to use it.
func startDriver(ctx context.Context, cp *controlplane.ControlPlane, upstream string) (token, proxyAddr string, err error) {
	kube := cp.Kube
	for _, n := range []string{namespace, ns} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return "", "", err
		}
	}
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tool"},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": toolUser, "password": toolPass}}, metav1.CreateOptions{}); err != nil {
		return "", "", err
	}
	if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicAuth", SecretType: v1alpha1.SecretTypeBasicAuth}}}}}); err != nil {
		return "", "", err
	}
	if err := cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "tool", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench", Address: upstream,
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "tool"}}}}); err != nil {
		return "", "", err
	}
	if err := regoConnectors(ctx, cp, upstream); err != nil {
		return "", "", err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "bench-connectors"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: ns}}}); err != nil {
		return "", "", err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "bench-connectors"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors"}, Verbs: []string{"get"}}}}); err != nil {
		return "", "", err
	}
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return "", "", err
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"connectors-csi"}}}, metav1.CreateOptions{})
	if err != nil {
		return "", "", err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	proxyAddr = lis.Addr().String()
	lis.Close()
	dir, err := os.MkdirTemp("", "bench-driver-")
	if err != nil {
		return "", "", err
	}
	ready := make(chan struct{})
	go func() {
		err := driver.Run(ctx, driver.Options{
			Endpoint: "unix://" + filepath.Join(dir, "csi.sock"), NodeID: "bench", DriverName: "connectors-csi",
			Kubeconfig: cp.Kubeconfig, SystemNamespace: namespace, StateDir: dir, ProxyListen: proxyAddr,
			ProxyURL: "http://" + proxyAddr, TokenAudience: "connectors-csi", VolumeSizeLimit: "4Mi",
			KubeAPIQPS: 50, KubeAPIBurst: 100, AuthzAllowTTL: 10 * time.Second, AuthzDenyTTL: 2 * time.Second,
			TokenCacheTTL: 10 * time.Second, SecretCacheTTL: 10 * time.Second, StatusRecheck: time.Hour,
			ApprovalWait: 10 * time.Second, RequestRetention: time.Hour,
			Mounter: nil, UnprivilegedMounts: true, AllowLoopbackDestinations: true,
			ProxyListening: func(string) { close(ready) },
		})
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "driver:", err)
			os.Exit(1)
		}
	}()
	<-ready
	// Wait until the Connector is in the driver's cache and RBAC has settled.
	probe := &http.Client{Timeout: 5 * time.Second}
	var ok [3]bool
	for i := 0; i < 600; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+proxyAddr+"/namespaces/"+ns+"/connectors/"+[]string{"tool", "tool-rego", "tool-rego-request"}[i%3]+"/1k", nil)
		req.Header.Set("Authorization", "Bearer "+tr.Status.Token)
		if res, err := probe.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if ok[i%3] = ok[i%3] || res.StatusCode == http.StatusOK; ok[0] && ok[1] && ok[2] {
				return tr.Status.Token, proxyAddr, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", "", fmt.Errorf("the proxy never served the benchmark Connector")
}

// The generators measured: Alauda's Basic example, which reads only the Secret (its answer is
// kept per Secret version), and the same one made to read the request (evaluated per request).
const (
	basicGenerator = `package proxy
auth = {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}}`
	basicGeneratorPerRequest = `package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if input.request.method != "TRACE"`
)

// regoConnectors are the benchmark Connector again, their Basic credential computed by a
// generator.rego over an Opaque Secret: tool-rego with basicGenerator, tool-rego-request with
// basicGeneratorPerRequest.
func regoConnectors(ctx context.Context, cp *controlplane.ControlPlane, upstream string) error {
	if _, err := cp.Kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tool-rego"},
		Type: corev1.SecretTypeOpaque, StringData: map[string]string{"username": toolUser, "password": toolPass}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for name, generator := range map[string]string{"tool-rego": basicGenerator, "tool-rego-request": basicGeneratorPerRequest} {
		if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench-" + name},
			Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicRego", SecretType: "Opaque",
				Generator: &v1alpha1.RegoPolicy{Rego: generator}}}}}}); err != nil {
			return err
		}
		if err := cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench-" + name, Address: upstream,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicRego", SecretRef: &v1alpha1.SecretRef{Name: "tool-rego"}}}}); err != nil {
			return err
		}
	}
	return nil
}
