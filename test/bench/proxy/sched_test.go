package main

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSwitchesOfCountsAThreadThatSleeps(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := fmt.Sprintf("/proc/self/task/%d/status", unix.Gettid())
	read := func() (int64, int64) {
		raw, err := os.ReadFile(status)
		if err != nil {
			t.Fatal(err)
		}
		return switchesOf(raw)
	}
	v0, n0 := read()
	for range 3 {
		// A nanosleep of this thread: it gives up its CPU each time.
		if err := unix.Nanosleep(&unix.Timespec{Nsec: int64(time.Millisecond)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	v1, n1 := read()
	if v1-v0 < 3 {
		t.Errorf("voluntary switches went from %d to %d over three sleeps; want at least 3 more", v0, v1)
	}
	if n1 < n0 {
		t.Errorf("involuntary switches went down, from %d to %d", n0, n1)
	}
}

func TestSwitchesOfIgnoresOtherLines(t *testing.T) {
	status := []byte("Name:\tx\nvoluntary_ctxt_switches:\t12\nThreads: 3\nnonvoluntary_ctxt_switches:\t7\nbad line\n")
	if v, n := switchesOf(status); v != 12 || n != 7 {
		t.Errorf("switchesOf = %d, %d; want 12, 7", v, n)
	}
}
