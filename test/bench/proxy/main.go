// Command proxy benchmarks the Connectors proxy on loopback, side by side in one run, against
// nginx configured to inject the same credential header. The driver runs as its own process
// (bin/connectors-csi, node role: what the DaemonSet runs), so that its CPU time per request
// can be read from /proc and set against nginx's workers'. Each case is driven by two load
// generators, Debian's wrk (C, one thread) and a Go client, at the same keep-alive
// concurrency, for 1 KiB and 1 MiB responses: directly, through the proxy as a reverse and as
// a forward proxy, with Rego generators, through CONNECT (TLS terminated by the proxy) against
// nginx terminating TLS, with enable-connector-proxy-permissions on, and through two bare Go
// relays that check nothing: one with a goroutine per connection (relay.go: the floor a Go
// proxy built on net reaches here) and one of event loops, as nginx is built (epollrelay.go).
// -syscalls adds their system calls per request (syscalls.go). It prints a Markdown table.
// Every request loop is bounded in count and time, and all traffic stays on loopback.
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/test/bench/benchenv"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

var (
	concurrency = flag.Int("c", 32, "concurrent keep-alive connections")
	duration    = flag.Duration("d", 4*time.Second, "time per case (bounded; whole seconds for wrk)")
	maxRequests = flag.Int("n", 400000, "request cap per case (Go generator)")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the driver process, over every case, to this file")
	memProfile  = flag.String("memprofile", "", "write the driver process's allocation profile (since it started) to this file at the end")
	sizes       = flag.String("sizes", "1k,1m", "response sizes to measure (1k, 1m), comma-separated")
	generators  = flag.String("generators", "wrk,go", "load generators (wrk, go), comma-separated")
	only        = flag.String("only", "", "measure only the paths whose name contains one of these, comma-separated (e.g. nginx,registry); one that starts with = names a path whole")
	driverArgs  = flag.String("driver-args", "", "flags added to the driver's, space-separated (e.g. --proxy-fast-lane=false)")
	rounds      = flag.Int("rounds", 3, "rounds of every case, each round in the other order; the table shows medians (a shared machine drifts)")
)

const ns = benchenv.Namespace

func main() {
	flag.Parse()
	if *relayListen != "" {
		fmt.Fprintln(os.Stderr, "relay:", runRelay(*relayListen, *relayUpstream))
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// target is one path to the tool: how each generator reaches it, and whose CPU it costs.
type target struct {
	name string
	// goClient and goURL drive the Go generator; wrk is nil when wrk cannot take this path
	// (a CONNECT tunnel).
	goClient *http.Client
	goURL    func(size string) string
	header   http.Header
	wrk      func(size string) *request
	// baseline names the nginx path this one is compared with.
	baseline string
	// pids are the processes doing the proxying (nil: none, the direct path); driver says
	// they are the driver's, whose counters are read from its metrics.
	pids   func() []int
	driver bool
	// permissions: measured with enable-connector-proxy-permissions on.
	permissions bool
	// body, when not nil, is POSTed (both generators) instead of a GET; chunked sends it so.
	body    []byte
	chunked bool
}

type row struct {
	size, path, generator string
	res                   result
	cpuPerReq             benchenv.CPU
	driver                bool
	allocs, trs, sars     float64
	syscalls              syscallCounts
	sched                 schedCounts
	baseline              string
	// ratio is req/s against the baseline's in the same round (0: no baseline).
	ratio float64
}

func run() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := benchenv.Start(ctx, strings.Fields(*driverArgs)...)
	if err != nil {
		return err
	}
	defer env.Stop()
	up, cp, drv, token := env.Up, env.CP, env.Driver, env.Token
	ngx, err := startNginx(up)
	if err != nil {
		return err
	}
	defer ngx.stop()
	floor, err := startRelay(up, false)
	if err != nil {
		return err
	}
	defer floor.stop()
	loopFloor, err := startRelay(up, true)
	if err != nil {
		return err
	}
	defer loopFloor.stop()
	targets, err := makeTargets(ctx, cp, up, drv, ngx, floors{floor, loopFloor}, token)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "bench-proxy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if *cpuProfile != "" {
		stop := profile(drv.MetricsAddr, *cpuProfile, cases(targets)*max(*rounds, 1))
		defer stop()
	}
	byRound := make([][]row, max(*rounds, 1))
	for _, permissions := range []bool{false, true} {
		if permissions {
			if err := setProxyPermissions(ctx, cp); err != nil {
				return err
			}
		}
		for i := range byRound {
			runs := casesOf(targets, permissions)
			if i%2 == 1 {
				slices.Reverse(runs)
			}
			for _, c := range runs {
				r, ok, err := measure(work, c.tg, c.size, c.gen, drv)
				if err != nil {
					return fmt.Errorf("%s %s %s: %w", c.tg.name, c.size, c.gen, err)
				}
				if ok {
					byRound[i] = append(byRound[i], r)
				}
			}
		}
	}
	rows := medians(byRound)
	printTable(rows, len(byRound))
	if *memProfile != "" {
		return fetch("http://"+drv.MetricsAddr+"/debug/pprof/allocs", *memProfile)
	}
	return nil
}

