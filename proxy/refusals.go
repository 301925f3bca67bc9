package proxy

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

// ReasonProxyRefused is the reason of the Warning Event a refused Pod gets.
const ReasonProxyRefused = "ProxyRefused"

// extraPodUID is the Pod's UID in a Pod-bound token's TokenReview extras.
const extraPodUID = "authentication.kubernetes.io/pod-uid"

// refusalEventsSize bounds the (Pod, refusal) pairs remembered between Events.
const refusalEventsSize = 4096

var refusalEventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "connectors_proxy_refusal_events_dropped_total",
	Help: "Proxy refusals of a Pod's request not recorded as an Event because the node's Event rate (--proxy-refusal-event-qps) was spent.",
})

func init() { prometheus.MustRegister(refusalEventsDropped) }

// RefusalEvents records the proxy's 403 answers to a Pod as Warning Events on that Pod, so
// that `kubectl get events --field-selector involvedObject.name=<pod>` (or describe pod) shows
// them beside kubelet's mount errors. A Pod is known only from a Pod-bound token the
// TokenReview accepted, so an Event never lands on a Pod the caller does not run as.
//
// What a tenant controls must not become API load: the same refusal of the same Pod is
// recorded once per Interval (the message names the Connector and the verb, so a Pod that
// keeps retrying one clone makes one Event), and all Events of the node share a token bucket
// of QPS (burst 10); what the bucket refuses is counted, not queued. The message is the one
// the client got, which names no credential and no URL (a query may carry secrets).
type RefusalEvents struct {
	Recorder record.EventRecorder
	// Interval between two Events for the same Pod and refusal.
	Interval time.Duration
	// QPS is the node's sustained Event rate for refusals; 0 records none.
	QPS float64

	once    sync.Once
	mu      sync.Mutex
	recent  *expirable.LRU[string, struct{}]
	limiter *rate.Limiter
}

func (e *RefusalEvents) init() {
	e.recent = expirable.NewLRU[string, struct{}](refusalEventsSize, nil, e.Interval)
	e.limiter = rate.NewLimiter(rate.Limit(e.QPS), 10)
}

// podRef is the Pod a request's token is bound to.
type podRef struct{ namespace, name, uid string }

// podOfUser returns the Pod of a Pod-bound ServiceAccount token's user (its UID when the
// review gave one), if it is one.
func podOfUser(u user.Info) (podRef, bool) {
	extra := u.GetExtra()
	names, uids := extra[extraPodName], extra[extraPodUID]
	ns, ok := strings.CutPrefix(u.GetName(), "system:serviceaccount:")
	ns, sa, found := strings.Cut(ns, ":")
	if !ok || !found || ns == "" || sa == "" || strings.Contains(sa, ":") || len(names) != 1 || names[0] == "" {
		return podRef{}, false
	}
	pod := podRef{namespace: ns, name: names[0]}
	if len(uids) == 1 {
		pod.uid = uids[0]
	}
	return pod, true
}

// record turns one refusal into an Event, unless the same one was recorded within Interval or
// the node's rate is spent.
func (e *RefusalEvents) record(ctx context.Context, pod podRef, mode, method string, status int, msg string) {
	if e == nil || e.Recorder == nil || e.QPS <= 0 {
		return
	}
	e.once.Do(e.init)
	key := pod.uid + "\x00" + strconv.Itoa(status) + "\x00" + msg
	e.mu.Lock()
	_, seen := e.recent.Get(key)
	if !seen {
		e.recent.Add(key, struct{}{})
	}
	e.mu.Unlock()
	if seen {
		return
	}
	if !e.limiter.Allow() {
		refusalEventsDropped.Inc()
		return
	}
	klog.FromContext(ctx).Info("Proxy refused a Pod's request", "pod", klog.KRef(pod.namespace, pod.name), "mode", mode, "method", method, "status", status, "reason", msg)
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.namespace, Name: pod.name, UID: types.UID(pod.uid)}
	e.Recorder.Eventf(ref, corev1.EventTypeWarning, ReasonProxyRefused, "connectors proxy answered %d to %s (%s): %s", status, method, mode, msg)
}
