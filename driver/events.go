package driver

import (
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

var eventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "connectors_events_dropped_total",
	Help: "Events the controllers did not record because their rate (--controller-event-qps and --controller-event-burst) was spent.",
})

func init() { prometheus.MustRegister(eventsDropped) }

// pacedRecorder records the controllers' Events through next while its token bucket allows,
// and drops and counts the rest. What they record follows what tenants do: an AccessRequest
// records an Event at each condition change, and one tenant may flip the check that many
// requests wait on, or start many gated Pods at once. client-go's broadcaster sends every
// Event it is given, through the client the controllers' status and grant writes wait on;
// paced, Events take at most their share of those requests. Each Event's fact stays in the
// condition it tells of.
type pacedRecorder struct {
	next    events.EventRecorder
	limiter *rate.Limiter
}

func newPacedRecorder(next events.EventRecorder, qps float64, burst int) *pacedRecorder {
	return &pacedRecorder{next: next, limiter: rate.NewLimiter(rate.Limit(qps), burst)}
}

func (r *pacedRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if !r.limiter.Allow() {
		eventsDropped.Inc()
		return
	}
	r.next.Eventf(regarding, related, eventtype, reason, action, note, args...)
}
