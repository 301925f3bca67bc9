package proxy

import (
	"strconv"
	"sync"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
)

// TestPodEpochs: a route remembered for a Pod ends when that Pod's decisions are dropped,
// and not when another group's are; one remembered after the drop lives; callers not of a Pod
// are group 0; and a group's tick only moves forward.
func TestPodEpochs(t *testing.T) {
	var e podEpochs
	pod := &user.DefaultInfo{Name: "system:serviceaccount:team:builder",
		Extra: map[string][]string{extraPodName: {"client"}, extraPodUID: {"uid-1"}}}
	shard := e.shardOf(pod)
	if shard != e.shard("team", "client") {
		t.Fatalf("the Pod's group is %d, its name's %d", shard, e.shard("team", "client"))
	}
	if got := e.shardOf(&user.DefaultInfo{Name: "alice"}); got != 0 {
		t.Fatalf("a caller not of a Pod is in group %d, want 0", got)
	}

	tick := e.now()
	e.forget("team", podOfAnotherGroup(&Proxy{}, "team", "client"))
	if !e.unchanged(shard, tick) {
		t.Fatal("another group's Pod's decisions dropped ended the route")
	}
	e.forget("team", "client")
	if e.unchanged(shard, tick) {
		t.Fatal("the route lived on after its Pod's decisions were dropped")
	}
	if !e.unchanged(shard, e.now()) {
		t.Fatal("a route remembered after the drop was ended by it")
	}

	// Two drops of a group may finish out of order: the older one's must not lower the group's
	// tick below the newer one's.
	e.clock.Store(4)
	e.last[shard].Store(10)
	e.forget("team", "client")
	if got := e.last[shard].Load(); got != 10 {
		t.Fatalf("an older drop set the group's tick back to %d from 10", got)
	}

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				e.forget("team", strconv.Itoa(g*500+i))
			}
		})
	}
	wg.Wait()
	newest := uint64(0)
	for i := range e.last {
		newest = max(newest, e.last[i].Load())
	}
	if newest != e.now() {
		t.Fatalf("the newest group tick is %d after concurrent drops, the clock %d", newest, e.now())
	}
}
