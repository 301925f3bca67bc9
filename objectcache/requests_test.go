package objectcache

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestKeptRequestKeepsWhatTheNodeReads: an AccessRequest in the node's cache keeps the labels a
// node gives it, its spec and status conditions, and neither annotations, other labels, owners,
// finalizers, managed fields nor policy copies, which its writers (and a policy's) could fill.
func TestKeptRequestKeepsWhatTheNodeReads(t *testing.T) {
	ar := &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "r", Labels: map[string]string{v1alpha1.LabelNode: "n", v1alpha1.LabelContextObjectName: "p",
			"padding": strings.Repeat("x", 63)},
			Annotations:     map[string]string{"padding": strings.Repeat("x", 200<<10)},
			OwnerReferences: []metav1.OwnerReference{{Name: strings.Repeat("x", 1<<20)}},
			Finalizers:      []string{strings.Repeat("x", 1<<20)},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: "c"}},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: "Ready"}},
			Policies: []v1alpha1.PolicyStatus{{Name: "p", PolicySpec: &v1alpha1.AccessPolicySpec{}}}},
	}
	kept := keptRequest(ar)
	if kept.Annotations != nil || kept.ManagedFields != nil || kept.Status.Policies != nil || len(kept.Labels) != 2 ||
		kept.OwnerReferences != nil || kept.Finalizers != nil {
		t.Errorf("annotations, managed fields, policy copies, other labels, owners or finalizers kept: %v %v %v %v %v %v", len(kept.Annotations),
			kept.ManagedFields, kept.Status.Policies, len(kept.Labels), len(kept.OwnerReferences), len(kept.Finalizers))
	}
	if kept.Labels[v1alpha1.LabelNode] != "n" || kept.Labels[v1alpha1.LabelContextObjectName] != "p" || kept.Spec.ConnectorRef.Name != "c" || len(kept.Status.Conditions) != 1 {
		t.Errorf("what the node reads was dropped: %+v", kept)
	}
}

// TestKeptRequestEmptiesASpecPastTheSchemasBounds: a request written before the schema bounded
// its strings is kept with an empty spec, which names no Pod.
func TestKeptRequestEmptiesASpecPastTheSchemasBounds(t *testing.T) {
	within := v1alpha1.AccessRequestSpec{Subject: rbacv1.Subject{Kind: strings.Repeat("k", 63), APIGroup: strings.Repeat("g", 253),
		Name: strings.Repeat("s", 253), Namespace: strings.Repeat("n", 63)}, ConnectorRef: v1alpha1.LocalObjectRef{Name: strings.Repeat("c", 253)},
		Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{APIVersion: strings.Repeat("v", 256), Kind: "Pod",
			Name: strings.Repeat("p", 253), Namespace: strings.Repeat("n", 63), UID: types.UID(strings.Repeat("u", 128)),
			ResourceVersion: strings.Repeat("r", 256), FieldPath: strings.Repeat("f", 256)}}}
	past := *within.DeepCopy()
	past.Context.ObjectRef.FieldPath = strings.Repeat("f", 1<<20)
	for spec, kept := range map[*v1alpha1.AccessRequestSpec]bool{&within: true, &past: false} {
		if s := keptRequest(&v1alpha1.AccessRequest{Spec: *spec}).Spec; (s.ConnectorRef.Name != "") != kept {
			t.Errorf("a spec of %d bytes: kept %v, want %v", specBytes(spec), !kept, kept)
		}
	}
}

