// Command soak holds the real proxy (bin/connectors-csi, node role, the real TokenReview and
// SubjectAccessReview path against envtest) under load for a bounded time, on loopback:
// thousands of keep-alive clients of the reverse proxy, hundreds of CONNECT tunnels to an https
// tool, and the clients a proxy meets on a bad day — slowloris connections that never finish
// their headers, clients that vanish mid-body (an answer's, or their own request's), and a
// tool that stalls mid-answer. Every
// interval it prints throughput, p99 and the driver's goroutines, open file descriptors, heap
// and RSS; at the end it fits a line through each after warm-up and reports its slope: a leak
// shows as a slope.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-connectors/connectors-csi/test/bench/benchenv"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

var (
	duration = flag.Duration("d", 10*time.Minute, "how long the load runs (bounded)")
	interval = flag.Duration("interval", 30*time.Second, "how often the driver's figures are read")
	warmup   = flag.Duration("warmup", time.Minute, "what the slopes leave out at the start")
	clients  = flag.Int("clients", 2000, "keep-alive clients of the reverse proxy, each on its own connection")
	tunnels  = flag.Int("tunnels", 500, "CONNECT tunnels to the https tool, each kept open")
	think    = flag.Duration("think", time.Second, "mean pause between one client's requests")
	loris    = flag.Int("slowloris", 50, "connections that send their headers a byte at a time")
	vanish   = flag.Int("vanishing", 20, "clients that ask for 1 MiB and leave after 10 KiB")
	stalled  = flag.Int("stalled", 20, "clients of a tool that stops mid-answer, who give up after 2 s")
	halfBody = flag.Int("half-body", 20, "clients that send a POST's head and half its body (1 KiB, 32 KiB, or an upload of 1 MiB, of known length or chunked), and leave")
)

const ns = benchenv.Namespace

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is one interval's figures.
type sample struct {
	at                       time.Duration
	requests, errors         int64
	p99                      time.Duration
	goroutines, fds, heapMiB float64
	rssMiB                   float64
}

func run() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := benchenv.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Stop()
	drv := env.Driver
	l := &load{proxy: drv.ProxyAddr, token: env.Token, up: env.Up}
	if err := l.prepare(ctx, env.CP); err != nil {
		return err
	}
	// The load outlasts the last reading by half an interval, so that no reading sees the
	// clients wind down.
	loadCtx, stop := context.WithTimeout(ctx, *duration+*interval/2)
	defer stop()
	var wg sync.WaitGroup
	l.start(loadCtx, &wg)
	fmt.Printf("Soak: %d keep-alive clients (one request per ~%s each), %d CONNECT tunnels, %d slowloris, %d vanishing, %d stalled-tool, %d half-body clients, %s.\n\n",
		*clients, *think, *tunnels, *loris, *vanish, *stalled, *halfBody, *duration)
	fmt.Println("| time | req/s | errors | p99 | goroutines | open fds | heap in use | RSS |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	start := time.Now()
	var samples []sample
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for range int(*duration / *interval) {
		<-ticker.C
		s, err := l.sample(drv, time.Since(start))
		if err != nil {
			return err
		}
		samples = append(samples, s)
		fmt.Printf("| %s | %.0f | %d | %s | %.0f | %.0f | %.1f MiB | %.1f MiB |\n", s.at.Round(time.Second), float64(s.requests)/interval.Seconds(),
			s.errors, s.p99, s.goroutines, s.fds, s.heapMiB, s.rssMiB)
	}
	stop()
	wg.Wait()
	report(samples)
	return nil
}

// load is the soak's clients and what they measured in the current interval.
type load struct {
	proxy, token string
	up           *benchenv.Upstream
	tunnelTLS    *tls.Config

	mu        sync.Mutex
	latencies []time.Duration
	requests  atomic.Int64
	errors    atomic.Int64
}

// prepare waits until the proxy serves the Connectors and reads its CA for the tunnels.
func (l *load) prepare(ctx context.Context, cp *controlplane.ControlPlane) error {
	bearer := http.Header{"Authorization": {"Bearer " + l.token}}
	if err := benchenv.WaitReady(&http.Client{}, []string{l.reverse("tool", "1k")}, bearer); err != nil {
		return err
	}
	insecure := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(l.forward("tool-tls")),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // only to make the proxy's CA
	if err := benchenv.WaitReady(insecure, []string{l.up.TLSURL + "/1k"}, nil); err != nil {
		return err
	}
	roots, err := benchenv.ProxyCA(ctx, cp)
	if err != nil {
		return err
	}
	l.tunnelTLS = &tls.Config{RootCAs: roots}
	return nil
}

