package driver

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/runtime"
)

type countingRecorder struct{ n int }

func (r *countingRecorder) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {
	r.n++
}

func TestPacedRecorderDropsPastItsBurst(t *testing.T) {
	next := &countingRecorder{}
	r := newPacedRecorder(next, 1e-9, 3)
	before := testutil.ToFloat64(eventsDropped)
	for range 10 {
		r.Eventf(nil, nil, "Normal", "Reason", "Action", "note")
	}
	if dropped := testutil.ToFloat64(eventsDropped) - before; next.n != 3 || dropped != 7 {
		t.Fatalf("recorded %d, dropped %v; want 3 and 7", next.n, dropped)
	}
}
