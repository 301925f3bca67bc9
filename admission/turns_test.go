package admission

import (
	"context"
	"testing"
	"time"
)

// TestNamespaceTurns: a namespace that spent its burst waits for its next turn (or is told it
// will not come before its deadline); another namespace's turn is its own.
func TestNamespaceTurns(t *testing.T) {
	turns := newNamespaceTurns(liveReadsPerNamespace, 2*liveReadsPerNamespace)
	for range 2 * liveReadsPerNamespace {
		if err := turns.wait(context.Background(), "busy"); err != nil {
			t.Fatal(err)
		}
	}
	soon, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := turns.wait(soon, "busy"); err == nil {
		t.Error("a namespace past its burst got a turn at once")
	}
	quiet, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := turns.wait(quiet, "quiet"); err != nil {
		t.Errorf("another namespace waited for the busy one's turns: %v", err)
	}
}
