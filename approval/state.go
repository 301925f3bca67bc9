package approval

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/lru"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// celProgramsCache names the compiled expressions in connectors_cache_entries.
const celProgramsCache = "cel_programs"

// Limits of a check's CEL state expression, which a tenant may write and the leader runs.
const (
	// celCostLimit is cel-go's runtime cost of one evaluation, as Kubernetes bounds a CEL
	// validation rule per call.
	celCostLimit = 1_000_000
	// celTimeout bounds one evaluation by the clock too; comprehensions check it every
	// celInterruptEvery iterations.
	celTimeout        = time.Second
	celInterruptEvery = 100
)

// States reads check states: a CEL expression over `object`, a Rego module of package approval
// over `input` (Alauda's state.rego), or the object's status.state.
// Compiled expressions are kept by their text, the least recently used dropped first (policies
// are written by tenants: their number is not ours to bound). One States serves both
// controllers.
type States struct {
	env  *cel.Env
	prgs *lru.Cache // expression → cel.Program
	rego *regoeval.Engine
}

// NewStates returns a States that keeps up to cacheSize compiled expressions and evaluates
// Rego modules with rego (which bounds its own cache and time).
func NewStates(cacheSize int, rego *regoeval.Engine) (*States, error) {
	env, err := cel.NewEnv(cel.Variable("object", cel.DynType))
	if err != nil {
		return nil, err
	}
	s := &States{env: env, prgs: lru.New(cacheSize), rego: rego}
	cachemetrics.Register(celProgramsCache, s.prgs.Len)
	return s, nil
}

// compile checks and compiles an expression; errors say what is wrong with it.
func (s *States) compile(expr string) (cel.Program, error) {
	if p, ok := s.prgs.Get(expr); ok {
		return p.(cel.Program), nil
	}
	ast, iss := s.env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("invalid CEL %q: %w", expr, iss.Err())
	}
	p, err := s.env.Program(ast, cel.CostLimit(celCostLimit), cel.EvalOptions(cel.OptTrackCost),
		cel.InterruptCheckFrequency(celInterruptEvery))
	if err != nil {
		return nil, fmt.Errorf("invalid CEL %q: %w", expr, err)
	}
	s.prgs.Add(expr, p)
	return p, nil
}

// Validate compiles a check's state, CEL or Rego, and says what is wrong with it.
func (s *States) Validate(st *v1alpha1.CheckState) error {
	switch {
	case st == nil:
		return nil
	case st.CEL != "" && st.Rego != "":
		return errors.New("a check's state sets both cel and rego: set one")
	case st.CEL != "":
		_, err := s.compile(st.CEL)
		return err
	case st.Rego != "":
		if err := s.rego.Check(regoeval.StateHook, st.Rego); err != nil {
			return fmt.Errorf("%s %w", regoeval.StateHook.Field, err)
		}
	}
	return nil
}

// state returns one of approved, passed, rejected or pending for a matched object. Its errors
// name types, never values: the object is not the message reader's to see.
func (s *States) state(ctx context.Context, obj *unstructured.Unstructured, check *v1alpha1.CheckSpec) (string, error) {
	if err := s.Validate(check.State); err != nil {
		return "", err
	}
	var state string
	switch {
	case check.State != nil && check.State.CEL != "":
		v, err := s.evaluate(ctx, obj, check.State.CEL)
		if err != nil {
			return "", err
		}
		state = v
	case check.State != nil && check.State.Rego != "":
		v, err := s.rego.State(ctx, check.State.Rego, obj.Object)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		state = v
	default:
		v, _, _ := unstructured.NestedString(obj.Object, "status", "state")
		state = v
	}
	switch state {
	case v1alpha1.StateApproved, v1alpha1.StatePassed, v1alpha1.StateRejected, v1alpha1.StatePending:
		return state, nil
	case "":
		return v1alpha1.StatePending, nil
	}
	return "", fmt.Errorf("%s %s has a state that is not one of approved, passed, rejected, pending", obj.GetKind(), obj.GetName())
}

// evaluate runs a state expression within its cost and time limits.
func (s *States) evaluate(ctx context.Context, obj *unstructured.Unstructured, expr string) (string, error) {
	p, err := s.compile(expr)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, celTimeout)
	defer cancel()
	out, _, err := p.ContextEval(ctx, map[string]any{"object": obj.Object})
	if err != nil {
		return "", fmt.Errorf("CEL %q on %s %s: %s", expr, obj.GetKind(), obj.GetName(), evalProblem(ctx, expr, err))
	}
	v, ok := out.Value().(string)
	if !ok {
		return "", fmt.Errorf("CEL %q yields a %s, not a string", expr, out.Type().TypeName())
	}
	return v, nil
}

// evalProblem says why an evaluation failed without cel-go's message where that can quote the
// object (a failed conversion prints the value it could not convert): a missing key is named
// only when the expression itself spells it.
func evalProblem(ctx context.Context, expr string, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "cost limit exceeded"):
		return fmt.Sprintf("it exceeded the cost limit (%d)", celCostLimit)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Sprintf("it ran longer than %s", celTimeout)
	}
	if key, ok := strings.CutPrefix(msg, "no such key: "); ok && strings.Contains(expr, key) {
		return msg
	}
	return "evaluation failed (cel-go's message is withheld: it can quote the object)"
}
