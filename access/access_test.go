package access

import (
	"errors"
	"fmt"
	"net/url"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/kubernetes/fake"
)

// TestAttributesKeyTellsQuestionsApart: the decision cache's key differs whenever any attribute
// the webhook authorizer sends differs, including where list values could run together.
func TestAttributesKeyTellsQuestionsApart(t *testing.T) {
	base := func() (*user.DefaultInfo, authorizer.AttributesRecord) {
		u := &user.DefaultInfo{Name: "system:serviceaccount:a:b", UID: "u1", Groups: []string{"g1", "g2"},
			Extra: map[string][]string{"pod-name": {"p"}, "node-name": {"n"}}}
		return u, authorizer.AttributesRecord{User: u, Verb: "get", Namespace: "a", APIGroup: "connectors.alauda.io",
			APIVersion: "v1alpha1", Resource: "connectors", Subresource: "proxy", Name: "git", ResourceRequest: true}
	}
	u0, a0 := base()
	key := attributesKey(a0)
	if again := attributesKey(a0); again != key {
		t.Fatal("the same question gave two keys")
	}
	// The same extra in another map order is the same question.
	u0.Extra = map[string][]string{"node-name": {"n"}, "pod-name": {"p"}}
	if attributesKey(a0) != key {
		t.Error("the key depends on the order of the user's extra")
	}
	for name, change := range map[string]func(*user.DefaultInfo, *authorizer.AttributesRecord){
		"user":        func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.Name += "x" },
		"uid":         func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.UID = "u2" },
		"groups":      func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.Groups = []string{"g1g2"} },
		"group split": func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.Groups = []string{"g1", "g2", ""} },
		"extra":       func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.Extra["pod-name"] = []string{"q"} },
		"extra key":   func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.Extra["pod-uid"] = []string{"1"} },
		"extra split": func(u *user.DefaultInfo, _ *authorizer.AttributesRecord) { u.Extra["pod-name"] = []string{"", "p"} },
		"verb":        func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.Verb = "create" },
		"namespace":   func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.Namespace = "b" },
		"group":       func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.APIGroup = "" },
		"version":     func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.APIVersion = "v1" },
		"resource":    func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.Resource = "secrets" },
		"subresource": func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.Subresource = "" },
		"name":        func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.Name = "gi" },
		"shifted":     func(_ *user.DefaultInfo, a *authorizer.AttributesRecord) { a.Namespace, a.Name = "ag", "it" },
	} {
		u, a := base()
		change(u, &a)
		if attributesKey(a) == key {
			t.Errorf("changing the %s left the key as it was", name)
		}
	}
}

func TestRateLimitedIsAFailureToAsk(t *testing.T) {
	limited := fmt.Errorf("client rate limiter Wait returned an error: %w", errors.New("rate: Wait(n=1) would exceed context deadline"))
	if !isFailureToAsk(limited) || !isFailureToAsk(fmt.Errorf("token review: %w", limited)) {
		t.Error("client-go's rate limiter refusal is not a failure to ask")
	}
	if isFailureToAsk(errors.New(`invalid bearer token, issuer "client rate limiter Wait returned an error" unknown`)) {
		t.Error("a rejection quoting the limiter's words is a failure to ask")
	}
}

// TestUnexpiringNeedsKeys: tokens without exp are reviewed only where the issuer's keys refuse
// made-up ones first.
func TestUnexpiringNeedsKeys(t *testing.T) {
	if _, err := New(fake.NewClientset(), Config{Unexpiring: true}); err == nil {
		t.Error("a Reviewer of tokens without exp and without the issuer's keys was made")
	}
}

// TestCanonicalPath: the guard asks about the path it serves, so only clean, unescaped paths
// pass.
func TestCanonicalPath(t *testing.T) {
	for raw, want := range map[string]bool{
		"/metrics": true, "/debug/pprof/": true, "/debug/pprof/heap": true,
		"/debug/pprof/%2e%2e/metrics": false, "/debug/pprof/../metrics": false, "//metrics": false,
		"/metric%73": false, "/debug/pprof/./heap": false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := canonicalPath(u); got != want {
			t.Errorf("canonicalPath(%q) = %v, want %v", raw, got, want)
		}
	}
}
