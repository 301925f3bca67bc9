package approval

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

func testRego(t testing.TB) *regoeval.Engine {
	t.Helper()
	e, err := regoeval.New("rego_approval_test", regoeval.Config{CacheSize: 16, Timeout: time.Second, MaxBodyBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func celCheck(expr string) *v1alpha1.CheckSpec {
	return &v1alpha1.CheckSpec{State: &v1alpha1.CheckState{CEL: expr}}
}

func TestCELStates(t *testing.T) {
	s, err := NewStates(16, testRego(t))
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"kind": "ApprovalTask",
		"metadata": map[string]any{"name": "a"}, "spec": map[string]any{"secret": "hunter2"}, "status": map[string]any{"state": "approved"}}}
	if st, err := s.state(context.Background(), obj, celCheck(`object.status.state == "approved" ? "passed" : "pending"`)); err != nil || st != "passed" {
		t.Fatalf("state %q %v", st, err)
	}
	numbers := make([]string, 100)
	for i := range numbers {
		numbers[i] = strconv.Itoa(i)
	}
	list := "[" + strings.Join(numbers, ",") + "]"
	for expr, want := range map[string]string{
		list + ".map(x, " + list + ".map(y, " + list + ".map(z, x + y + z))).size() > 0 ? 'passed' : 'x'": "exceeded the cost limit",
		"object.spec.secret": "a state that is not one of",
		"object.spec":        "yields a map, not a string",
		"int(object.spec.secret) > 0 ? 'passed' : 'x'": "message is withheld",
		"object.spec.nope":           "no such key: nope",
		"object[object.spec.secret]": "message is withheld",
	} {
		_, err := s.state(context.Background(), obj, celCheck(expr))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%.60s: %v, want %q and no value", expr, err, want)
		}
	}
	obj.Object["status"] = map[string]any{"state": "hunter2"}
	if _, err := s.state(context.Background(), obj, &v1alpha1.CheckSpec{}); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("status.state: %v", err)
	}
}

func TestCompiledProgramsAreBounded(t *testing.T) {
	s, err := NewStates(2, testRego(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{`"a"`, `"b"`, `"a"`, `"c"`} {
		if _, err := s.compile(expr); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.cel.Len(); n != 2 {
		t.Fatalf("%d programs kept, want 2", n)
	}
	if s.cel.Cached(`"b"`) || !s.cel.Cached(`"a"`) {
		t.Error(`the least recently used "b" was kept, or "a" dropped`)
	}
}

// Alauda's state.rego: package approval, the object as input, status.state as the answer;
// errors, like CEL's, never quote the object.
func TestRegoStates(t *testing.T) {
	s, err := NewStates(16, testRego(t))
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"kind": "ApprovalTask",
		"metadata": map[string]any{"name": "a"}, "spec": map[string]any{"secret": "hunter2"}, "status": map[string]any{"decision": "yes"}}}
	regoCheck := func(module string) *v1alpha1.CheckSpec {
		return &v1alpha1.CheckSpec{State: &v1alpha1.CheckState{Rego: module}}
	}
	if st, err := s.state(context.Background(), obj, regoCheck(`package approval
status := {"state": "approved"} if input.status.decision == "yes"`)); err != nil || st != "approved" {
		t.Fatalf("state %q %v", st, err)
	}
	// Undefined is pending, as a missing status.state is.
	if st, err := s.state(context.Background(), obj, regoCheck(`package approval
status := {"state": "approved"} if input.status.decision == "no"`)); err != nil || st != "pending" {
		t.Fatalf("undefined: %q %v", st, err)
	}
	for module, want := range map[string]string{
		"package approval\nstatus := {\"state\": input.spec.secret}": "a state that is not one of",
		"package approval\nstatus := input.spec.secret":              "status must be an object",
		"package check\nstatus := {}":                                "it must be package approval",
		"package approval\nstatus := {\"state\": http.send({})}":     "undefined function http.send",
	} {
		_, err := s.state(context.Background(), obj, regoCheck(module))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: %v, want %q and no value", module, err, want)
		}
	}
	both := &v1alpha1.CheckSpec{State: &v1alpha1.CheckState{CEL: `"approved"`, Rego: "package approval"}}
	if err := s.Validate(both.State); err == nil || !strings.Contains(err.Error(), "both cel and rego") {
		t.Errorf("both: %v", err)
	}
}