// fetch writes what url answers to file.
func fetch(url, file string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, res.Body)
	return err
}

// postBody is what the POST rows send.
var postBody = bytes.Repeat([]byte("0032want 0123456789abcdef0123456789abcdef01234567\n"), 512/50+1)[:512]

// mediumBody is what the middle POST rows send: larger than the fast lane's buffer, within
// what it reads out whole.
var mediumBody = bytes.Repeat([]byte("0123456789abcdef"), (32<<10)/16)

// uploadBody is what the upload rows POST: a pack of a small push, or a layer's chunk.
var uploadBody = bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)

// makeTargets is every path measured. The proxy's paths wait until the driver serves them.
func makeTargets(ctx context.Context, cp *controlplane.ControlPlane, up *benchenv.Upstream, drv *benchenv.DriverProcess, ngx *nginxServer, floor floors, token string) ([]target, error) {
	plain := func(p func(*http.Request) (*url.URL, error), roots *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: p, MaxIdleConnsPerHost: *concurrency, DisableCompression: true, TLSClientConfig: roots}}
	}
	fwd, _ := url.Parse("http://" + drv.ProxyAddr)
	fwd.User = url.UserPassword(ns+"/tool", token)
	fwdTLS, _ := url.Parse("http://" + drv.ProxyAddr)
	fwdTLS.User = url.UserPassword(ns+"/tool-tls", token)
	bearer := http.Header{"Authorization": {"Bearer " + token}}
	privateToken := http.Header{"Private-Token": {token}}
	_, proxyPort, _ := net.SplitHostPort(drv.ProxyAddr)
	ownHost := http.Header{"Authorization": bearer["Authorization"], "Host": {"c-tool." + ns + ".svc.cluster.local:" + proxyPort}}
	reverse := func(connector string) func(string) string {
		return func(s string) string {
			return "http://" + drv.ProxyAddr + "/namespaces/" + ns + "/connectors/" + connector + "/" + s
		}
	}
	reverseWrk := func(connector string, header http.Header) func(string) *request {
		return func(s string) *request {
			return &request{connect: "http://" + drv.ProxyAddr, path: "/namespaces/" + ns + "/connectors/" + connector + "/" + s, header: header}
		}
	}
	fwdOCI, _ := url.Parse("http://" + drv.ProxyAddr)
	fwdOCI.User = url.UserPassword(ns+"/tool-oci", token)
	forwardWrk := func(connector string, path func(string) string) func(string) *request {
		return func(s string) *request {
			return &request{connect: "http://" + drv.ProxyAddr, path: up.URL + "/" + path(s),
				header: http.Header{"Proxy-Authorization": {basicOf(ns+"/"+connector, token)}}}
		}
	}
	blob := func(s string) string { return "v2/team/app/blobs/" + s }
	// The first CONNECT makes the proxy's CA; trust it from then on.
	insecure := plain(http.ProxyURL(fwdTLS), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only to make the CA
	if err := benchenv.WaitReady(insecure, []string{up.TLSURL + "/1k"}, nil); err != nil {
		return nil, err
	}
	roots, err := benchenv.ProxyCA(ctx, cp)
	if err != nil {
		return nil, err
	}
	nginxRoots := tlsRoots(ngx.caPEM)
	targets := []target{
		// direct's CPU is this process's: the Go upstream serving it, a Go HTTP server's own
		// cost per request (with the Go generator, the generator's too).
		{name: "direct", goClient: plain(nil, nil), goURL: func(s string) string { return up.URL + "/" + s },
			header: http.Header{"Authorization": {benchenv.BasicCredential()}}, pids: func() []int { return []int{os.Getpid()} },
			wrk: func(s string) *request {
				return &request{connect: up.URL, path: "/" + s, header: http.Header{"Authorization": {benchenv.BasicCredential()}}}
			}},
		{name: "nginx (header-injecting reverse proxy)", goClient: plain(nil, nil), goURL: func(s string) string { return "http://" + ngx.addr + "/" + s },
			wrk:  func(s string) *request { return &request{connect: "http://" + ngx.addr, path: "/" + s} },
			pids: ngx.pids},
		floor.goroutines.target("Go relay (no checks: the floor)", plain(nil, nil)),
		floor.eventLoop.target("Go relay, event loops (no checks: nginx's model)", plain(nil, nil)),
		{name: "connectors proxy (reverse)", goClient: plain(nil, nil), goURL: reverse("tool"), header: bearer, wrk: reverseWrk("tool", bearer),
			baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (forward)", goClient: plain(http.ProxyURL(fwd), nil), goURL: func(s string) string { return up.URL + "/" + s },
			wrk: forwardWrk("tool", func(s string) string { return s }), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		// The path of an npm scoped package (@scope%2fname) or a GitLab project (group%2Fproject):
		// one with an escape ("/%31k" is the upstream's "/1k").
		{name: "connectors proxy (forward, a path with an escape)", goClient: plain(http.ProxyURL(fwd), nil), goURL: func(s string) string { return up.URL + "/" + escapeFirst(s) },
			wrk: forwardWrk("tool", escapeFirst), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		// An image's blobs, the token of the registry's token service (fetched once, kept).
		{name: "connectors proxy (forward, registry token flow)", goClient: plain(http.ProxyURL(fwdOCI), nil), goURL: func(s string) string { return up.URL + "/" + blob(s) },
			wrk: forwardWrk("tool-oci", blob), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, Rego generator of the Secret)", goClient: plain(nil, nil), goURL: reverse("tool-rego"), header: bearer,
			wrk: reverseWrk("tool-rego", bearer), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, Rego generator by path, as GitHub's)", goClient: plain(nil, nil), goURL: reverse("tool-rego-path"), header: bearer,
			wrk: reverseWrk("tool-rego-path", bearer), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, Rego generator reading a header)", goClient: plain(nil, nil), goURL: reverse("tool-rego-header"), header: bearer,
			wrk: reverseWrk("tool-rego-header", bearer), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, Rego generator reading the query)", goClient: plain(nil, nil), goURL: reverse("tool-rego-query"), header: bearer,
			wrk: reverseWrk("tool-rego-query", bearer), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, Rego generator reading the headers whole: per request)", goClient: plain(nil, nil), goURL: reverse("tool-rego-request"), header: bearer,
			wrk: reverseWrk("tool-rego-request", bearer), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, by the Connector's own host)", goClient: plain(nil, nil), goURL: func(s string) string { return "http://" + drv.ProxyAddr + "/" + s },
			header: ownHost, wrk: func(s string) *request {
				return &request{connect: "http://" + drv.ProxyAddr, path: "/" + s, header: ownHost}
			},
			baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, token in PRIVATE-TOKEN: GitLab's authExtractor)", goClient: plain(nil, nil), goURL: reverse("tool-pt"), header: privateToken,
			wrk: reverseWrk("tool-pt", privateToken), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true},
		{name: "nginx (TLS in, proxy_pass https://)", goClient: plain(nil, nginxRoots), goURL: func(s string) string { return "https://" + ngx.tlsAddr + "/" + s },
			wrk:  func(s string) *request { return &request{connect: "https://" + ngx.tlsAddr, path: "/" + s} },
			pids: ngx.pids},
		{name: "connectors proxy (CONNECT, TLS terminated by the proxy)", goClient: plain(http.ProxyURL(fwdTLS), &tls.Config{RootCAs: roots}),
			goURL: func(s string) string { return up.TLSURL + "/" + s }, baseline: "nginx (TLS in, proxy_pass https://)", pids: drv.PIDs, driver: true},
		{name: "nginx (proxy_pass https://)", goClient: plain(nil, nil), goURL: func(s string) string { return "http://" + ngx.toTLSAddr + "/" + s },
			wrk:  func(s string) *request { return &request{connect: "http://" + ngx.toTLSAddr, path: "/" + s} },
			pids: ngx.pids},
		{name: "connectors proxy (reverse, https tool)", goClient: plain(nil, nil), goURL: reverse("tool-tls"), header: bearer,
			wrk: reverseWrk("tool-tls", bearer), baseline: "nginx (proxy_pass https://)", pids: drv.PIDs, driver: true},
		{name: "connectors proxy (reverse, enable-connector-proxy-permissions)", goClient: plain(nil, nil), goURL: reverse("tool"), header: bearer,
			wrk: reverseWrk("tool", bearer), baseline: "nginx (header-injecting reverse proxy)", pids: drv.PIDs, driver: true, permissions: true},
	}
	// POSTs of a small body, as git's upload-pack and receive-pack requests or a registry's
	// manifest PUTs are, answered with the size's body; of one larger than the fast lane's
	// 4 KiB buffer that it reads out whole (a manifest list, a pom, a small push); and uploads
	// (a push's pack, a layer) over --proxy-fast-lane-max-body-bytes, which net/http's server
	// and ReverseProxy stream; and uploads sent chunked (a push's pack over git's postBuffer, a
	// layer streamed by PATCH). nginx streams the larger ones (proxy_request_buffering off, as in
	// front of a registry).
	for _, post := range []struct {
		label, nginxPath string
		body             []byte
		chunked          bool
	}{{"512 B", "/", postBody, false}, {"32 KiB", "/upload/", mediumBody, false}, {"1 MiB", "/upload/", uploadBody, false},
		{"1 MiB, chunked", "/upload/", uploadBody, true}} {
		baseline := "nginx (header-injecting reverse proxy): POST of " + post.label
		nginxURL := "http://" + ngx.addr + post.nginxPath
		targets = append(targets,
			target{name: baseline, goClient: plain(nil, nil), goURL: func(s string) string { return nginxURL + s },
				wrk:  func(s string) *request { return &request{connect: "http://" + ngx.addr, path: post.nginxPath + s} },
				pids: ngx.pids, body: post.body, chunked: post.chunked},
			target{name: "connectors proxy (reverse): POST of " + post.label, goClient: plain(nil, nil), goURL: reverse("tool"), header: bearer,
				wrk: reverseWrk("tool", bearer), baseline: baseline, pids: drv.PIDs, driver: true, body: post.body, chunked: post.chunked},
			target{name: "connectors proxy (forward): POST of " + post.label, goClient: plain(http.ProxyURL(fwd), nil), goURL: func(s string) string { return up.URL + "/" + s },
				wrk: forwardWrk("tool", func(s string) string { return s }), baseline: baseline, pids: drv.PIDs, driver: true, body: post.body, chunked: post.chunked})
	}
	// One request per connection (Connection: close), as one-shot clients send them (curl in a
	// pipeline's step, a webhook): each request is its connection's first.
	for _, name := range []string{"nginx (header-injecting reverse proxy)", "connectors proxy (reverse)", "connectors proxy (forward)"} {
		targets = append(targets, oneShot(targets[slices.IndexFunc(targets, func(tg target) bool { return tg.name == name })]))
	}
	for _, tg := range targets {
		if err := benchenv.WaitReady(tg.goClient, []string{tg.goURL("1k")}, tg.header); err != nil {
			return nil, fmt.Errorf("%s: %w", tg.name, err)
		}
	}
	return targets, nil
}