func (l *load) reverse(connector, path string) string {
	return "http://" + l.proxy + "/namespaces/" + ns + "/connectors/" + connector + "/" + path
}

func (l *load) forward(connector string) *url.URL {
	u, _ := url.Parse("http://" + l.proxy)
	u.User = url.UserPassword(ns+"/"+connector, l.token)
	return u
}

// start runs every kind of client until ctx ends.
func (l *load) start(ctx context.Context, wg *sync.WaitGroup) {
	spawn := func(n int, f func(context.Context)) {
		for range n {
			wg.Add(1)
			go func() { defer wg.Done(); f(ctx) }()
		}
	}
	spawn(*clients, l.keepAliveClient)
	spawn(*tunnels, l.tunnelClient)
	spawn(*loris, l.slowloris)
	spawn(*vanish, l.vanishingClient)
	spawn(*stalled, l.stalledToolClient)
	spawn(*halfBody, l.halfBodyClient)
}

// pause sleeps about think (uniformly 0.5–1.5×), or until ctx ends; false when it ended.
func pause(ctx context.Context, mean time.Duration) bool {
	t := time.NewTimer(time.Duration(float64(mean) * (0.5 + rand.Float64())))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// get sends one GET and reads the answer whole; the latency counts toward the interval's p99.
func (l *load) get(ctx context.Context, c *http.Client, u string, h http.Header) {
	t0 := time.Now()
	err := benchenv.Get(ctx, c, u, h)
	if ctx.Err() != nil {
		return // the soak ended mid-request
	}
	if err != nil {
		l.errors.Add(1)
		return
	}
	l.requests.Add(1)
	l.mu.Lock()
	l.latencies = append(l.latencies, time.Since(t0))
	l.mu.Unlock()
}

// keepAliveClient is one client of the reverse proxy on one keep-alive connection.
func (l *load) keepAliveClient(ctx context.Context) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}}
	defer c.CloseIdleConnections()
	h := http.Header{"Authorization": {"Bearer " + l.token}}
	for pause(ctx, *think) {
		l.get(ctx, c, l.reverse("tool", "1k"), h)
	}
}

// tunnelClient keeps one CONNECT tunnel (TLS terminated by the proxy) and sends requests in it.
func (l *load) tunnelClient(ctx context.Context) {
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(l.forward("tool-tls")), TLSClientConfig: l.tunnelTLS,
		MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}}
	defer c.CloseIdleConnections()
	for pause(ctx, 2**think) {
		l.get(ctx, c, l.up.TLSURL+"/1k", nil)
	}
}

// slowloris opens a connection and sends a request's headers one byte every few seconds; the
// proxy's header timeout ends it, and it starts over.
func (l *load) slowloris(ctx context.Context) {
	head := "GET " + "/namespaces/" + ns + "/connectors/tool/1k HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " + l.token + "\r\nX-Slow: "
	for ctx.Err() == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", l.proxy)
		if err != nil {
			if !pause(ctx, time.Second) {
				return
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		_, err = conn.Write([]byte(head))
		for err == nil && pause(ctx, 5*time.Second) {
			_, err = conn.Write([]byte("x"))
		}
		stop()
		conn.Close()
	}
}

// vanishingClient asks for 1 MiB, reads 10 KiB and closes its connection.
func (l *load) vanishingClient(ctx context.Context) {
	for pause(ctx, *think) {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.reverse("tool", "1m"), nil)
		req.Header.Set("Authorization", "Bearer "+l.token)
		if res, err := c.Do(req); err == nil {
			_, _ = io.CopyN(io.Discard, res.Body, 10<<10)
			res.Body.Close()
		}
		c.CloseIdleConnections()
	}
}

