package regoeval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServeSandboxIfChild serves evaluations and exits when this process was started as a Sandbox's
// child; otherwise it returns at once. main calls it first, and so does the TestMain of any
// test binary whose tests run a Sandbox (the child is the same executable).
func ServeSandboxIfChild() {
	spec, ok := os.LookupEnv(sandboxEnv)
	if !ok {
		return
	}
	if err := serveSandbox(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rego sandbox:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveSandbox bounds this process and answers requests from in, one at a time, until in ends.
func serveSandbox(specJSON string, in io.Reader, out io.Writer) error {
	var spec sandboxSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return err
	}
	// A child keeps few modules: each tenant's evaluation must find the memory the flag
	// promises, not what earlier tenants' modules left.
	spec.Engine.CacheSize = min(spec.Engine.CacheSize, sandboxCacheSize)
	engine, err := New("rego_sandbox", spec.Engine)
	if err != nil {
		return err
	}
	bound, err := boundThisProcess(spec.MemoryLimit)
	if err != nil {
		return err
	}
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	for {
		var req sandboxRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var resp sandboxResponse
		if err := answer(engine, req, &resp); err != nil {
			resp.Error = truncate(err.Error(), maxSandboxError)
		}
		// Half the bound held after an answer: the next evaluation gets a fresh child.
		resp.Retire = heapObjects() > bound.start+bound.limit/2
		if err := enc.Encode(resp); err != nil {
			return err
		}
		if resp.Retire {
			return nil
		}
	}
}

// sandboxCacheSize bounds the compiled modules a child keeps.
const sandboxCacheSize = 32

// maxSandboxError and maxSandboxState bound what a child answers: the controller reads it.
const (
	maxSandboxError = 1 << 10
	maxSandboxState = 64
)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func answer(e *Engine, req sandboxRequest, resp *sandboxResponse) error {
	if req.Check {
		return e.Check(StateHook, req.Module)
	}
	var object map[string]any
	dec := json.NewDecoder(bytes.NewReader(req.Input))
	dec.UseNumber() // integers beyond float64's 53 bits stay exact
	if err := dec.Decode(&object); err != nil {
		return fmt.Errorf("%s: the object cannot be a Rego input", StateHook.Field)
	}
	state, err := e.State(context.Background(), req.Module, object)
	resp.State = truncate(state, maxSandboxState)
	return err
}

// heapBound is the heap a child may hold: what it held when it was ready, and the limit
// beyond that.
type heapBound struct{ start, limit uint64 }

// exitOverMemory is a child's exit status when its heap passed the bound.
const exitOverMemory = 3

// boundThisProcess runs Go code on one CPU, makes this process the one the kernel's OOM killer
// ends first, and starts the watch that ends the process once its heap holds limit more than
// now. The heap is watched, not the address space: Go reserves address space by 64 MiB arenas,
// so an address-space limit near a small bound failed at random on ordinary objects. One
// allocation far larger than the bound is counted when made, before its pages are touched, and
// the address space is still limited, far above the bound, so that no reservation runs away.
func boundThisProcess(limit int64) (heapBound, error) {
	runtime.GOMAXPROCS(1)
	debug.SetMemoryLimit(limit)
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	held, err := addressSpace()
	if err != nil {
		return heapBound{}, err
	}
	ceiling := uint64(held + 2*limit + 1<<30)
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: ceiling, Max: ceiling}); err != nil {
		return heapBound{}, err
	}
	b := heapBound{start: heapObjects(), limit: uint64(limit)}
	go func() {
		for range time.Tick(time.Millisecond) {
			if heapObjects() > b.start+b.limit {
				fmt.Fprintln(os.Stderr, "rego sandbox: the heap passed the memory limit")
				os.Exit(exitOverMemory)
			}
		}
	}()
	return b, nil
}

// heapObjects is the memory the heap's objects hold now, live or not yet swept.
func heapObjects() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// addressSpace is the process's virtual memory size (VmSize of /proc/self/status), in bytes.
func addressSpace() (int64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmSize:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmSize in /proc/self/status")
}
