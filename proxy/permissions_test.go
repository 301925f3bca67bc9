package proxy

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// countingReviewer allows while allow is true and counts the questions it was asked.
type countingReviewer struct {
	allow bool
	asked int
}

func (r *countingReviewer) AuthenticateToken(context.Context, string) (user.Info, bool, error) {
	return nil, false, nil
}

func (r *countingReviewer) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	r.asked++
	if r.allow {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

func TestPermissionsAreCachedPerPodAndForgotten(t *testing.T) {
	r := &countingReviewer{}
	perms := newPermissions(r, time.Hour, time.Hour, 100)
	p := &Proxy{}
	pod := &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p1"}}}
	other := &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p2"}}}
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
	perms.forgetPod("ns", "p1")
	first, second = ask(pod), ask(pod)
	if !first || !second || r.asked != 2 {
		t.Fatalf("after ForgetPod the grant was not seen at once (asked %d times)", r.asked)
	}
	if !ask(other) || r.asked != 3 {
		t.Fatalf("another Pod shares the first Pod's decisions (asked %d times)", r.asked)
	}
	r.allow = false // revoked
	perms.forgetPod("ns", "p1")
	if ask(pod) {
		t.Fatal("after ForgetPod a revoked grant still worked")
	}
	if !ask(other) {
		t.Fatal("forgetting one Pod dropped another's decisions")
	}
}
