package proxy

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// countingReviewer allows while allow is true and counts the questions it was asked; during,
// if set, runs after a question's answer is decided and before it is returned.
type countingReviewer struct {
	allow  bool
	asked  int
	during func()
}

func (r *countingReviewer) AuthenticateToken(context.Context, string) (user.Info, bool, error) {
	return nil, false, nil
}

func (r *countingReviewer) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	r.asked++
	allow := r.allow // answered as of the question: during changes only later ones
	if r.during != nil {
		r.during()
	}
	if allow {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

func TestPermissionsAreCachedPerPodAndForgotten(t *testing.T) {
	r := &countingReviewer{}
	p := &Proxy{}
	perms := newPermissions(r, permissionTTLs{allow: time.Hour, deny: time.Hour}, 100, &p.podEpochs)
	pod := &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p1"}}}
	other := &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {podOfAnotherGroup(p, "ns", "p1")}}}
	nn := types.NamespacedName{Namespace: "ns", Name: "git"}
	ask := func(u user.Info) bool {
		ok, err := perms.allowed(context.Background(), p, u, nn, "get", "proxy")
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	first, second := ask(pod), ask(pod)
	if first || second || r.asked != 1 {
		t.Fatalf("a denial was not cached: asked %d times", r.asked)
	}
	r.allow = true // granted: the node sees the Pod's AccessRequest change
	if ask(pod) {
		t.Fatal("the cached denial was not used")
	}
	p.ForgetPod("ns", "p1")
	first, second = ask(pod), ask(pod)
	if !first || !second || r.asked != 2 {
		t.Fatalf("after ForgetPod the grant was not seen at once (asked %d times)", r.asked)
	}
	if !ask(other) || r.asked != 3 {
		t.Fatalf("another Pod shares the first Pod's decisions (asked %d times)", r.asked)
	}
	r.allow = false // revoked
	p.ForgetPod("ns", "p1")
	if ask(pod) {
		t.Fatal("after ForgetPod a revoked grant still worked")
	}
	if asked := r.asked; !ask(other) || r.asked != asked {
		t.Fatalf("forgetting one Pod dropped another's decisions, of a Pod of another group (asked %d times)", r.asked)
	}
}

// TestPermissionsChangedInFlight: a Pod's AccessRequest that changes while its question is
// being answered ends that answer: the next request asks again rather than using a grant that
// may have just been revoked.
func TestPermissionsChangedInFlight(t *testing.T) {
	p := &Proxy{}
	r := &countingReviewer{allow: true}
	perms := newPermissions(r, permissionTTLs{allow: time.Hour, deny: time.Hour}, 100, &p.podEpochs)
	pod := &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p1"}}}
	nn := types.NamespacedName{Namespace: "ns", Name: "git"}
	r.during = func() {
		r.during = nil
		r.allow = false // revoked while the allowing answer is on its way
		p.ForgetPod("ns", "p1")
	}
	if ok, err := perms.allowed(context.Background(), p, pod, nn, "get", "proxy"); err != nil || !ok {
		t.Fatalf("the answer in flight: %v, %v; want the allowing one", ok, err)
	}
	if ok, err := perms.allowed(context.Background(), p, pod, nn, "get", "proxy"); err != nil || ok || r.asked != 2 {
		t.Fatalf("after a change in flight: allowed %v (%v), asked %d times; want asked again and denied", ok, err, r.asked)
	}
}

// TestPermissionsSettle: a decision made within the settling after a change of its Pod's
// group is kept only until the settling ends (the API server may not have seen the RoleBinding
// change yet), then asked again and kept for its whole TTL; a settle of 0 changes nothing.
func TestPermissionsSettle(t *testing.T) {
	for _, tc := range []struct {
		settle time.Duration
		asked  []int // after 0, 1.5 s, 3 s, 4 s from the change
	}{
		{settle: 2 * time.Second, asked: []int{1, 1, 2, 2}},
		{settle: 0, asked: []int{1, 1, 1, 1}},
	} {
		p := &Proxy{}
		r := &countingReviewer{allow: true}
		perms := newPermissions(r, permissionTTLs{allow: time.Hour, deny: time.Hour, settle: tc.settle}, 100, &p.podEpochs)
		changed := time.Now()
		clock := changed
		perms.now = func() time.Time { return clock }
		pod := &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p1"}}}
		nn := types.NamespacedName{Namespace: "ns", Name: "git"}
		p.ForgetPod("ns", "p1")
		p.podEpochs.changed[p.podEpochs.shard("ns", "p1")].Store(int64(changed.Sub(podEpochStart))) // on this test's clock
		for i, after := range []time.Duration{0, 1500 * time.Millisecond, 3 * time.Second, 4 * time.Second} {
			clock = changed.Add(after)
			if ok, err := perms.allowed(context.Background(), p, pod, nn, "get", "proxy"); err != nil || !ok {
				t.Fatalf("settle %v, %v after the change: %v, %v", tc.settle, after, ok, err)
			}
			if r.asked != tc.asked[i] {
				t.Errorf("settle %v, %v after the change: asked %d times, want %d", tc.settle, after, r.asked, tc.asked[i])
			}
		}
	}
}
