package node

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/record"

	"github.com/kube-connectors/connectors-csi/node/records"
)

// TestKeptRepublishIsReportedOncePerOutage: kubelet republishes every minute; a Pod must get one
// Event when its volume starts keeping old content, not one a minute, and a new one after the
// volume recovered and failed again.
func TestKeptRepublishIsReportedOncePerOutage(t *testing.T) {
	events := record.NewFakeRecorder(10)
	s := NewServer(Server{Events: events})
	vr := &volumeRequest{pod: records.Pod{Namespace: "ns", Name: "p", UID: "u"}}
	outage := status.Error(codes.Unavailable, "the API server is away")
	for _, err := range []error{outage, outage, outage, nil, outage, outage} {
		if _, got := s.answer(context.Background(), "vol", vr, true, err); got != nil {
			t.Fatalf("a republish that keeps its content failed: %v", got)
		}
	}
	if n := len(events.Events); n != 2 {
		t.Fatalf("%d Events for two outages, want 2", n)
	}
	if _, err := s.answer(context.Background(), "fresh", vr, false, outage); status.Code(err) != codes.Unavailable {
		t.Fatalf("a first publish during an outage: %v, want Unavailable", err)
	}
}
