package proxy

import (
	"hash/maphash"
	"sync/atomic"

	"k8s.io/apiserver/pkg/authentication/user"
)

// routeEpochShards is how many groups of Pods a dropped Pod's decisions (ForgetPod) end the
// remembered routes of: its own group only, so that one tenant changing its AccessRequests
// again and again ends about 1/256 of the other Pods' remembered routes on the node, not all.
const routeEpochShards = 256

// routeEpochs tells a remembered route (laneMemo) whether its Pod's decisions were dropped
// since it was resolved. A clock ticks once per ForgetPod; each group of Pods keeps the tick of
// its last. A route remembers the tick read before its decisions were made and its Pod's group,
// and is used again while that group's last tick is not newer. Written here because a
// per-Pod counter would need a map that grows with the Pods the node has seen and a lookup per
// request; a fixed array needs neither, and a shared group only ends more routes than needed.
type routeEpochs struct {
	clock atomic.Uint64
	last  [routeEpochShards]atomic.Uint64
}

// routeEpochSeed makes the groups unpredictable, so that no tenant can name a Pod into a
// victim's group.
var routeEpochSeed = maphash.MakeSeed()

// now is the tick to remember a route at, read before its decisions are made: a Pod's
// decisions dropped meanwhile make the route ended at once.
func (e *routeEpochs) now() uint64 { return e.clock.Load() }

// forget ends the remembered routes of the Pod's group.
func (e *routeEpochs) forget(namespace, name string) {
	tick := e.clock.Add(1)
	last := &e.last[e.shard(namespace, name)]
	for {
		// Only ever forward: two ForgetPods of a group may store out of order.
		old := last.Load()
		if old >= tick || last.CompareAndSwap(old, tick) {
			return
		}
	}
}

// unchanged tells whether no Pod of the group had its decisions dropped after tick.
func (e *routeEpochs) unchanged(shard uint8, tick uint64) bool {
	return e.last[shard].Load() <= tick
}

// shardOf is the group of u's Pod; callers not of a Pod share group 0 (ForgetPod drops no
// decisions of theirs: theirs end with their cache entries' time).
func (e *routeEpochs) shardOf(u user.Info) uint8 {
	pod, ok := podOfUser(u)
	if !ok {
		return 0
	}
	return e.shard(pod.namespace, pod.name)
}

func (*routeEpochs) shard(namespace, name string) uint8 {
	var h maphash.Hash
	h.SetSeed(routeEpochSeed)
	h.WriteString(namespace)
	h.WriteByte('/')
	h.WriteString(name)
	return uint8(h.Sum64() % routeEpochShards)
}
