package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// System calls per request, counted by perf's syscall tracepoints on the proxying processes
// while a case runs (-syscalls): what explains a row's system time (a read that finds nothing,
// a futex wakeup, an epoll wait) where /proc's CPU time only sums it.

var countSyscalls = flag.Bool("syscalls", false, "count the proxying processes' system calls per request with perf (linux-perf's tracepoints; root)")

// syscallKinds are the columns: system calls grouped by what they do (nginx receives with
// recvfrom and writes answers with writev where Go uses read and write).
var syscallKinds = []struct {
	name   string
	events []string
}{
	{"read", []string{"read", "recvfrom", "readv", "recvmsg"}},
	{"write", []string{"write", "sendto", "writev", "sendmsg"}},
	{"epoll wait", []string{"epoll_wait", "epoll_pwait"}},
	{"futex", []string{"futex"}},
}

// syscallCounts are a case's system calls per request: all of them, and each kind's.
type syscallCounts struct {
	total float64
	kinds []float64
}

// perfCount is perf stat counting system calls of pids until stop.
type perfCount struct {
	cmd *exec.Cmd
	out string
}

// startSyscallCount starts counting; nil when -syscalls is off or no process proxies.
func startSyscallCount(dir string, pids []int) (*perfCount, error) {
	if !*countSyscalls || len(pids) == 0 {
		return nil, nil
	}
	events := []string{"raw_syscalls:sys_enter"}
	for _, k := range syscallKinds {
		for _, e := range k.events {
			events = append(events, "syscalls:sys_enter_"+e)
		}
	}
	ids := make([]string, len(pids))
	for i, pid := range pids {
		ids[i] = strconv.Itoa(pid)
	}
	out := filepath.Join(dir, "perf-stat.csv")
	cmd := exec.Command("perf", "stat", "-x", ",", "-o", out, "-e", strings.Join(events, ","), "-p", strings.Join(ids, ","))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("-syscalls needs perf (Debian's linux-perf): %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches before the load starts
	return &perfCount{cmd: cmd, out: out}, nil
}

// stop ends the count and returns it per request over n requests.
func (p *perfCount) stop(n int) (syscallCounts, error) {
	if p == nil {
		return syscallCounts{}, nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) { // perf exits non-zero on SIGINT
			return syscallCounts{}, err
		}
	}
	raw, err := os.ReadFile(p.out)
	if err != nil {
		return syscallCounts{}, err
	}
	byEvent := parsePerfStat(raw)
	c := syscallCounts{total: byEvent["raw_syscalls:sys_enter"] / float64(n)}
	for _, k := range syscallKinds {
		sum := 0.0
		for _, e := range k.events {
			sum += byEvent["syscalls:sys_enter_"+e]
		}
		c.kinds = append(c.kinds, sum/float64(n))
	}
	return c, nil
}

// parsePerfStat reads perf stat's CSV (-x ,): count, unit, event, ...; comments skipped.
func parsePerfStat(raw []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ",")
		if len(fields) < 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[fields[2]] += v
		}
	}
	return out
}

// String is the counts as the table's cell: the total, then each kind's.
func (c syscallCounts) String() string {
	if len(c.kinds) == 0 {
		return "—"
	}
	parts := make([]string, len(c.kinds))
	for i, v := range c.kinds {
		parts[i] = fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.1f (%s)", c.total, strings.Join(parts, " / "))
}

// syscallsHeader is the column's title.
func syscallsHeader() string {
	names := make([]string, len(syscallKinds))
	for i, k := range syscallKinds {
		names[i] = k.name
	}
	return "syscalls/req (" + strings.Join(names, " / ") + ")"
}
