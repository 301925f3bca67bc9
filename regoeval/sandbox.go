package regoeval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Sandbox evaluates check states (state.rego), which tenants write in their AccessPolicies, in
// child processes of this binary, each with a bound on its memory. Inside one process no bound
// holds: OPA's builtins do not stop for a deadline (numbers.range(1, 1e9), a sprintf width, a
// replace of "" in a long string, a float's integer part all allocate gigabytes in one call),
// and a comprehension allocates faster than a timeout ends it; in the controller one such
// module took the process, and every tenant's approvals with it, down. In a child it takes the
// child down: the evaluation fails, naming the bound, and the next one starts a new child.
// Written here because no library runs Rego in a bounded process.
type Sandbox struct {
	cfg   SandboxConfig
	slots chan struct{} // one per process that may run
	mu    sync.Mutex
	idle  []*child
	// compiled are the modules a child compiled, by text (Engine's cache size).
	compiled *lru.Cache[string, struct{}]
}

// SandboxConfig tunes a Sandbox.
type SandboxConfig struct {
	// Engine is the children's engine: its Timeout bounds an evaluation in the child, and the
	// child is killed when it has not answered a little after it.
	Engine Config
	// MemoryLimit is the address space, in bytes, a child may take beyond what it holds when
	// it starts; past it the child ends.
	MemoryLimit int64
	// Processes bounds the children running at once; more evaluations wait.
	Processes int
	// Command is the child's argv (default: this executable, no arguments).
	Command []string
	// StartTimeout is what a child may take to start, besides an evaluation's time (default
	// 10 s).
	StartTimeout time.Duration
}

// sandboxEnv, when set in the environment, makes a process of this binary a sandbox child
// (ServeSandboxIfChild); its value is the child's sandboxSpec as JSON.
const sandboxEnv = "CONNECTORS_CSI_REGO_SANDBOX"

// sandboxIdle is how long a child waits for its next evaluation before it is ended.
const sandboxIdle = time.Minute

type sandboxSpec struct {
	Engine      Config `json:"engine"`
	MemoryLimit int64  `json:"memoryLimit"`
}

type sandboxRequest struct {
	// Check asks only whether the module compiles.
	Check  bool            `json:"check,omitempty"`
	Module string          `json:"module"`
	Input  json.RawMessage `json:"input,omitempty"`
}

type sandboxResponse struct {
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Retire: the child ends after this answer (it holds half its bound).
	Retire bool `json:"retire,omitempty"`
}

// NewSandbox returns a Sandbox; children start when evaluations need them.
func NewSandbox(cfg SandboxConfig) (*Sandbox, error) {
	if cfg.MemoryLimit <= 0 || cfg.Processes <= 0 || cfg.Engine.CacheSize <= 0 || cfg.Engine.Timeout <= 0 || cfg.Engine.MaxBodyBytes <= 0 {
		return nil, errors.New("rego sandbox: memory limit, processes, cache size, timeout and body limit must be positive")
	}
	if len(cfg.Command) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("rego sandbox: %w", err)
		}
		cfg.Command = []string{self}
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	compiled, err := lru.New[string, struct{}](cfg.Engine.CacheSize)
	if err != nil {
		return nil, err
	}
	return &Sandbox{cfg: cfg, slots: make(chan struct{}, cfg.Processes), compiled: compiled}, nil
}

// ErrUnavailable marks a failure of the sandbox, not of the module: no child could be had in
// time, or one ended for a reason of its own. The evaluation may succeed when tried again.
var ErrUnavailable = errors.New("the rego sandbox is unavailable")

// Check compiles a module in a child and returns what is wrong with it, or nil; a module that
// compiled is remembered, so that its evaluations need no second round trip. Only the state
// hook is evaluated in a sandbox.
func (s *Sandbox) Check(h Hook, module string) error {
	if h != StateHook {
		return fmt.Errorf("the rego sandbox evaluates only %s", StateHook.Field)
	}
	if _, ok := s.compiled.Get(module); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Engine.Timeout+s.cfg.StartTimeout)
	defer cancel()
	_, err := s.call(ctx, sandboxRequest{Check: true, Module: module})
	if err == nil {
		s.compiled.Add(module, struct{}{})
	}
	return err
}

// State is Engine.State, evaluated in a child.
func (s *Sandbox) State(ctx context.Context, module string, object map[string]any) (string, error) {
	input, err := json.Marshal(object)
	if err != nil {
		return "", fmt.Errorf("%s: the object cannot be a Rego input", StateHook.Field)
	}
	return s.call(ctx, sandboxRequest{Module: module, Input: input})
}

