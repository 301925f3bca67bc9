// Package cachemetrics exports the sizes of the driver's in-memory caches as one gauge,
// connectors_cache_entries{cache}, read at scrape time. Every cache a tenant can grow is
// bounded (SPEC §4.7); this is how an operator sees how full each one is.
package cachemetrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var entries = prometheus.NewDesc("connectors_cache_entries",
	"Entries held by each in-memory cache of the driver.", []string{"cache"}, nil)

// sizes holds each cache's size function by cache name. Tests run several drivers in one
// process; the most recent registration of a name is the one reported.
var (
	mu    sync.Mutex
	sizes = map[string]func() int{}
)

// Register reports the cache named name with size as its entry count.
func Register(name string, size func() int) {
	mu.Lock()
	defer mu.Unlock()
	sizes[name] = size
}

// Entries returns the current entry count of the named cache, and whether it is registered.
func Entries(name string) (int, bool) {
	mu.Lock()
	size, ok := sizes[name]
	mu.Unlock()
	if !ok {
		return 0, false
	}
	return size(), true
}

type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) { ch <- entries }

func (collector) Collect(ch chan<- prometheus.Metric) {
	mu.Lock()
	names := make([]string, 0, len(sizes))
	for n := range sizes {
		names = append(names, n)
	}
	funcs := make([]func() int, len(names))
	sort.Strings(names)
	for i, n := range names {
		funcs[i] = sizes[n]
	}
	mu.Unlock()
	for i, n := range names {
		ch <- prometheus.MustNewConstMetric(entries, prometheus.GaugeValue, float64(funcs[i]()), n)
	}
}

func init() { prometheus.MustRegister(collector{}) }
