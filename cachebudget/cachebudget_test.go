package cachebudget

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// TestConcurrentAddsOfOneKeyCountItOnce: Adds of one key at once (every registry 401 adds its
// realm) count the one entry the cache keeps once, not each Add's.
func TestConcurrentAddsOfOneKeyCountItOnce(t *testing.T) {
	b := &Budget{Max: 1 << 20}
	c := expirable.NewLRU(100, func(_ string, v []byte) { b.Evicted(int64(len(v))) }, time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				Add(b, c, "realm", make([]byte, 100), 100)
			}
		})
	}
	wg.Wait()
	if held := b.Held(); held != 100 || c.Len() != 1 {
		t.Errorf("%d bytes counted for %d entries of 100 bytes, want 100 for 1", held, c.Len())
	}
}
