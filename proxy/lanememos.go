package proxy

import (
	"bytes"
	"hash/maphash"
	"sync"
	"time"
)

// sharedMemos are the routes the fast lane's connections remembered lately (laneMemo), for
// the first request of a new connection: a client that opens a connection for each request
// (curl in a pipeline's step, a webhook) would otherwise have every request parsed by
// net/http, authenticated, authorized and routed again, where a keep-alive client's requests
// are served in place along its connection's memo (docs/benchmarks.md). A memo is found by
// what a head read in place is matched with (memoKey) and copied into the new connection,
// whose routeForHead then checks the head against it as against one of its own; it serves
// until it would have ended in the connection that made it (laneMemoTTL after the decisions
// it rests on, or at once when a Pod's decisions are dropped: live). A route resolved for a
// token an authExtractor found, inside a CONNECT tunnel, or among several Connectors, is not
// shared.
type sharedMemos struct {
	mu      sync.RWMutex
	memos   map[uint64]*laneMemo
	sweeper *time.Timer
}

// sharedMemosMax bounds the memos kept: those of the last laneMemoTTL, each holding a token
// (a projected ServiceAccount token is about 1 KiB).
const sharedMemosMax = 1024

// memoSeed seeds memoKey's hash.
var memoSeed = maphash.MakeSeed()

// memoKey is the key of a head's memo: a hash of its method, and for a forward head its
// destination's authority and Proxy-Authorization value, for a reverse one the host it
// reached the proxy by, its Authorization value and its path's Connector prefix
// (reversePrefix, the namespace, "/connectors/", the name; none for a Connector's own host).
// A hash, so that finding a head's memo copies nothing; two memos of one hash are told apart
// by routeForHead, which compares the head with the memo it gets.
func memoKey(forward bool, method string, host, credential, prefix []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(memoSeed)
	if forward {
		_ = h.WriteByte('f')
	}
	_, _ = h.WriteString(method)
	for _, part := range [][]byte{host, credential, prefix} {
		_ = h.WriteByte(0)
		_, _ = h.Write(part)
	}
	return h.Sum64()
}

// share keeps a copy of m, just remembered by a connection, for new connections.
func (s *sharedMemos) share(p *Proxy, m *laneMemo) {
	if !m.inPlace || m.key.tunnel || m.rt.callerToken != "" {
		return
	}
	var key uint64
	if m.key.forward {
		key = memoKey(true, m.key.method, []byte(m.key.host), []byte(m.key.credential), nil)
	} else {
		key = memoKey(false, m.key.method, []byte(m.key.host), []byte(m.auth), []byte(m.prefix))
	}
	kept := *m
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.memos == nil {
		s.memos = map[uint64]*laneMemo{}
	}
	if len(s.memos) >= sharedMemosMax {
		s.dropEnded(p, time.Now())
		if len(s.memos) >= sharedMemosMax {
			return
		}
	}
	s.memos[key] = &kept
	if s.sweeper == nil {
		s.sweeper = time.AfterFunc(laneMemoTTL, func() { s.sweep(p) })
	}
}

// dropEnded drops the memos no longer live; s.mu is held.
func (s *sharedMemos) dropEnded(p *Proxy, now time.Time) {
	for k, m := range s.memos {
		if !m.live(p, now) {
			delete(s.memos, k)
		}
	}
}

// sweep drops the memos that ended, and runs again while any are left: a token is kept no
// longer than its memo serves.
func (s *sharedMemos) sweep(p *Proxy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropEnded(p, time.Now())
	if len(s.memos) == 0 {
		s.sweeper = nil
		return
	}
	s.sweeper.Reset(laneMemoTTL)
}

// adopt copies into m the live shared memo a head h read in place may follow, and tells
// whether there was one.
func (s *sharedMemos) adopt(p *Proxy, m *laneMemo, h *laneHead, now time.Time) bool {
	authority, forward := forwardAuthority(h.target)
	s.mu.RLock()
	var shared *laneMemo
	if forward {
		shared = s.memos[memoKey(true, h.method, authority, h.proxyAuth, nil)]
	} else if shared = s.memos[memoKey(false, h.method, h.host, h.auth, connectorPrefix(h.target))]; shared == nil {
		// Perhaps the host is a Connector's own (byHost), whose memos have no prefix.
		shared = s.memos[memoKey(false, h.method, h.host, h.auth, nil)]
	}
	s.mu.RUnlock()
	if shared == nil || !shared.live(p, now) {
		return false
	}
	*m = *shared
	return true
}

// forwardAuthority is the authority of an absolute http:// target (a forward head's).
func forwardAuthority(target []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(target, []byte("http://"))
	if !ok {
		return nil, false
	}
	if end := bytes.IndexAny(rest, "/?"); end >= 0 {
		rest = rest[:end]
	}
	return rest, true
}

// connectorPrefix is the part of a reverse target that names its Connector, as laneMemo's
// prefix: "/namespaces/<namespace>/connectors/<name>"; nil when the target has none.
func connectorPrefix(target []byte) []byte {
	rest, ok := bytes.CutPrefix(target, []byte(reversePrefix))
	if !ok {
		return nil
	}
	ns := bytes.IndexByte(rest, '/')
	if ns < 0 {
		return nil
	}
	name, ok := bytes.CutPrefix(rest[ns:], []byte("/connectors/"))
	if !ok {
		return nil
	}
	end := bytes.IndexAny(name, "/?")
	if end < 0 {
		end = len(name)
	}
	return target[:len(target)-len(name)+end]
}
