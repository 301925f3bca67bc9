package controlplane

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// A test binary that `go test -timeout` (or a signal) ends runs none of its deferred Stops,
// and envtest starts kube-apiserver and etcd in process groups of their own: they would run on,
// holding their ports and data directories, until someone kills them by hand. The watchdog
// below ends them once the test process is gone. It watches the process, not a thread:
// PR_SET_PDEATHSIG fires when the forking thread exits, which in Go can be any time a goroutine
// locked to its thread ends.

// reapInterval is how often, in seconds, the watchdog looks for the test process.
const reapInterval = "1"

// StatFields are the fields of /proc/<pid>/stat after the command's name: [0] is the state
// (field 3 of proc(5)), [1] the parent's pid.
func StatFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')') // the name, in parentheses, may hold spaces
	if end < 0 || end+2 > len(s) {
		return nil, fmt.Errorf("/proc/%d/stat: %q has no command name in parentheses", pid, s)
	}
	return strings.Fields(s[end+2:]), nil
}

// Children are the processes whose parent is pid.
func Children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fields, err := StatFields(child)
		if err != nil {
			continue // it ended since the listing
		}
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// controlPlaneCommands are the names (/proc's comm) of the processes envtest starts.
var controlPlaneCommands = []string{"etcd", "kube-apiserver"}

// commOf is the name of pid's command, "" when it has ended.
func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// process is a process to end: its pid and the name of its command then.
type process struct {
	pid  int
	comm string
}

// running tells whether p still runs its command (a zombie does not).
func running(p process) bool {
	fields, err := StatFields(p.pid)
	return err == nil && len(fields) > 0 && fields[0] != "Z" && commOf(p.pid) == p.comm
}

// startWatchdog starts a process that kills procs once the process watched has ended — each
// only if it still runs the command it ran then, so that a number reused since is left alone —
// and stays otherwise; stop it with stopWatchdog when procs were ended in order.
func startWatchdog(watched int, procs []process) (*exec.Cmd, error) {
	if len(procs) == 0 {
		return nil, nil
	}
	// A zombie (ended, not yet waited for) counts as ended.
	script := `alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
test=$1; shift
while alive "$test"; do sleep ` + reapInterval + `; done
for pc; do
  pid=${pc%%:*}
  [ "$(cat /proc/$pid/comm 2>/dev/null)" = "${pc#*:}" ] && kill -9 "$pid"
done`
	args := []string{"-c", script, "watchdog", strconv.Itoa(watched)}
	for _, p := range procs {
		args = append(args, strconv.Itoa(p.pid)+":"+p.comm)
	}
	cmd := exec.Command("sh", args...)
	// Its own group: a ^C to the test's group must not end it before the test's Stop runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the control plane's watchdog: %w", err)
	}
	return cmd, nil
}

// stopWatchdog ends a watchdog startWatchdog started (nil: none).
func stopWatchdog(cmd *exec.Cmd) {
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// newControlPlaneChildren are the children of this process that run etcd or kube-apiserver and
// are not in before.
func newControlPlaneChildren(before []int) []process {
	var out []process
	for _, pid := range Children(os.Getpid()) {
		if comm := commOf(pid); !slices.Contains(before, pid) && slices.Contains(controlPlaneCommands, comm) {
			out = append(out, process{pid, comm})
		}
	}
	return out
}
