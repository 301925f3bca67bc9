package access

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
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

// answers is an authenticator.Token answering with its errors in turn (nil: accepted).
type answers struct {
	errs  []error
	asked int
}

func (a *answers) AuthenticateToken(context.Context, string) (*authenticator.Response, bool, error) {
	err := a.errs[min(a.asked, len(a.errs)-1)]
	a.asked++
	if err != nil {
		return nil, false, err
	}
	return &authenticator.Response{User: &user.DefaultInfo{Name: "system:serviceaccount:a:b"}}, true, nil
}

// TestInvalidatedIsAskedAgain: the API server's "has been invalidated", which it also answers
// when it failed to read the token's Pod, is asked once more; every other answer stands.
func TestInvalidatedIsAskedAgain(t *testing.T) {
	invalidatedAnswer := errors.New("[invalid bearer token, service account token has been invalidated]")
	refused := errors.New("pod UID (1) does not match service account pod ref claim (2)")
	unreachable := &url.Error{Op: "Post", URL: "https://api/tokenreviews", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name      string
		retry     time.Duration
		errs      []error
		ok        bool
		failed    bool // a failure to ask, not a rejection
		wantAsked int
	}{
		{"invalidated, then accepted", time.Millisecond, []error{invalidatedAnswer, nil}, true, false, 2},
		{"invalidated twice", time.Millisecond, []error{invalidatedAnswer, invalidatedAnswer}, false, false, 2},
		{"older API servers' words", time.Millisecond, []error{errors.New("Token has been invalidated"), nil}, true, false, 2},
		{"not asked again when off", 0, []error{invalidatedAnswer, nil}, false, false, 1},
		{"another rejection stands", time.Millisecond, []error{refused, nil}, false, false, 1},
		{"a failure to ask is not asked again here", time.Millisecond, []error{unreachable, nil}, false, true, 1},
		{"invalidated, then a failure to ask", time.Millisecond, []error{invalidatedAnswer, unreachable}, false, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &answers{errs: tc.errs}
			_, ok, err := rejectionsAreAnswers{Token: a, retry: tc.retry}.AuthenticateToken(context.Background(), "t")
			if ok != tc.ok || (err != nil) != tc.failed || a.asked != tc.wantAsked {
				t.Fatalf("ok %v, err %v, asked %d times; want ok %v, failed %v, asked %d times", ok, err, a.asked, tc.ok, tc.failed, tc.wantAsked)
			}
		})
	}
	// The token cache runs the lookup on a context of its own (30 s), which ends the wait too.
	t.Run("the wait ends with the lookup's context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		a := &answers{errs: []error{invalidatedAnswer, nil}}
		_, ok, err := rejectionsAreAnswers{Token: a, retry: time.Hour}.AuthenticateToken(ctx, "t")
		if ok || !errors.Is(err, context.Canceled) || a.asked != 1 {
			t.Fatalf("ok %v, err %v, asked %d times; want a failure to ask, asked once", ok, err, a.asked)
		}
	})
}
