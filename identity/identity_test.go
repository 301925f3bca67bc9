package identity

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func TestProbeFollowsReadiness(t *testing.T) {
	var synced atomic.Bool
	s := &Server{Name: "connectors-csi", Version: "v1", Ready: synced.Load}
	for _, want := range []bool{false, true} {
		synced.Store(want)
		res, err := s.Probe(context.Background(), &csi.ProbeRequest{})
		if err != nil || res.GetReady().GetValue() != want {
			t.Fatalf("Probe = %v, %v; want ready=%v", res, err, want)
		}
	}
}
