// Package statusmetrics exports, at scrape time, how the controller's objects stand: Connectors
// by condition, AccessRequests by check and permission state, and how long the oldest pending
// AccessRequest has waited. It reads the controller's informer cache (no API request) without
// copying the objects, and only the condition types and reasons this project sets become label
// values, so the series are few whatever the cluster holds.
package statusmetrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

var (
	connectorConditions = prometheus.NewDesc("connectors_connector_conditions",
		"Connectors by condition type, status and reason.", []string{"type", "status", "reason"}, nil)
	accessRequests = prometheus.NewDesc("connectors_accessrequests",
		"AccessRequests by the reason of their AccessCheckReady (check) and AccessPermissionSync (sync) conditions (empty: not evaluated yet).",
		[]string{"check", "sync"}, nil)
	oldestPending = prometheus.NewDesc("connectors_accessrequest_oldest_pending_seconds",
		"Age of the oldest AccessRequest whose checks are pending (0: none pending).", nil, nil)
)

// scrapeTimeout bounds a scrape's reads of the cache.
const scrapeTimeout = 5 * time.Second

// The cache the collector reads; tests run several controllers in one process, and the most
// recent one set is read.
var (
	mu     sync.Mutex
	reader client.Reader
	now    = time.Now
)

// Register makes the collector read r (the controller's cached client).
func Register(r client.Reader) {
	mu.Lock()
	defer mu.Unlock()
	reader = r
}

func init() { prometheus.MustRegister(collector{}) }

type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectorConditions
	ch <- accessRequests
	ch <- oldestPending
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	mu.Lock()
	r := reader
	mu.Unlock()
	if r == nil {
		return // a node process: no controller cache
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	var connectors v1alpha1.ConnectorList
	if err := r.List(ctx, &connectors, client.UnsafeDisableDeepCopy); err == nil {
		for key, n := range countConditions(connectors.Items) {
			ch <- prometheus.MustNewConstMetric(connectorConditions, prometheus.GaugeValue, float64(n), key.typ, key.status, key.reason)
		}
	}
	var requests v1alpha1.AccessRequestList
	if err := r.List(ctx, &requests, client.UnsafeDisableDeepCopy); err == nil {
		counts, oldest := countRequests(requests.Items, now())
		for key, n := range counts {
			ch <- prometheus.MustNewConstMetric(accessRequests, prometheus.GaugeValue, float64(n), key.check, key.sync)
		}
		ch <- prometheus.MustNewConstMetric(oldestPending, prometheus.GaugeValue, oldest.Seconds())
	}
}

type conditionKey struct{ typ, status, reason string }

// countConditions counts the Connectors by each condition they carry.
func countConditions(items []v1alpha1.Connector) map[conditionKey]int {
	out := map[conditionKey]int{}
	for i := range items {
		for _, c := range items[i].Status.Conditions {
			out[conditionKey{c.Type, string(c.Status), c.Reason}]++
		}
	}
	return out
}

type requestKey struct{ check, sync string }

// countRequests counts AccessRequests by their check and sync reasons, and finds how long the
// oldest pending one has waited.
func countRequests(items []v1alpha1.AccessRequest, at time.Time) (map[requestKey]int, time.Duration) {
	out := map[requestKey]int{}
	var oldest time.Duration
	for i := range items {
		ar := &items[i]
		key := requestKey{reasonOf(ar, v1alpha1.ConditionAccessCheckReady), reasonOf(ar, v1alpha1.ConditionAccessPermissionSync)}
		out[key]++
		if key.check == v1alpha1.ReasonPending {
			oldest = max(oldest, at.Sub(ar.CreationTimestamp.Time))
		}
	}
	return out, oldest
}

func reasonOf(ar *v1alpha1.AccessRequest, typ string) string {
	if c := meta.FindStatusCondition(ar.Status.Conditions, typ); c != nil {
		return c.Reason
	}
	return ""
}