// oneShot is tg with a new connection for each request.
func oneShot(tg target) target {
	const suffix = ": a new connection per request"
	tg.name += suffix
	if tg.baseline != "" {
		tg.baseline += suffix
	}
	tr := tg.goClient.Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	tg.goClient = &http.Client{Transport: tr}
	wrk := tg.wrk
	tg.wrk = func(size string) *request {
		r := *wrk(size)
		r.header = r.header.Clone()
		if r.header == nil {
			r.header = http.Header{}
		}
		r.header.Set("Connection", "close")
		return &r
	}
	return tg
}

// measure runs one case with one generator and reads the proxying processes' CPU time and,
// for the driver, its allocations and review round trips around it. ok is false when the
// generator cannot take the path.
func measure(work string, tg target, size, gen string, drv *benchenv.DriverProcess) (r row, ok bool, err error) {
	r = row{size: size, path: tg.name, generator: gen, driver: tg.driver, baseline: tg.baseline}
	if gen == "wrk" && tg.wrk == nil {
		return r, false, nil
	}
	var pids []int
	if tg.pids != nil {
		pids = tg.pids()
	}
	var c0, c1 benchenv.Counters
	if tg.driver {
		if c0, err = benchenv.Scrape(drv.MetricsAddr); err != nil {
			return r, false, err
		}
	}
	cpu0, err := benchenv.CPUTime(pids...)
	if err != nil {
		return r, false, err
	}
	perf, err := startSyscallCount(work, pids)
	if err != nil {
		return r, false, err
	}
	sched0, err := readSched(pids) // after perf's wait to attach: the machine idles through it
	if err != nil {
		return r, false, err
	}
	switch gen {
	case "wrk":
		req := *tg.wrk(size)
		req.body, req.chunked = tg.body, tg.chunked
		r.res, err = wrkLoad(work, req)
	case "go":
		header := tg.header
		if tg.chunked {
			header = header.Clone()
			if header == nil {
				header = http.Header{}
			}
			header.Set("Transfer-Encoding", "chunked") // benchenv.Send sends the body so
		}
		r.res, err = goLoad(tg.goClient, tg.goURL(size), header, tg.body)
	default:
		return r, false, fmt.Errorf("unknown generator %q", gen)
	}
	if err != nil {
		return r, false, err
	}
	cpu1, err := benchenv.CPUTime(pids...)
	if err != nil {
		return r, false, err
	}
	sched1, err := readSched(pids)
	if err != nil {
		return r, false, err
	}
	r.cpuPerReq, r.sched = cpu1.Sub(cpu0).Per(r.res.n), sched1.per(sched0, r.res.n)
	if r.syscalls, err = perf.stop(r.res.n); err != nil {
		return r, false, err
	}
	if tg.driver {
		if c1, err = benchenv.Scrape(drv.MetricsAddr); err != nil {
			return r, false, err
		}
		n := float64(r.res.n)
		r.allocs, r.trs, r.sars = (c1.Mallocs-c0.Mallocs)/n, (c1.TokenReviews-c0.TokenReviews)*1000/n, (c1.AccessReviews-c0.AccessReviews)*1000/n
	}
	return r, true, nil
}

