// Package celexpr compiles and runs CEL expressions that people other than the operator write
// (a tenant's check state, a class's probe response rule) within cost and time limits, keeping
// compiled programs in a bounded cache. Its errors never quote the data an expression ran on.
package celexpr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"k8s.io/utils/lru"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// Limits of one evaluation.
const (
	// CostLimit is cel-go's runtime cost of one evaluation, as Kubernetes bounds a CEL
	// validation rule per call.
	CostLimit = 1_000_000
	// Timeout bounds one evaluation by the clock too; comprehensions check it every
	// interruptEvery iterations.
	Timeout        = time.Second
	interruptEvery = 100
)

// Programs compiles expressions in one environment and keeps them by their text, the least
// recently used dropped first.
type Programs struct {
	env  *cel.Env
	prgs *lru.Cache // expression → cel.Program
}

// New returns Programs over the declared variables, keeping up to cacheSize programs; the
// cache's size is reported as connectors_cache_entries{cache=name}.
func New(name string, cacheSize int, vars ...cel.EnvOption) (*Programs, error) {
	env, err := cel.NewEnv(vars...)
	if err != nil {
		return nil, err
	}
	p := &Programs{env: env, prgs: lru.New(cacheSize)}
	cachemetrics.Register(name, p.prgs.Len)
	return p, nil
}

// Len is the number of cached programs.
func (p *Programs) Len() int { return p.prgs.Len() }

// Compile checks and compiles an expression; errors say what is wrong with it.
func (p *Programs) Compile(expr string) (cel.Program, error) {
	if prg, ok := p.prgs.Get(expr); ok {
		return prg.(cel.Program), nil
	}
	ast, iss := p.env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("invalid CEL %q: %w", expr, iss.Err())
	}
	prg, err := p.env.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptTrackCost),
		cel.InterruptCheckFrequency(interruptEvery))
	if err != nil {
		return nil, fmt.Errorf("invalid CEL %q: %w", expr, err)
	}
	p.prgs.Add(expr, prg)
	return prg, nil
}

// Eval compiles (or takes from the cache) and runs expr over vars within the limits. An
// evaluation error says why without cel-go's message where that could quote the data.
func (p *Programs) Eval(ctx context.Context, expr string, vars map[string]any) (ref.Val, error) {
	prg, err := p.Compile(expr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	out, _, err := prg.ContextEval(ctx, vars)
	if err != nil {
		return nil, errors.New(Problem(ctx, expr, err))
	}
	return out, nil
}

// Cached tells whether an expression's program is in the cache (and makes it the most
// recently used).
func (p *Programs) Cached(expr string) bool {
	_, ok := p.prgs.Get(expr)
	return ok
}

// Problem says why an evaluation failed without cel-go's message where that can quote the
// data (a failed conversion prints the value it could not convert): a missing key is named
// only when the expression itself spells it.
func Problem(ctx context.Context, expr string, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "cost limit exceeded"):
		return fmt.Sprintf("it exceeded the cost limit (%d)", CostLimit)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Sprintf("it ran longer than %s", Timeout)
	}
	if key, ok := strings.CutPrefix(msg, "no such key: "); ok && strings.Contains(expr, key) {
		return msg
	}
	return "evaluation failed (cel-go's message is withheld: it can quote the data)"
}
