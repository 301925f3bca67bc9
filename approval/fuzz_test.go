package approval

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// FuzzCheckState feeds what a tenant controls in a check — the matched object's status.state
// and a CEL state expression or a Rego module — to the state reader: it never panics, answers
// only one of the four states, and its errors never quote the object (here: a value the
// expression does not spell itself). An expression starting with "package " is a Rego module.
func FuzzCheckState(f *testing.F) {
	s, err := NewStates(16, testRego(f))
	if err != nil {
		f.Fatal(err)
	}
	const secret = "s3cr3t-7f1e"
	f.Fuzz(func(t *testing.T, state, expr string) {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.com/v1", "kind": "Check", "metadata": map[string]any{"name": "c"},
			"spec":   map[string]any{"token": secret, "n": int64(3), "items": []any{"a", secret}},
			"status": map[string]any{"state": state},
		}}
		check := &v1alpha1.CheckSpec{}
		switch {
		case strings.HasPrefix(expr, "package "):
			check.State = &v1alpha1.CheckState{Rego: expr}
		case expr != "":
			check.State = &v1alpha1.CheckState{CEL: expr}
		}
		got, err := s.state(context.Background(), obj, check)
		if err != nil {
			if strings.Contains(err.Error(), secret) && !strings.Contains(expr, secret) {
				t.Fatalf("state(%q, %q) error quotes the object: %v", state, expr, err)
			}
			return
		}
		switch got {
		case v1alpha1.StateApproved, v1alpha1.StatePassed, v1alpha1.StateRejected, v1alpha1.StatePending:
		default:
			t.Fatalf("state(%q, %q) = %q", state, expr, got)
		}
	})
}
