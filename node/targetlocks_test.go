package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestTargetLocksHoldOnlyTheirTarget: a target held (a publish waiting for its approval) holds
// back the operations on that target only, whatever the others are named (256 hashed locks
// had a third of 110 volumes share one), and a lock no one holds is forgotten.
func TestTargetLocksHoldOnlyTheirTarget(t *testing.T) {
	var l targetLocks
	const held = "/var/lib/kubelet/pods/a/volumes/kubernetes.io~csi/connectors/mount"
	unlock := l.lock(held)
	others := make(chan struct{})
	go func() {
		for i := range 1000 {
			l.lock(fmt.Sprintf("/var/lib/kubelet/pods/%d/volumes/kubernetes.io~csi/connectors/mount", i))()
		}
		close(others)
	}()
	select {
	case <-others:
	case <-time.After(30 * time.Second):
		t.Fatal("operations on other targets waited for the held one")
	}
	second := make(chan struct{})
	go func() {
		defer l.lock(held)()
		close(second)
	}()
	if !kubelet.WaitUntil(30*time.Second, func() bool { return l.users(held) == 2 }) {
		t.Fatal("the second operation on the held target never asked for it")
	}
	select {
	case <-second:
		t.Fatal("a second operation on a held target did not wait")
	default:
	}
	unlock()
	<-second
	if n := l.held(); n != 0 {
		t.Errorf("%d locks kept after every operation ended, want none", n)
	}
}

// users is how many operations hold or wait for target.
func (l *targetLocks) users(target string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tl := l.locks[target]; tl != nil {
		return tl.users
	}
	return 0
}

// held is how many targets are locked or waited for.
func (l *targetLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.locks)
}
