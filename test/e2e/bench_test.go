package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
)

// benchRequest prepares a git volume request from warm caches (Connector, class and RBAC in
// place, the driver's informers synced, one publish done).
func benchRequest(b *testing.B) (*runningDriver, csi.NodeClient, *csi.NodePublishVolumeRequest) {
	d := startDriver(b, b.TempDir(), nil)
	k := newKubelet(b, d)
	ctx := context.Background()
	ns := newNamespace(b)
	newConnector(b, ns, "github", gitClass(b), "https://github.com")
	allowConnectors(b, ns, "builder", "github")
	pod := podWithVolume(b, k, ns, "bench", map[string]string{"connectors": "github"}, nil)
	req, err := k.PublishRequest(ctx, pod, "connectors")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := k.Node.NodePublishVolume(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = k.Unpublish(ctx, pod, "connectors") })
	return d, k.Node, req
}

// reportPercentiles adds p50 and p99 of the observed latencies to the benchmark's output.
func reportPercentiles(b *testing.B, lat []time.Duration) { reportPercentilesNamed(b, "", lat) }

// reportPercentilesNamed is reportPercentiles with a name before the metric units.
func reportPercentilesNamed(b *testing.B, name string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	if name != "" {
		name += "-"
	}
	slices.Sort(lat)
	at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), name+"p50-ms")
	b.ReportMetric(at(0.99), name+"p99-ms")
}

// BenchmarkPublishFirst measures a first publish: tmpfs mount, render, write, record.
func BenchmarkPublishFirst(b *testing.B) {
	_, node, base := benchRequest(b)
	ctx := context.Background()
	dir := b.TempDir()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := proto.Clone(base).(*csi.NodePublishVolumeRequest)
		req.VolumeId = fmt.Sprintf("bench-%d", i)
		req.TargetPath = filepath.Join(dir, req.VolumeId)
		start := time.Now()
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportPercentiles(b, lat)
}

// BenchmarkRepublishUnchanged measures kubelet's periodic republish when nothing changed.
func BenchmarkRepublishUnchanged(b *testing.B) {
	_, node, req := benchRequest(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkPublishConcurrent runs first publishes 100 at a time.
func BenchmarkPublishConcurrent(b *testing.B) {
	_, node, base := benchRequest(b)
	ctx := context.Background()
	dir := b.TempDir()
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	var n int64
	b.SetParallelism(50) // 2 cores x 50 = 100 concurrent publishes
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			id := fmt.Sprintf("par-%d", n)
			mu.Unlock()
			req := proto.Clone(base).(*csi.NodePublishVolumeRequest)
			req.VolumeId = id
			req.TargetPath = filepath.Join(dir, id)
			start := time.Now()
			if _, err := node.NodePublishVolume(ctx, req); err != nil {
				b.Error(err)
				return
			}
			d := time.Since(start)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		}
	})
	b.StopTimer()
	for i := int64(1); i <= n; i++ {
		id := fmt.Sprintf("par-%d", i)
		_, _ = node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: filepath.Join(dir, id)})
	}
	reportPercentiles(b, lat)
}
