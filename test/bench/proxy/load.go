package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-connectors/connectors-csi/test/bench/benchenv"
)

// result is one case's load: requests completed, their rate and latency quantiles.
type result struct {
	n        int
	rate     float64
	p50, p99 time.Duration
}

// request is what a generator sends: to connect (http://host:port of the first hop), path
// (the request line's target: a path, or an absolute URL for a forward proxy), headers, and
// a body to POST (nil: a GET), chunked or not.
type request struct {
	connect, path string
	header        http.Header
	body          []byte
	chunked       bool
}

// goLoad runs GETs, or POSTs of body, with client at fixed concurrency until the duration or
// the request cap is reached (the client's proxy, if any, decides the first hop).
func goLoad(c *http.Client, u string, h http.Header, body []byte) (result, error) {
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
				t0 := time.Now()
				if err := benchenv.Send(context.Background(), c, u, h, body); err != nil {
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

// wrkLoad runs Debian's wrk (one thread, the same connections and duration) with a Lua
// script that sets the request's target and headers. wrk is C: it leaves more of the two
// cores to the servers than the Go generator does.
func wrkLoad(dir string, r request) (result, error) {
	var script strings.Builder
	switch {
	case r.chunked:
		fmt.Fprintf(&script, "wrk.method = \"POST\"\nwrk.headers[\"Transfer-Encoding\"] = \"chunked\"\n")
	case r.body != nil:
		fmt.Fprintf(&script, "wrk.method = \"POST\"\nwrk.body = %q\n", r.body)
	default:
		fmt.Fprintf(&script, "wrk.method = \"GET\"\n")
	}
	if r.chunked || r.body != nil {
		fmt.Fprintf(&script, "wrk.headers[\"Content-Type\"] = %q\n", benchenv.UploadType)
	}
	fmt.Fprintf(&script, "wrk.path = %q\n", r.path)
	for k, v := range r.header {
		fmt.Fprintf(&script, "wrk.headers[%q] = %q\n", k, v[0])
	}
	if r.chunked {
		// wrk.format adds a Content-Length to a request with a body: the head is formatted
		// without one, once wrk.init has set Host, and the chunks follow it.
		fmt.Fprintf(&script, "local chunked = %q\nlocal req\n", chunk(r.body))
		fmt.Fprintf(&script, "init = function(args) req = wrk.format() .. chunked end\nrequest = function() return req end\n")
	}
	file := filepath.Join(dir, "wrk.lua")
	if err := os.WriteFile(file, []byte(script.String()), 0o600); err != nil {
		return result{}, err
	}
	out, err := exec.Command("wrk", "-t1", fmt.Sprintf("-c%d", *concurrency), fmt.Sprintf("-d%ds", int(duration.Seconds())),
		"--latency", "-s", file, r.connect).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	return parseWrk(out)
}

// chunk is body in chunked transfer coding, in chunks of 64 KiB, without a trailer.
func chunk(body []byte) []byte {
	var b bytes.Buffer
	for len(body) > 0 {
		n := min(len(body), 64<<10)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[:n])
		body = body[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

var (
	wrkTotal   = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)`)
	wrkPercent = regexp.MustCompile(`(?m)^\s*(50|99)%\s+([\d.]+)(us|ms|s)`)
)

// parseWrk reads the total, the rate and the 50th and 99th percentiles from wrk's report; any
// error line (non-2xx answers, socket errors) fails the case.
func parseWrk(out []byte) (result, error) {
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "Non-2xx") || strings.HasPrefix(l, "Socket errors") {
			return result{}, fmt.Errorf("wrk: %s", l)
		}
	}
	m := wrkTotal.FindSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("wrk printed no total:\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	elapsed := wrkDuration(string(m[2]), string(m[3]))
	var res result
	res.n, res.rate = n, float64(n)/elapsed.Seconds()
	for _, p := range wrkPercent.FindAllSubmatch(out, -1) {
		d := wrkDuration(string(p[2]), string(p[3])).Round(10 * time.Microsecond)
		if string(p[1]) == "50" {
			res.p50 = d
		} else {
			res.p99 = d
		}
	}
	if n == 0 {
		return result{}, fmt.Errorf("wrk completed no request:\n%s", out)
	}
	return res, nil
}

func wrkDuration(v, unit string) time.Duration {
	f, _ := strconv.ParseFloat(v, 64)
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}[unit]
	return time.Duration(f * float64(scale))
}
