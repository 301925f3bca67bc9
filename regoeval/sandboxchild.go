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
	"strconv"
	"strings"
	"syscall"
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
	if err := boundThisProcess(spec.MemoryLimit); err != nil {
		return err
	}
	engine, err := New("rego_sandbox", spec.Engine)
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
			resp.Error = err.Error()
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
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
	resp.State = state
	return err
}

// boundThisProcess limits the address space to what the process holds now plus limit (the Go
// runtime ends with "out of memory" past it, however large the one allocation that asks), runs
// Go code on one CPU, and makes this process the one the kernel's OOM killer ends first, should
// the container run out before the limit is reached.
func boundThisProcess(limit int64) error {
	runtime.GOMAXPROCS(1)
	debug.SetMemoryLimit(limit)
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	held, err := addressSpace()
	if err != nil {
		return err
	}
	bound := uint64(held + limit)
	return syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: bound, Max: bound})
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
