package secretcache

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCacheKeepsAtMostMaxBytes: Secrets are kept while their data fits maxBytes together (the
// least recently read go first), and a Secret larger than maxBytes alone is read each time,
// never kept.
func TestCacheKeepsAtMostMaxBytes(t *testing.T) {
	reads := map[string]int{}
	sizes := map[string]int{"a": 400, "b": 400, "c": 400, "huge": 2000}
	c := New(func(_ context.Context, ns, name string) (*corev1.Secret, error) {
		reads[name]++
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Data: map[string][]byte{"k": []byte(strings.Repeat("x", sizes[name]-1))}}, nil
	}, time.Hour, 100, 1000, "test_secrets")
	get := func(name string) {
		t.Helper()
		if _, err := c.Get(context.Background(), "ns", name); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"a", "b", "a", "c", "a", "huge", "huge"} {
		get(name)
	}
	// a, b kept (800); c pushed b out (a was read since); huge never kept.
	if reads["a"] != 1 || reads["b"] != 1 || reads["c"] != 1 || reads["huge"] != 2 {
		t.Errorf("reads %v, want a, b and c once, huge each time", reads)
	}
	if held := c.bytes.Held(); held != 800 || c.cache.Len() != 2 {
		t.Errorf("%d bytes in %d Secrets held, want 800 in 2", held, c.cache.Len())
	}
	get("b")
	if reads["b"] != 2 {
		t.Errorf("b was read %d times, want twice (dropped for c)", reads["b"])
	}

}

// TestAMissingSecretIsRememberedMissing: a Secret the API server says does not exist is not
// asked for again within the TTL (a Connector naming one is its owner's to make, and every
// request through it would read it); another failure is not remembered.
func TestAMissingSecretIsRememberedMissing(t *testing.T) {
	reads := map[string]int{}
	c := New(func(_ context.Context, _, name string) (*corev1.Secret, error) {
		reads[name]++
		if name == "flaky" {
			return nil, apierrors.NewServiceUnavailable("try again")
		}
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
	}, time.Hour, 100, 1000, "test_missing_secrets").RememberMissing()
	for range 3 {
		if _, err := c.Get(context.Background(), "ns", "absent"); !apierrors.IsNotFound(err) {
			t.Fatalf("absent: %v, want NotFound", err)
		}
		if _, err := c.Get(context.Background(), "ns", "flaky"); !apierrors.IsServiceUnavailable(err) {
			t.Fatalf("flaky: %v", err)
		}
	}
	if reads["absent"] != 1 || reads["flaky"] != 3 {
		t.Errorf("reads %v, want the missing Secret once, the failing one each time", reads)
	}
}

// TestReadsOfAContextGoWithItsGetter: a miss is read with the context's GetFunc (WithReads),
// into the same cache, which serves every caller's hits.
func TestReadsOfAContextGoWithItsGetter(t *testing.T) {
	reads := map[string]int{}
	getter := func(who string) GetFunc {
		return func(_ context.Context, ns, name string) (*corev1.Secret, error) {
			reads[who]++
			return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, nil
		}
	}
	c := New(getter("cache's"), time.Hour, 10, 1<<20, "test_secrets_reads")
	api := WithReads(context.Background(), getter("api's"))
	for _, read := range []struct {
		ctx  context.Context
		name string
	}{{api, "a"}, {context.Background(), "a"}, {context.Background(), "b"}, {api, "b"}} {
		if _, err := c.Get(read.ctx, "ns", read.name); err != nil {
			t.Fatal(err)
		}
	}
	if reads["api's"] != 1 || reads["cache's"] != 1 {
		t.Errorf("reads %v, want one of each: a's miss with the API's getter, b's with the cache's, the rest hits", reads)
	}
}
