package node

import "sync"

// targetLocks serializes the operations on one target path, and only those. k8s.io/utils'
// keymutex hashes keys onto a fixed set of locks: a publish that waits for its approval (up to
// --approval-wait, longer while the node's caches wait for the API server) would also hold
// back every volume whose path shares its lock, another tenant's too. Here a lock lives while
// someone holds or waits for it.
type targetLocks struct {
	mu    sync.Mutex
	locks map[string]*targetLock
}

type targetLock struct {
	sync.Mutex
	users int // holding or waiting, under targetLocks.mu
}

// lock locks target and returns its unlock.
func (l *targetLocks) lock(target string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*targetLock{}
	}
	tl := l.locks[target]
	if tl == nil {
		tl = &targetLock{}
		l.locks[target] = tl
	}
	tl.users++
	l.mu.Unlock()
	tl.Lock()
	return func() {
		tl.Unlock()
		l.mu.Lock()
		if tl.users--; tl.users == 0 {
			delete(l.locks, target)
		}
		l.mu.Unlock()
	}
}