func (s *Sandbox) call(ctx context.Context, req sandboxRequest) (string, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("%w: no process was free: %w", ErrUnavailable, context.Cause(ctx))
	}
	defer func() { <-s.slots }()
	c, fresh, err := s.take()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	limit := s.cfg.Engine.Timeout + time.Second
	if fresh {
		limit += s.cfg.StartTimeout
	}
	// The caller's end ends the child: an evaluation is not waited for once nobody wants it.
	stop := context.AfterFunc(ctx, c.kill)
	resp, err := c.roundTrip(req, limit)
	stop()
	if err != nil {
		c.kill()
		return "", s.ended(ctx, c)
	}
	if resp.Retire {
		_ = c.in.Close()
	} else {
		s.put(c)
	}
	if resp.Error != "" {
		return "", errors.New(resp.Error)
	}
	return resp.State, nil
}

// ended says why a child gave no answer: its module took too long or too much memory (the
// module's failure), or the caller gave up or the child ended otherwise (ErrUnavailable).
func (s *Sandbox) ended(ctx context.Context, c *child) error {
	<-c.exited
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil && !c.timedOut.Load():
		return fmt.Errorf("%w: %w", ErrUnavailable, context.Cause(ctx))
	case c.timedOut.Load():
		return fmt.Errorf("%s did not finish within %s; it was stopped", StateHook.Field, s.cfg.Engine.Timeout)
	case errors.As(c.waitErr, &exit) && exit.ExitCode() == exitOverMemory,
		bytes.Contains(c.stderr.Bytes(), []byte("out of memory")):
		return fmt.Errorf("%s needed more than the %d MiB of memory an evaluation may take (--rego-state-memory-limit); it was stopped",
			StateHook.Field, s.cfg.MemoryLimit>>20)
	}
	return fmt.Errorf("%w: the process evaluating %s ended (%v)", ErrUnavailable, StateHook.Field, c.waitErr)
}

// Close ends the idle children (a busy one ends after its evaluation, when it is idle long
// enough, or with this process).
func (s *Sandbox) Close() {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, c := range idle {
		c.idleTimer.Stop()
		_ = c.in.Close()
	}
}

// take returns an idle child, or starts one (fresh).
func (s *Sandbox) take() (c *child, fresh bool, err error) {
	s.mu.Lock()
	for len(s.idle) > 0 {
		c = s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if c.idleTimer.Stop() && !c.hasExited() {
			s.mu.Unlock()
			return c, false, nil
		}
		// Its idle time ran out as it was taken, or it ended while idle: it is not used.
		_ = c.in.Close()
	}
	s.mu.Unlock()
	c, err = s.start()
	return c, true, err
}

// put keeps a child for the next evaluation, until it has been idle for sandboxIdle.
func (s *Sandbox) put(c *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.idleTimer = time.AfterFunc(sandboxIdle, func() {
		s.mu.Lock()
		for i, other := range s.idle {
			if other == c {
				s.idle = append(s.idle[:i], s.idle[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		_ = c.in.Close() // the child ends at the end of its input
	})
	s.idle = append(s.idle, c)
}

func (s *Sandbox) start() (*child, error) {
	spec, err := json.Marshal(sandboxSpec{Engine: s.cfg.Engine, MemoryLimit: s.cfg.MemoryLimit})
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.cfg.Command[0], s.cfg.Command[1:]...)
	// Nothing of the parent's environment: a child needs no credential, address or setting.
	cmd.Env = []string{sandboxEnv + "=" + string(spec)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	cmd.Stderr = &c.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rego sandbox: %w", err)
	}
	c.in, c.enc, c.dec = in, json.NewEncoder(in), json.NewDecoder(out)
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// child is one sandbox process, serving one evaluation at a time.
type child struct {
	cmd       *exec.Cmd
	in        io.WriteCloser
	enc       *json.Encoder
	dec       *json.Decoder
	stderr    limitedBuffer
	idleTimer *time.Timer
	timedOut  atomic.Bool
	exited    chan struct{}
	waitErr   error
}

func (c *child) roundTrip(req sandboxRequest, limit time.Duration) (sandboxResponse, error) {
	timer := time.AfterFunc(limit, func() { c.timedOut.Store(true); c.kill() })
	defer timer.Stop()
	var resp sandboxResponse
	if err := c.enc.Encode(req); err != nil {
		return resp, err
	}
	err := c.dec.Decode(&resp)
	return resp, err
}

func (c *child) kill() { _ = c.cmd.Process.Kill() }

func (c *child) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// limitedBuffer keeps the first limitedBufferSize bytes written to it: the start of a child's
// crash report, which says why it ended; the rest (goroutine dumps) is dropped.
type limitedBuffer struct{ bytes.Buffer }

const limitedBufferSize = 4 << 10

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := limitedBufferSize - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
