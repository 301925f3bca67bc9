package controlplane

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exitBound is how long a test waits for a process to end before it fails: a bound on a hang,
// not a measured time.
const exitBound = 30 * time.Second

// startSleep starts a process that runs until killed.
func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// ended waits for cmd, one of this process's children, to end; false after exitBound.
func ended(cmd *exec.Cmd) bool {
	done := make(chan struct{})
	go func() {
		_, _ = cmd.Process.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(exitBound):
		return false
	}
}

func TestWatchdogEndsProcessesOnceTheWatchedOneEnds(t *testing.T) {
	owner, victim, reused := startSleep(t), startSleep(t), startSleep(t)
	dog, err := startWatchdog(owner.Process.Pid, []process{
		{victim.Process.Pid, "sleep"},
		// A pid that runs another command than the one recorded: a number reused since.
		{reused.Process.Pid, "etcd"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWatchdog(dog) })
	if err := owner.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = owner.Wait()
	if !ended(victim) {
		t.Fatalf("the watched process ended, and the one to end was still running after %v", exitBound)
	}
	if !ended(dog) {
		t.Fatalf("the watchdog did not end after its work")
	}
	// running, not a signal 0: an ended child is a zombie until waited for, and takes signals.
	if !running(process{reused.Process.Pid, "sleep"}) {
		t.Error("a process whose command is not the one recorded was ended")
	}
}

func TestStoppedWatchdogEndsNothing(t *testing.T) {
	owner, victim := startSleep(t), startSleep(t)
	dog, err := startWatchdog(owner.Process.Pid, []process{{victim.Process.Pid, "sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	stopWatchdog(dog)
	if dog.ProcessState == nil {
		t.Fatal("stopWatchdog returned before the watchdog ended")
	}
	_ = owner.Process.Kill()
	_ = owner.Wait()
	if !running(process{victim.Process.Pid, "sleep"}) {
		t.Error("a stopped watchdog ended a process")
	}
}

// TestControlPlaneEndsWithAKilledTestProcess starts a control plane in a child test process,
// kills that process as `go test -timeout` does (no deferred Stop runs), and expects its
// kube-apiserver and etcd to end.
func TestControlPlaneEndsWithAKilledTestProcess(t *testing.T) {
	if os.Getenv("CONTROLPLANE_REAP_CHILD") == "1" {
		cp, err := Start()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		for _, p := range newControlPlaneChildren(nil) {
			fmt.Printf("pid %d %s\n", p.pid, p.comm)
		}
		fmt.Println("ready")
		_ = cp // never stopped: the parent kills this process
		time.Sleep(time.Hour)
		return
	}
	child := exec.Command(os.Args[0], "-test.run=^TestControlPlaneEndsWithAKilledTestProcess$")
	child.Env = append(os.Environ(), "CONTROLPLANE_REAP_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	var started []process
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			break
		}
		var p process
		if _, err := fmt.Sscanf(line, "pid %d %s", &p.pid, &p.comm); err == nil {
			started = append(started, p)
		} else if strings.HasPrefix(line, "error:") {
			t.Fatal(line)
		}
	}
	t.Cleanup(func() { // the watchdog failed: end what it left
		for _, p := range started {
			if running(p) {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
	})
	if len(started) != 2 {
		t.Fatalf("the child's control plane runs %v; want etcd and kube-apiserver", started)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(exitBound)
	for _, p := range started {
		for running(p) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d) still runs %v after the test process that started it was killed", p.comm, p.pid, exitBound)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
