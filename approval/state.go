package approval

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/celexpr"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// celProgramsCache names the compiled expressions in connectors_cache_entries.
const celProgramsCache = "cel_programs"

// States reads check states: a CEL expression over `object`, a Rego module of package approval
// over `input` (Alauda's state.rego), or the object's status.state.
// Compiled expressions are kept by their text, the least recently used dropped first (policies
// are written by tenants: their number is not ours to bound). One States serves both
// controllers.
type States struct {
	cel  *celexpr.Programs
	rego StateModules
}

// StateModules compiles and evaluates state.rego modules: a regoeval.Sandbox in the
// controller (tenants write them), an Engine in unit tests.
type StateModules interface {
	Check(h regoeval.Hook, module string) error
	State(ctx context.Context, module string, object map[string]any) (string, error)
}

// NewStates returns a States that keeps up to cacheSize compiled expressions and evaluates
// Rego modules with rego (which bounds its own cache, time and memory).
func NewStates(cacheSize int, rego StateModules) (*States, error) {
	programs, err := celexpr.New(celProgramsCache, cacheSize, cel.Variable("object", cel.DynType))
	if err != nil {
		return nil, err
	}
	return &States{cel: programs, rego: rego}, nil
}

// compile checks and compiles an expression; errors say what is wrong with it.
func (s *States) compile(expr string) (cel.Program, error) { return s.cel.Compile(expr) }

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
	out, err := s.cel.Eval(ctx, expr, map[string]any{"object": obj.Object})
	if err != nil {
		return "", fmt.Errorf("CEL %q on %s %s: %w", expr, obj.GetKind(), obj.GetName(), err)
	}
	v, ok := out.Value().(string)
	if !ok {
		return "", fmt.Errorf("CEL %q yields a %s, not a string", expr, out.Type().TypeName())
	}
	return v, nil
}
