package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/tools/record"
)

func TestPodOfUser(t *testing.T) {
	pod := map[string][]string{extraPodName: {"p"}, extraPodUID: {"u"}}
	for _, tc := range []struct {
		name string
		user user.Info
		want podRef
		ok   bool
	}{
		{"Pod-bound token", &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: pod}, podRef{"ns", "p", "u"}, true},
		{"no UID", &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p"}}}, podRef{"ns", "p", ""}, true},
		{"not Pod-bound", &user.DefaultInfo{Name: "system:serviceaccount:ns:sa"}, podRef{}, false},
		{"not a ServiceAccount", &user.DefaultInfo{Name: "alice", Extra: pod}, podRef{}, false},
		{"malformed name", &user.DefaultInfo{Name: "system:serviceaccount:ns", Extra: pod}, podRef{}, false},
		{"two Pods", &user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Extra: map[string][]string{extraPodName: {"p", "q"}}}, podRef{}, false},
	} {
		got, ok := podOfUser(tc.user)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// drain returns the events a FakeRecorder holds.
func drain(r *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case ev := <-r.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func TestRefusalEventsOncePerIntervalWithinTheNodeRate(t *testing.T) {
	ctx := context.Background()
	pod, other := podRef{"ns", "p", "u1"}, podRef{"ns", "q", "u2"}
	rec := record.NewFakeRecorder(100)
	e := &RefusalEvents{Recorder: rec, Interval: time.Hour, QPS: 0.0001} // the burst (10) is all there is
	e.record(ctx, pod, modeReverse, "GET", 403, "may not get Connector ns/a")
	e.record(ctx, pod, modeReverse, "GET", 403, "may not get Connector ns/a") // again: nothing
	e.record(ctx, other, modeReverse, "GET", 403, "may not get Connector ns/a")
	e.record(ctx, pod, modeForward, "POST", 403, "may not get Connector ns/b")
	got := drain(rec)
	want := []string{
		"Warning ProxyRefused connectors proxy answered 403 to GET (reverse): may not get Connector ns/a",
		"Warning ProxyRefused connectors proxy answered 403 to GET (reverse): may not get Connector ns/a",
		"Warning ProxyRefused connectors proxy answered 403 to POST (forward): may not get Connector ns/b",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A tenant naming a new Connector per request cannot go past the node's rate.
	dropped := testutil.ToFloat64(refusalEventsDropped)
	for i := range 20 {
		e.record(ctx, pod, modeReverse, "GET", 403, "may not get Connector ns/x"+strings.Repeat("x", i))
	}
	if n := len(drain(rec)); n != 7 { // 10 in the burst, 3 spent above
		t.Errorf("%d Events for 20 distinct refusals, want 7 (the rest of the burst)", n)
	}
	if d := testutil.ToFloat64(refusalEventsDropped) - dropped; d != 13 {
		t.Errorf("%v refusals counted as dropped, want 13", d)
	}
	// QPS 0, or no recorder: none.
	off := &RefusalEvents{Recorder: rec, Interval: time.Hour}
	off.record(ctx, pod, modeReverse, "GET", 403, "may not get Connector ns/c")
	var none *RefusalEvents
	none.record(ctx, pod, modeReverse, "GET", 403, "may not get Connector ns/c")
	if got := drain(rec); len(got) != 0 {
		t.Errorf("events with QPS 0 or none configured: %v", got)
	}
}

func TestRefusalEventsAgainAfterTheInterval(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	e := &RefusalEvents{Recorder: rec, Interval: 50 * time.Millisecond, QPS: 100}
	pod := podRef{"ns", "p", "u"}
	e.record(context.Background(), pod, modeReverse, "GET", 403, "m")
	time.Sleep(200 * time.Millisecond) // past the interval: the pair is forgotten
	e.record(context.Background(), pod, modeReverse, "GET", 403, "m")
	if n := len(drain(rec)); n != 2 {
		t.Errorf("%d Events, want 2 (one per interval)", n)
	}
}
