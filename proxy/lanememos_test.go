package proxy

import (
	"strconv"
	"testing"
	"time"
)

// sharedTestMemo is the memo a connection remembers for a reverse GET with auth, and the head
// of a new connection's same request.
func sharedTestMemo(t *testing.T, p *Proxy, auth string) (*laneMemo, *laneHead) {
	t.Helper()
	head := "GET /namespaces/team/connectors/git/x HTTP/1.1\r\nHost: proxy:8080\r\nAuthorization: " + auth + "\r\n\r\n"
	c := &laneConn{lane: laneTestLane}
	r := readBack(t, []byte(head))
	key, _, _ := c.keyOf(r)
	rt, ok := laneTestRoute(c, r, laneAddresses[0])
	if !ok {
		t.Fatal("no route")
	}
	rt.epochShard = p.podEpochs.shard("team", "pod")
	m := &laneMemo{}
	m.remember(key, auth, rt, p.podEpochs.now())
	h := &laneHead{}
	if !readLaneHead([]byte(head), h, false) {
		t.Fatal("the head is not read in place")
	}
	return m, h
}

// TestSharedMemosEnd: a shared memo serves new connections until a Pod's decisions are
// dropped (ForgetPod) or its time is up, and is then swept; memos past sharedMemosMax wait
// until earlier ones end; routes of extracted tokens and tunnels are not shared.
func TestSharedMemosEnd(t *testing.T) {
	p := &Proxy{}
	var s sharedMemos
	adopts := func(h *laneHead) bool {
		var m laneMemo
		return s.adopt(p, &m, h, time.Now())
	}
	m, h := sharedTestMemo(t, p, "Bearer a")
	s.share(p, m)
	if !adopts(h) {
		t.Fatal("a new connection's head did not find the memo shared")
	}
	p.ForgetPod("team", "pod")
	if adopts(h) {
		t.Fatal("a memo shared before a Pod's decisions were dropped was found")
	}
	s.sweep(p)
	if len(s.memos) != 0 || s.sweeper != nil {
		t.Fatalf("%d memos kept after they ended (sweeper %v)", len(s.memos), s.sweeper != nil)
	}

	m, h = sharedTestMemo(t, p, "Bearer a")
	m.until = time.Now().Add(-time.Millisecond)
	s.share(p, m)
	if adopts(h) {
		t.Fatal("a memo past its time was found")
	}

	for i := range sharedMemosMax {
		full, _ := sharedTestMemo(t, p, "Bearer "+strconv.Itoa(i))
		s.share(p, full)
	}
	extra, h := sharedTestMemo(t, p, "Bearer extra")
	s.share(p, extra)
	if adopts(h) || len(s.memos) > sharedMemosMax {
		t.Fatalf("%d memos kept, past sharedMemosMax", len(s.memos))
	}
	p.ForgetPod("team", "pod")
	extra.epoch = p.podEpochs.now()
	s.share(p, extra)
	if !adopts(h) || len(s.memos) != 1 {
		t.Fatalf("%d memos kept once the others ended; the new one found: %v", len(s.memos), adopts(h))
	}

	extracted, h := sharedTestMemo(t, p, "Bearer x")
	extracted.rt.callerToken = "x"
	tunnelled, h2 := sharedTestMemo(t, p, "Bearer y")
	tunnelled.key.tunnel = true
	s.share(p, extracted)
	s.share(p, tunnelled)
	if adopts(h) || adopts(h2) {
		t.Fatal("a route of a token an extractor found, or a tunnel's, was shared")
	}
}