// TestRequestsWatchOnlyWhatTheNodeFoundOrMade: a request is read only once the node looked it up
// (and found it) or made it; its changes are told and read; one no volume holds goes after the
// idle period, one a volume holds stays until released.
func TestRequestsWatchOnlyWhatTheNodeFoundOrMade(t *testing.T) {
	ctx := context.Background()
	scheme := testScheme(t)
	found := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "found"}}
	kube := fake.NewClientBuilder().WithScheme(scheme).WithObjects(found).WithStatusSubresource(found).Build()
	r := NewRequests(kube, time.Minute)
	changed := make(chan string, 10)
	r.OnChange = func(ar *v1alpha1.AccessRequest) { changed <- ar.Name }
	t.Cleanup(func() { r.Run(cancelled()) })
	now := time.Unix(1_000, 0)
	r.now = func() time.Time { return now }
	key := types.NamespacedName{Namespace: "ns", Name: "found"}

	if err := r.Get(ctx, key, &v1alpha1.AccessRequest{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a request not looked up yet: %v, want not found", err)
	}
	if _, err := r.Lookup(ctx, types.NamespacedName{Namespace: "ns", Name: "missing"}); !apierrors.IsNotFound(err) {
		t.Fatalf("a missing request's lookup: %v, want not found", err)
	}
	if got, err := r.Lookup(ctx, key); err != nil || got.Name != "found" {
		t.Fatalf("lookup: %v %v", got, err)
	}
	if got := watchedRequests(r); !maps.Equal(got, map[string]bool{"found": false}) {
		t.Fatalf("watched %v, want only the request found", got)
	}
	waitFor(t, changed, "found")

	// A change the watch sees is told, and read.
	patched := found.DeepCopy()
	patched.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Granted",
		LastTransitionTime: metav1.Now()}}
	if err := kube.Status().Update(ctx, patched); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changed, "found")
	var got v1alpha1.AccessRequest
	if err := r.Get(ctx, key, &got); err != nil || len(got.Status.Conditions) != 1 {
		t.Fatalf("the changed request read as %+v, %v", got.Status, err)
	}

	// One the node made is watched from what it wrote.
	made := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "made"}}
	if err := kube.Create(ctx, made); err != nil {
		t.Fatal(err)
	}
	r.Follow(made)
	r.Hold(types.NamespacedName{Namespace: "ns", Name: "made"})
	if got := watchedRequests(r); !maps.Equal(got, map[string]bool{"found": false, "made": true}) {
		t.Fatalf("watched %v, want found, and made held", got)
	}

	// Past the idle period, the one no volume holds goes; the held one stays until released.
	now = now.Add(2 * time.Minute)
	r.dropWhere(func(w *watchedRequest) bool { return !w.held && now.Sub(w.lastRead) > r.idle })
	if got := watchedRequests(r); !maps.Equal(got, map[string]bool{"made": true}) {
		t.Fatalf("after the idle period: %v, want only the held request", got)
	}
	r.Release(types.NamespacedName{Namespace: "ns", Name: "made"})
	now = now.Add(2 * time.Minute)
	r.dropWhere(func(w *watchedRequest) bool { return !w.held && now.Sub(w.lastRead) > r.idle })
	if got := watchedRequests(r); len(got) != 0 {
		t.Fatalf("after release and the idle period: %v, want none", got)
	}
}

// watchedRequests reports which requests r watches, and whether each is held.
func watchedRequests(r *Requests) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for nn, w := range r.watched {
		out[nn.Name] = w.held
	}
	return out
}

func waitFor(t *testing.T, changed <-chan string, name string) {
	t.Helper()
	select {
	case got := <-changed:
		if got != name {
			t.Fatalf("told of a change of %s, want %s", got, name)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("not told of a change of %s", name)
	}
}

// TestRequestsGetNeverWaits: a request whose watch has not listed it (the API server refusing
// the list, again and again) reads as not found at once: the proxy reads with its callers'
// requests, which would otherwise each wait for their own end.
func TestRequestsGetNeverWaits(t *testing.T) {
	scheme := testScheme(t)
	refusing := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).Build(), interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return apierrors.NewForbidden(v1alpha1.GroupVersion.WithResource("accessrequests").GroupResource(), "", nil)
		}})
	r := NewRequests(refusing, time.Minute)
	t.Cleanup(func() { r.Run(cancelled()) })
	key := types.NamespacedName{Namespace: "ns", Name: "held"}
	r.Hold(key)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Get(ctx, key, &v1alpha1.AccessRequest{}) }()
	select {
	case err := <-done:
		if !apierrors.IsNotFound(err) {
			t.Fatalf("a request not listed yet: %v, want not found", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Get waited for a watch that never lists")
	}
}

// TestALookupOfAMissingRequestListsOnce: that a request does not exist is remembered (each
// full republish of an ungated Pod's volume looks its request up), until the node makes one of
// the name.
func TestALookupOfAMissingRequestListsOnce(t *testing.T) {
	scheme := testScheme(t)
	lists := 0
	kube := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).Build(), interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			lists++
			return c.List(ctx, list, opts...)
		}})
	r := NewRequests(kube, time.Minute)
	t.Cleanup(func() { r.Run(cancelled()) })
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "made-later"}
	for range 3 {
		if _, err := r.Lookup(ctx, key); !apierrors.IsNotFound(err) {
			t.Fatalf("lookup of a missing request: %v", err)
		}
	}
	if lists != 1 {
		t.Errorf("3 lookups of a missing request listed %d times, want once", lists)
	}
	made := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "made-later"}}
	if err := kube.Create(ctx, made); err != nil {
		t.Fatal(err)
	}
	r.Follow(made)
	if got, err := r.Lookup(ctx, key); err != nil || got.Name != "made-later" {
		t.Errorf("lookup of the request the node made: %v %v", got, err)
	}
}