// halfBodyClient sends a POST's head and half of its body, of 1 KiB, 32 KiB and 1 MiB (of
// known length and chunked) by turns, waits, and closes its connection: the fast lane waits
// for a small body (under the header timeout) before it reads the request, one of 32 KiB in a
// buffer of its own (readLarge); it streams an upload to the tool as it comes, until the
// client leaves (or goes idle past --proxy-idle-timeout).
func (l *load) halfBodyClient(ctx context.Context) {
	head := "POST /namespaces/" + ns + "/connectors/tool/1k HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " + l.token + "\r\n"
	var requests []string
	// Bodies the fast lane reads out whole, and uploads it streams to the tool as they come.
	for _, size := range []int{1 << 10, 32 << 10, 1 << 20} {
		requests = append(requests, head+"Content-Length: "+strconv.Itoa(size)+"\r\n\r\n"+strings.Repeat("x", size/2))
	}
	requests = append(requests, head+"Transfer-Encoding: chunked\r\n\r\n"+strconv.FormatInt(512<<10, 16)+"\r\n"+strings.Repeat("x", 512<<10)+"\r\n")
	for i := 0; pause(ctx, *think); i++ {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", l.proxy)
		if err != nil {
			continue
		}
		_, _ = conn.Write([]byte(requests[i%len(requests)]))
		pause(ctx, *think)
		conn.Close()
	}
}

// stalledToolClient asks for the tool's /stall, which stops mid-answer, and gives up after 2 s.
func (l *load) stalledToolClient(ctx context.Context) {
	c := &http.Client{Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	for pause(ctx, *think) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.reverse("tool", "stall"), nil)
		req.Header.Set("Authorization", "Bearer "+l.token)
		if res, err := c.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
}

// sample reads the driver's figures and takes the interval's client counts.
func (l *load) sample(drv *benchenv.DriverProcess, at time.Duration) (sample, error) {
	m, err := benchenv.ScrapeAll(drv.MetricsAddr)
	if err != nil {
		return sample{}, err
	}
	l.mu.Lock()
	lat := l.latencies
	l.latencies = nil
	l.mu.Unlock()
	slices.Sort(lat)
	s := sample{at: at, requests: l.requests.Swap(0), errors: l.errors.Swap(0),
		goroutines: m["go_goroutines"], fds: m["process_open_fds"],
		heapMiB: m["go_memstats_heap_inuse_bytes"] / (1 << 20), rssMiB: m["process_resident_memory_bytes"] / (1 << 20)}
	if len(lat) > 0 {
		s.p99 = lat[int(0.99*float64(len(lat)-1))].Round(100 * time.Microsecond)
	}
	return s, nil
}

// report fits a least-squares line through each figure after warm-up and prints its slope
// per minute and how much it would add over the measured time.
func report(samples []sample) {
	var kept []sample
	for _, s := range samples {
		if s.at >= *warmup {
			kept = append(kept, s)
		}
	}
	if len(kept) < 3 {
		fmt.Println("\nToo few samples after warm-up for a slope.")
		return
	}
	span := (kept[len(kept)-1].at - kept[0].at).Minutes()
	fmt.Printf("\nSlopes after %s of warm-up (least squares over %d samples):\n\n", *warmup, len(kept))
	fmt.Println("| figure | mean | slope per minute | over the run |")
	fmt.Println("|---|---|---|---|")
	for _, f := range []struct {
		name string
		get  func(sample) float64
	}{
		{"goroutines", func(s sample) float64 { return s.goroutines }},
		{"open fds", func(s sample) float64 { return s.fds }},
		{"heap in use (MiB)", func(s sample) float64 { return s.heapMiB }},
		{"RSS (MiB)", func(s sample) float64 { return s.rssMiB }},
	} {
		mean, slope := fit(kept, f.get)
		fmt.Printf("| %s | %.1f | %+.2f | %+.1f (%+.1f%%) |\n", f.name, mean, slope, slope*span, 100*slope*span/math.Max(mean, 1e-9))
	}
}

// fit returns the mean of y and the least-squares slope of y over time, per minute.
func fit(samples []sample, y func(sample) float64) (mean, slope float64) {
	var sx, sy, sxx, sxy float64
	n := float64(len(samples))
	for _, s := range samples {
		x := s.at.Minutes()
		sx, sy, sxx, sxy = sx+x, sy+y(s), sxx+x*x, sxy+x*y(s)
	}
	return sy / n, (n*sxy - sx*sy) / (n*sxx - sx*sx)
}