func printTable(rows []row, rounds int) {
	fmt.Printf("Concurrency %d, keep-alive, %s per case, %d CPUs, medians of %d rounds. CPU/req is the proxying processes' CPU time per request: total (user + system); nginx's counts its master and workers.\n\n",
		*concurrency, *duration, runtime.NumCPU(), rounds)
	header, rule := "| size | path | generator | req/s | × nginx | p50 | p99 | CPU/req | allocs/req | TokenReviews /1000 | SARs /1000 |", "|---|---|---|---|---|---|---|---|---|---|---|"
	if *countSyscalls {
		header, rule = header+" "+syscallsHeader()+" |", rule+"---|"
	}
	if *countSched {
		header, rule = header+" "+schedHeader()+" |", rule+"---|"
	}
	fmt.Println(header)
	fmt.Println(rule)
	for _, r := range rows {
		ratio, cpu, allocs, trs, sars := "—", "—", "—", "—", "—"
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		if r.path != "direct" || r.generator == "wrk" {
			cpu = fmt.Sprintf("%.1f µs (%.1f + %.1f)", micros(r.cpuPerReq.User+r.cpuPerReq.System), micros(r.cpuPerReq.User), micros(r.cpuPerReq.System))
		}
		if r.driver {
			allocs, trs, sars = fmt.Sprintf("%.0f", r.allocs), fmt.Sprintf("%.2f", r.trs), fmt.Sprintf("%.2f", r.sars)
		}
		line := fmt.Sprintf("| 1 %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |", sizeName(r.size), r.path, r.generator,
			r.res.rate, ratio, r.res.p50, r.res.p99, cpu, allocs, trs, sars)
		if *countSyscalls {
			line += " " + r.syscalls.String() + " |"
		}
		if *countSched {
			line += " " + r.sched.String() + " |"
		}
		fmt.Println(line)
	}
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// escapeFirst is s with its first byte percent-encoded.
func escapeFirst(s string) string { return fmt.Sprintf("%%%02X", s[0]) + s[1:] }

func sizeName(s string) string {
	if s == "1k" {
		return "KiB"
	}
	return "MiB"
}

// setProxyPermissions turns enable-connector-proxy-permissions on and waits for the driver to
// see it (its configuration watch; two seconds are plenty on loopback).
func setProxyPermissions(ctx context.Context, cp *controlplane.ControlPlane) error {
	_, err := cp.Kube.CoreV1().ConfigMaps(benchenv.SystemNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: features.ConfigMapName},
		Data: map[string]string{"enable-connector-proxy-permissions": "true"}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	return nil
}

// cases counts the cases the run will measure.
// aCase is one measurement of a round.
type aCase struct {
	tg        target
	size, gen string
}

// chosen tells whether -only lets the path of name be measured.
func chosen(name string) bool {
	for part := range strings.SplitSeq(*only, ",") {
		if whole, exact := strings.CutPrefix(part, "="); exact && name == whole || !exact && strings.Contains(name, part) {
			return true
		}
	}
	return false
}

// casesOf lists a round's cases measured with enable-connector-proxy-permissions as given.
func casesOf(targets []target, permissions bool) []aCase {
	var out []aCase
	for _, size := range strings.Split(*sizes, ",") {
		for _, tg := range targets {
			if tg.permissions != permissions || !chosen(tg.name) {
				continue
			}
			for _, gen := range strings.Split(*generators, ",") {
				if gen != "wrk" || tg.wrk != nil {
					out = append(out, aCase{tg, size, gen})
				}
			}
		}
	}
	return out
}

// medians folds the rounds into one row per case, in the first round's order: the row of the
// median req/s, with the median CPU/req and the median of the rounds' ratios to their own
// round's baseline.
func medians(byRound [][]row) []row {
	for _, rows := range byRound {
		for i := range rows {
			for _, b := range rows {
				if r := &rows[i]; r.baseline != "" && b.path == r.baseline && b.size == r.size && b.generator == r.generator {
					r.ratio = r.res.rate / b.res.rate
				}
			}
		}
	}
	var out []row
	for _, first := range byRound[0] {
		var same []row
		for _, rows := range byRound {
			for _, r := range rows {
				if r.size == first.size && r.path == first.path && r.generator == first.generator {
					same = append(same, r)
				}
			}
		}
		med := medianBy(same, func(r row) float64 { return r.res.rate })
		med.cpuPerReq = medianBy(same, func(r row) float64 { return float64(r.cpuPerReq.User + r.cpuPerReq.System) }).cpuPerReq
		med.syscalls = medianBy(same, func(r row) float64 { return r.syscalls.total }).syscalls
		med.sched = medianBy(same, func(r row) float64 { return float64(r.sched.idle) }).sched
		med.ratio = medianBy(same, func(r row) float64 { return r.ratio }).ratio
		out = append(out, med)
	}
	return out
}

// medianBy is the row of rows whose key is the median (the upper one of an even count).
func medianBy(rows []row, key func(row) float64) row {
	sorted := slices.Clone(rows)
	slices.SortFunc(sorted, func(a, b row) int { return cmp.Compare(key(a), key(b)) })
	return sorted[len(sorted)/2]
}

func cases(targets []target) int {
	return len(casesOf(targets, false)) + len(casesOf(targets, true))
}

// profile fetches a CPU profile of the driver over about the time n cases take; stop waits
// for it.
func profile(metricsAddr, file string, n int) (stop func()) {
	done := make(chan struct{})
	seconds := max(int(float64(n)*(duration.Seconds()+0.3)), 1)
	go func() {
		defer close(done)
		if err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metricsAddr, seconds), file); err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
		}
	}()
	return func() { <-done }
}

func basicOf(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// tlsRoots trusts only the PEM certificates given.
func tlsRoots(pemCerts []byte) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCerts)
	return &tls.Config{RootCAs: pool}
}
