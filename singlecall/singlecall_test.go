package singlecall

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/singleflight"
)

// TestOneCallEachWaitingWithinItsOwnContext: a caller arriving while the key's call runs waits
// for it rather than calling again; a caller whose context ends gets its own error, and the
// call goes on (its context is not the first caller's).
func TestOneCallEachWaitingWithinItsOwnContext(t *testing.T) {
	var g singleflight.Group
	var calls atomic.Int32 // calls of fn
	entered, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var callErr error
	fn := func(ctx context.Context) (int, error) {
		if calls.Add(1) > 1 {
			return 0, errors.New("called again")
		}
		close(entered)
		<-release
		callErr = ctx.Err()
		close(done)
		return 42, nil
	}
	firstCtx, cancelFirst := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := Do(firstCtx, &g, "k", time.Minute, fn); first <- err }()
	<-entered

	laterCtx, cancelLater := context.WithCancel(context.Background())
	cancelLater()
	if _, err := Do(laterCtx, &g, "k", time.Minute, fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller whose context ended: %v, want its own error", err)
	}
	cancelFirst()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the first caller, its context ended: %v", err)
	}
	close(release)
	<-done
	if n := calls.Load(); n != 1 {
		t.Errorf("the key's call ran %d times, want once: the later caller waited for it", n)
	}
	if callErr != nil {
		t.Errorf("the call's context ended with the first caller's: %v", callErr)
	}
}
