package turns

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestWait: a namespace that spent its burst waits for its next turn (or is told it will not
// come before its deadline); another namespace's turn is its own.
func TestWait(t *testing.T) {
	turns := New(1, 2)
	for range 2 {
		if err := turns.Wait(context.Background(), "busy"); err != nil {
			t.Fatal(err)
		}
	}
	soon, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := turns.Wait(soon, "busy"); err == nil {
		t.Error("a namespace past its burst got a turn at once")
	}
	quiet, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := turns.Wait(quiet, "quiet"); err != nil {
		t.Errorf("another namespace waited for the busy one's turns: %v", err)
	}
}

// TestAllowWith: a namespace past its burst gets no turn and leaves the shared ones to others;
// with the shared ones spent, no namespace gets one, and none spends its own on trying.
func TestAllowWith(t *testing.T) {
	turns, shared := New(0.001, 3), rate.NewLimiter(0.001, 5)
	allowed := 0
	for range 10 {
		if turns.AllowWith("busy", shared) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("a namespace of burst 3 got %d turns of 10 asked, want 3", allowed)
	}
	for range 2 {
		if !turns.AllowWith("quiet", shared) {
			t.Fatal("another namespace got no turn while shared ones were left")
		}
	}
	if turns.AllowWith("third", shared) {
		t.Fatal("a namespace got a turn with the shared ones spent")
	}
	if shared.Tokens() >= 1 {
		t.Fatalf("the shared limiter has %.1f turns left after its burst was given, want none", shared.Tokens())
	}
	for range 3 { // its own burst, whole: a fresh shared turn each time
		if !turns.AllowWith("third", rate.NewLimiter(0.001, 1)) {
			t.Fatal("the namespace that was refused for want of a shared turn had spent its own")
		}
	}
}
