package approval

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func celCheck(expr string) *v1alpha1.CheckSpec {
	return &v1alpha1.CheckSpec{State: &v1alpha1.CheckState{CEL: expr}}
}

func TestCELStates(t *testing.T) {
	s, err := NewStates(16)
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
	s, err := NewStates(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{`"a"`, `"b"`, `"a"`, `"c"`} {
		if _, err := s.compile(expr); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.prgs.Len(); n != 2 {
		t.Fatalf("%d programs kept, want 2", n)
	}
	if _, ok := s.prgs.Get(`"b"`); ok {
		t.Error(`the least recently used "b" was kept`)
	}
}
