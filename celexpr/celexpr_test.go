package celexpr

import (
	"context"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
)

func TestLimitsAndWithheldMessages(t *testing.T) {
	p, err := New("test_cel", 2, cel.Variable("x", cel.DynType))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if out, err := p.Eval(ctx, `x.a + "!"`, map[string]any{"x": map[string]any{"a": "hi"}}); err != nil || out.Value() != "hi!" {
		t.Fatalf("Eval = %v, %v", out, err)
	}
	list := "[" + strings.Repeat("0,", 99) + "0]"
	_, err = p.Eval(ctx, list+".map(a, "+list+".map(b, "+list+".map(c, a+b+c))).size() > 0", nil)
	if err == nil || !(strings.Contains(err.Error(), "cost limit") || strings.Contains(err.Error(), "ran longer than")) {
		t.Errorf("an expensive expression: %v, want the cost or time limit", err)
	}
	_, err = p.Eval(ctx, `int(x.secret) > 0`, map[string]any{"x": map[string]any{"secret": "s3cr3t"}})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("a failed conversion: %v, want an error that does not quote the value", err)
	}
	if _, err := p.Compile(`x.`); err == nil || !strings.Contains(err.Error(), "invalid CEL") {
		t.Errorf("a syntax error: %v", err)
	}
	if p.Len() > 2 {
		t.Errorf("%d programs kept, want at most 2", p.Len())
	}
}
