package fairqueue

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func request(ns, name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

// drain takes every waiting item, marking each done, and names them in the order given out.
func drain(t *testing.T, q workqueue.TypedRateLimitingInterface[reconcile.Request]) []string {
	t.Helper()
	var out []string
	for q.Len() > 0 {
		r, shutdown := q.Get()
		if shutdown {
			t.Fatal("the queue shut down")
		}
		out = append(out, r.String())
		q.Done(r)
	}
	return out
}

// givenOut adds items, in order, to a queue placing them with place, and names them in the
// order the queue gives them out.
func givenOut(t *testing.T, place func(reconcile.Request) Placement, items ...reconcile.Request) []string {
	t.Helper()
	q := New(place)("test", workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	for _, r := range items {
		q.Add(r)
	}
	return drain(t, q)
}

// TestTurnsByNamespace: a namespace with a backlog and namespaces with one item each: each gets
// a turn in the order it came, then the backlog goes on; within a namespace first come first
// served; an item added again while it waits keeps its place.
func TestTurnsByNamespace(t *testing.T) {
	got := givenOut(t, nil, request("busy", "a1"), request("busy", "a2"), request("busy", "a3"), request("busy", "a4"),
		request("quiet", "q1"),
		request("busy", "a1"), // again, while it waits
		request("other", "o1"), request("quiet", "q2"))
	want := []string{"busy/a1", "quiet/q1", "other/o1", "busy/a2", "quiet/q2", "busy/a3", "busy/a4"}
	if !slices.Equal(got, want) {
		t.Fatalf("given out %v, want %v", got, want)
	}
}

// TestUrgentFirstWithinItsNamespace: urgent items go first among their namespace's, and take no
// turn from another namespace: a namespace with a flood of urgent items gets one turn in each
// round like the rest.
func TestUrgentFirstWithinItsNamespace(t *testing.T) {
	urgent := func(r reconcile.Request) Placement { return Placement{Urgent: r.Name[0] == 'u'} }
	got := givenOut(t, urgent, request("busy", "a1"), request("busy", "u1"), request("busy", "u2"), request("busy", "a2"),
		request("quiet", "q1"), request("busy", "u3"), request("quiet", "u4"))
	want := []string{"busy/u1", "quiet/u4", "busy/u2", "quiet/q1", "busy/u3", "busy/a1", "busy/a2"}
	if !slices.Equal(got, want) {
		t.Fatalf("given out %v, want %v", got, want)
	}
}

// TestTurnsWithinANamespace: a shared namespace's items take turns by Within (the requests of
// a shared Connector by their Pods' namespaces), while the namespaces themselves take turns.
func TestTurnsWithinANamespace(t *testing.T) {
	tenant := func(r reconcile.Request) Placement { return Placement{Within: r.Name[:1]} }
	got := givenOut(t, tenant, request("shared", "a1"), request("shared", "a2"), request("shared", "a3"),
		request("shared", "b1"), request("own", "c1"), request("own", "c2"), request("shared", "b2"))
	want := []string{"shared/a1", "own/c1", "shared/b1", "own/c2", "shared/a2", "shared/b2", "shared/a3"}
	if !slices.Equal(got, want) {
		t.Fatalf("given out %v, want %v", got, want)
	}
}

// TestOneWorkerPerItem: the work queue's own guarantees hold with this order: an item added
// while a worker has it waits until it is done, and is then given out once.
func TestOneWorkerPerItem(t *testing.T) {
	q := New(nil)("test", workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	q.Add(request("busy", "a1"))
	r, _ := q.Get()
	q.Add(r)
	q.Add(r)
	if n := q.Len(); n != 0 {
		t.Fatalf("an item being worked on, added again, waits beside it: %d waiting", n)
	}
	q.Done(r)
	if got := drain(t, q); !slices.Equal(got, []string{"busy/a1"}) {
		t.Fatalf("after it was done, given out %v, want it once", got)
	}
}
