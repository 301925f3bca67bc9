// Package cachebudget bounds an LRU cache by the bytes of what it holds, besides its count of
// entries: a tenant makes each entry of some caches (Secrets, CA bundles) as large as the API
// server takes. hashicorp's LRUs, which the caches are, bound the count only.
package cachebudget

import (
	"sync"
	"sync/atomic"
)

// LRU is what a budget needs of a cache: hashicorp's lru.Cache and expirable.LRU both have it.
type LRU[K comparable, V any] interface {
	Add(key K, value V) bool
	Remove(key K) bool
	RemoveOldest() (K, V, bool)
}

// Budget counts the bytes a cache holds, at most Max. The cache's eviction callback must call
// Evicted with each entry's size, so that entries leaving by expiry or by count are counted out.
type Budget struct {
	Max  int64
	held atomic.Int64
	// adding makes Add's steps one: two Adds of one key at once would each count their bytes,
	// of which the cache keeps one entry (the second replaces the first, unevicted), and the
	// bytes counted and never held would make the budget smaller for good.
	adding sync.Mutex
}

// Evicted counts out an entry of size bytes that left the cache.
func (b *Budget) Evicted(size int64) { b.held.Add(-size) }

// Held is the bytes the cache holds.
func (b *Budget) Held() int64 { return b.held.Load() }

// Add puts value (of size bytes) into c under key, then drops the least recently used entries
// while more than b.Max bytes are held. A value larger than b.Max alone is not kept.
func Add[K comparable, V any](b *Budget, c LRU[K, V], key K, value V, size int64) {
	if size > b.Max {
		return
	}
	b.adding.Lock()
	defer b.adding.Unlock()
	// Add would replace an entry of key, expired or not, without evicting it: its bytes would
	// stay counted.
	c.Remove(key)
	c.Add(key, value)
	b.held.Add(size)
	for b.held.Load() > b.Max {
		if _, _, ok := c.RemoveOldest(); !ok {
			return
		}
	}
}
