// Package singlecall runs one call for the concurrent callers of a key, each of whom waits for
// it within its own context. golang.org/x/sync/singleflight shares the call; what it leaves
// to its users is whose context the call runs in: the first caller's would end it for every
// other one when the first gives up, though they may have longer.
package singlecall

import (
	"context"
	"time"

	"golang.org/x/sync/singleflight"
)

// Do runs fn once for the callers of key at a time, in a context of its own that ends after
// timeout (keeping the first caller's values, not its end), and returns its result to each
// caller still waiting; a caller whose ctx ends first gets ctx's error.
func Do[T any](ctx context.Context, g *singleflight.Group, key string, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ch := g.DoChan(key, func() (any, error) {
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		return fn(callCtx)
	})
	var zero T
	select {
	case res := <-ch:
		if res.Err != nil {
			return zero, res.Err
		}
		v, _ := res.Val.(T) // a nil interface T comes back as a nil any
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}
