package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kube-connectors/connectors-csi/test/bench/benchenv"
)

// Scheduling per request (-sched): how often the proxying processes' threads gave up their
// CPU (voluntary: a thread that sleeps in futex or epoll_wait; involuntary: one preempted) and
// how long the machine's CPUs sat idle, per request. Where two rows spend the same CPU time,
// the idle time tells them apart: with every case closed-loop (each connection waits for its
// answer), a CPU idles while work waits for a thread to be woken on it, and a wakeup of a
// halted virtual CPU is slow. Read from /proc, so it needs neither perf nor root.

var countSched = flag.Bool("sched", false, "report the proxying processes' context switches and the machine's idle time per request (from /proc)")

// schedSample is the counters a case's figures are differences of.
type schedSample struct {
	voluntary, involuntary int64
	idle                   time.Duration
}

// schedCounts is a case's figures per request.
type schedCounts struct {
	voluntary, involuntary float64
	idle                   time.Duration
	measured               bool
}

// readSched sums the context switches of every thread of pids and reads the machine's idle
// time; the zero sample when -sched is off.
func readSched(pids []int) (schedSample, error) {
	var s schedSample
	if !*countSched {
		return s, nil
	}
	for _, pid := range pids {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil {
			return s, err
		}
		for _, status := range tasks {
			raw, err := os.ReadFile(status)
			if err != nil {
				continue // a thread that ended since the glob
			}
			v, n := switchesOf(raw)
			s.voluntary, s.involuntary = s.voluntary+v, s.involuntary+n
		}
	}
	var err error
	s.idle, err = machineIdle()
	return s, err
}

// switchesOf reads a task's voluntary and involuntary context switches from its status file.
func switchesOf(status []byte) (voluntary, involuntary int64) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "voluntary_ctxt_switches":
			voluntary = n
		case "nonvoluntary_ctxt_switches":
			involuntary = n
		}
	}
	return voluntary, involuntary
}

// machineIdle is the idle and iowait time of all CPUs together since boot (/proc/stat's cpu
// line).
func machineIdle() (time.Duration, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q is not the cpu totals", line)
	}
	var ticks int64
	for _, f := range fields[4:6] { // idle, iowait
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q is not a number", f)
		}
		ticks += n
	}
	return benchenv.TicksToDuration(ticks), nil
}

// per is the figures between s0 and s per request over n requests.
func (s schedSample) per(s0 schedSample, n int) schedCounts {
	if !*countSched || n == 0 {
		return schedCounts{}
	}
	f := float64(n)
	return schedCounts{
		voluntary:   float64(s.voluntary-s0.voluntary) / f,
		involuntary: float64(s.involuntary-s0.involuntary) / f,
		idle:        (s.idle - s0.idle) / time.Duration(n),
		measured:    true,
	}
}

// String is the table's cell.
func (c schedCounts) String() string {
	if !c.measured {
		return "—"
	}
	return fmt.Sprintf("%.2f / %.2f, %.1f µs", c.voluntary, c.involuntary, micros(c.idle))
}

// schedHeader is the column's title.
func schedHeader() string {
	return "switches/req (voluntary / involuntary), machine idle/req"
}
