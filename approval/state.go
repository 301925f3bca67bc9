package approval

import (
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// states reads check states: a CEL expression over `object`, or the object's status.state.
// Compiled expressions are kept by their text.
type states struct {
	env  *cel.Env
	mu   sync.Mutex
	prgs map[string]cel.Program
}

func newStates() (*states, error) {
	env, err := cel.NewEnv(cel.Variable("object", cel.DynType))
	if err != nil {
		return nil, err
	}
	return &states{env: env, prgs: map[string]cel.Program{}}, nil
}

// compile checks and compiles an expression; errors say what is wrong with it.
func (s *states) compile(expr string) (cel.Program, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.prgs[expr]; ok {
		return p, nil
	}
	ast, iss := s.env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("invalid CEL %q: %w", expr, iss.Err())
	}
	p, err := s.env.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("invalid CEL %q: %w", expr, err)
	}
	s.prgs[expr] = p
	return p, nil
}

// state returns one of approved, passed, rejected or pending for a matched object.
func (s *states) state(obj *unstructured.Unstructured, check *v1alpha1.CheckSpec) (string, error) {
	var state string
	if check.State != nil && check.State.CEL != "" {
		p, err := s.compile(check.State.CEL)
		if err != nil {
			return "", err
		}
		out, _, err := p.Eval(map[string]any{"object": obj.Object})
		if err != nil {
			return "", fmt.Errorf("CEL %q on %s %s: %w", check.State.CEL, obj.GetKind(), obj.GetName(), err)
		}
		v, ok := out.Value().(string)
		if !ok {
			return "", fmt.Errorf("CEL %q yields %v, not a string", check.State.CEL, out.Value())
		}
		state = v
	} else {
		v, _, _ := unstructured.NestedString(obj.Object, "status", "state")
		state = v
	}
	switch state {
	case v1alpha1.StateApproved, v1alpha1.StatePassed, v1alpha1.StateRejected, v1alpha1.StatePending:
		return state, nil
	case "":
		return v1alpha1.StatePending, nil
	}
	return "", fmt.Errorf("%s %s has state %q, not one of approved, passed, rejected, pending", obj.GetKind(), obj.GetName(), state)
}
