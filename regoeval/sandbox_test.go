package regoeval

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain serves as a Sandbox's child when started as one: the tests' children are this
// test binary.
func TestMain(m *testing.M) {
	ServeSandboxIfChild()
	os.Exit(m.Run())
}

func testSandbox(t *testing.T, change func(*SandboxConfig)) *Sandbox {
	t.Helper()
	cfg := SandboxConfig{Engine: Config{CacheSize: 8, Timeout: 5 * time.Second, MaxBodyBytes: 1 << 10}, MemoryLimit: 64 << 20, Processes: 2}
	if change != nil {
		change(&cfg)
	}
	s, err := NewSandbox(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const approvedState = `package approval
status := {"state": input.status.state}`

func TestSandboxEvaluatesStates(t *testing.T) {
	s := testSandbox(t, nil)
	ctx := context.Background()
	object := map[string]any{"status": map[string]any{"state": "approved"}, "spec": map[string]any{"n": int64(1) << 60}}
	for range 3 { // the second and third reuse the child
		state, err := s.State(ctx, approvedState, object)
		if err != nil || state != "approved" {
			t.Fatalf("State = %q, %v; want approved", state, err)
		}
	}
	exact := `package approval
status := {"state": "approved"} if input.spec.n == 1152921504606846976`
	if state, err := s.State(ctx, exact, object); err != nil || state != "approved" {
		t.Errorf("an integer beyond 2^53 reaches the child as it is: %q, %v", state, err)
	}
	if err := s.Check(StateHook, "package other\nstatus := {}"); err == nil || !strings.Contains(err.Error(), "must be package approval") {
		t.Errorf("Check of a module of another package: %v", err)
	}
	if err := s.Check(StateHook, approvedState); err != nil {
		t.Errorf("Check of a good module: %v", err)
	}
}

// TestSandboxBoundsMemory: one builtin call that asks for gigabytes ends the child, not this
// process; the error names the bound; the next evaluation gets a new child.
func TestSandboxBoundsMemory(t *testing.T) {
	s := testSandbox(t, nil)
	ctx := context.Background()
	for name, hungry := range map[string]string{
		"one call": `package approval
x := concat("", ["aaaaaaaaaa" | some _ in numbers.range(1, 2000)])
status := {"state": "approved"} if count(replace(x, "", x)) > 0`,
		"many calls": `package approval
x := [sprintf("%0999999d", [i]) | some i in numbers.range(1, 1000)]
status := {"state": "approved"} if count(x) > 0`,
	} {
		_, err := s.State(ctx, hungry, map[string]any{})
		if err == nil || !strings.Contains(err.Error(), "more than the 64 MiB of memory an evaluation may take (--rego-state-memory-limit)") {
			t.Fatalf("State of a module that asks for hundreds of megabytes in %s: %v", name, err)
		}
	}
	if state, err := s.State(ctx, approvedState, map[string]any{"status": map[string]any{"state": "approved"}}); err != nil || state != "approved" {
		t.Fatalf("the evaluation after: %q, %v", state, err)
	}
}

// TestSandboxTakesLargeObjects: an object of a few megabytes, evaluated again and again, fits
// in the bound whatever the children did before (an address-space limit failed at random here).
func TestSandboxTakesLargeObjects(t *testing.T) {
	s := testSandbox(t, nil)
	items := make([]any, 20000)
	for i := range items {
		items[i] = map[string]any{"name": fmt.Sprintf("approver-%d", i), "input": strings.Repeat("x", 60)}
	}
	object := map[string]any{"status": map[string]any{"state": "approved", "approvers": items}}
	for i := range 10 {
		if state, err := s.State(context.Background(), approvedState, object); err != nil || state != "approved" {
			t.Fatalf("evaluation %d of a %d-item object: %q, %v", i, len(items), state, err)
		}
	}
}

// TestSandboxGivesUpWithItsCaller: an evaluation whose caller ends is stopped, and the error
// says that the sandbox, not the module, failed.
func TestSandboxGivesUpWithItsCaller(t *testing.T) {
	s := testSandbox(t, func(c *SandboxConfig) { c.Command = []string{"sleep", "600"} })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.State(ctx, approvedState, map[string]any{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("State whose caller gave up: %v, want ErrUnavailable", err)
	}
}

// TestSandboxStopsAChildThatDoesNotAnswer: a child that neither answers nor ends (here a
// process that never reads) is killed after the evaluation's time.
func TestSandboxStopsAChildThatDoesNotAnswer(t *testing.T) {
	s := testSandbox(t, func(c *SandboxConfig) {
		c.Command = []string{"sleep", "600"}
		c.Engine.Timeout, c.StartTimeout = 10*time.Millisecond, 10*time.Millisecond
	})
	_, err := s.State(context.Background(), approvedState, map[string]any{})
	if err == nil || !strings.Contains(err.Error(), "state.rego did not finish within 10ms; it was stopped") {
		t.Fatalf("State with a child that does not answer: %v", err)
	}
}

// BenchmarkStateInProcess and BenchmarkStateInSandbox compare one check state's evaluation in
// the controller's process (as before the Sandbox) and in a warm child.
func BenchmarkStateInProcess(b *testing.B) {
	e, err := New("bench_state", Config{CacheSize: 8, Timeout: time.Second, MaxBodyBytes: 1 << 10})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkState(b, e)
}

func BenchmarkStateInSandbox(b *testing.B) {
	s, err := NewSandbox(SandboxConfig{Engine: Config{CacheSize: 8, Timeout: time.Second, MaxBodyBytes: 1 << 10}, MemoryLimit: 64 << 20, Processes: 1})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkState(b, s)
}

// BenchmarkSandboxChildStart is a child's start and first answer, with the driver's own binary
// (bin/connectors-csi, built by make build) as the child, as in the controller.
func BenchmarkSandboxChildStart(b *testing.B) {
	binary, err := filepath.Abs("../bin/connectors-csi")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(binary); err != nil {
		b.Skipf("no driver binary to start (make build): %v", err)
	}
	for b.Loop() {
		s, err := NewSandbox(SandboxConfig{Engine: Config{CacheSize: 8, Timeout: time.Second, MaxBodyBytes: 1 << 10},
			MemoryLimit: 64 << 20, Processes: 1, Command: []string{binary}})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Check(StateHook, approvedState); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

func benchmarkState(b *testing.B, s interface {
	State(context.Context, string, map[string]any) (string, error)
}) {
	object := map[string]any{"metadata": map[string]any{"name": "approve-run-1", "labels": map[string]any{"tekton.dev/pipelineRun": "run-1"}},
		"status": map[string]any{"state": "approved", "approvers": []any{"alice", "bob"}}}
	for b.Loop() {
		if state, err := s.State(context.Background(), approvedState, object); err != nil || state != "approved" {
			b.Fatalf("%q, %v", state, err)
		}
	}
}
