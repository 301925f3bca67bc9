package proxy

import (
	"hash/maphash"
	"sync/atomic"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
)

// podEpochShards is how many groups of Pods a Pod's changed AccessRequests (ForgetPod) end the
// remembered decisions of: its own group only, so that one tenant changing its AccessRequests
// again and again ends about 1/256 of the other Pods' remembered decisions on the node, not all.
const podEpochShards = 256

// podEpochs tells a remembered decision (a laneMemo's route, a connectors/proxy permission)
// whether its Pod's AccessRequests changed since it was made. A clock ticks once per ForgetPod;
// each group of Pods keeps the tick of its last. A decision remembers the tick read before it
// was made and its Pod's group, and is used again while that group's last tick is not newer:
// so ForgetPod costs the same whatever the caches hold, and a change that lands while a
// decision is being made (a SubjectAccessReview in flight) ends it too. Written here because a
// per-Pod counter would need a map that grows with the Pods the node has seen and a lookup per
// request; a fixed array needs neither, and a shared group only ends more decisions than needed.
type podEpochs struct {
	clock atomic.Uint64
	last  [podEpochShards]atomic.Uint64
	// changed is when each group last changed, as nanoseconds since podEpochStart (0: never),
	// for the decisions made while the API servers may still be catching up
	// (permissionTTLs.settle). Monotonic: a step of the node's wall clock moves nothing.
	changed [podEpochShards]atomic.Int64
}

// podEpochSeed makes the groups unpredictable, so that no tenant can name a Pod into a
// victim's group.
var podEpochSeed = maphash.MakeSeed()

// podEpochStart is what podEpochs.changed counts from (a second before the process started,
// so that no change is at 0).
var podEpochStart = time.Now().Add(-time.Second)

// now is the tick to remember a decision at, read before it is made: a change of the Pod's
// AccessRequests meanwhile makes it ended at once.
func (e *podEpochs) now() uint64 { return e.clock.Load() }

// forget ends the remembered decisions of the Pod's group.
func (e *podEpochs) forget(namespace, name string) {
	tick, shard := e.clock.Add(1), e.shard(namespace, name)
	e.changed[shard].Store(int64(time.Since(podEpochStart)))
	last := &e.last[shard]
	for {
		// Only ever forward: two ForgetPods of a group may store out of order.
		old := last.Load()
		if old >= tick || last.CompareAndSwap(old, tick) {
			return
		}
	}
}

// unchanged tells whether no Pod of the group had its decisions dropped after tick.
func (e *podEpochs) unchanged(shard uint8, tick uint64) bool {
	return e.last[shard].Load() <= tick
}

// changedAt is when a Pod of the group last changed, if one ever did.
func (e *podEpochs) changedAt(shard uint8) (time.Time, bool) {
	since := e.changed[shard].Load()
	return podEpochStart.Add(time.Duration(since)), since != 0
}

// shardOf is the group of u's Pod; callers not of a Pod share group 0 (theirs end with their
// cache entries' time, and with the changes of group 0's Pods).
func (e *podEpochs) shardOf(u user.Info) uint8 {
	pod, ok := podOfUser(u)
	if !ok {
		return 0
	}
	return e.shard(pod.namespace, pod.name)
}

func (*podEpochs) shard(namespace, name string) uint8 {
	var h maphash.Hash
	h.SetSeed(podEpochSeed)
	h.WriteString(namespace)
	h.WriteByte('/')
	h.WriteString(name)
	return uint8(h.Sum64() % podEpochShards)
}
