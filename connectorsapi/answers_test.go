package connectorsapi

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAnswersAreBoundedPerCallAndForTheNode reads real answers through the counted transport:
// one call stops at its bound; calls in flight together stop at the node's, and a call that
// ended gives its bytes back.
func TestAnswersAreBoundedPerCallAndForTheNode(t *testing.T) {
	body := strings.Repeat("x", 10_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
	t.Cleanup(srv.Close)
	limits := NewAnswerLimits(25_000, 30_000)
	read := func(b *callBudget) error {
		res, err := (&http.Client{Transport: b.transport(http.DefaultTransport)}).Get(srv.URL)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		_, err = io.ReadAll(res.Body)
		return err
	}
	status := func(err error) int {
		var ae *apiError
		if !errors.As(err, &ae) {
			return 0
		}
		return ae.code
	}

	first := limits.newCall()
	for i := range 2 { // 2 × (10,000 + 1 KiB): within 25,000
		if err := read(first); err != nil {
			t.Fatalf("answer %d of the first call: %v", i, err)
		}
	}
	if err := read(first); !errors.Is(err, errAnswersRefused) {
		t.Fatalf("a third answer of the first call: %v, want it refused", err)
	}
	second := limits.newCall()
	if err := read(second); !errors.Is(err, errAnswersRefused) {
		t.Fatalf("a second call while the first holds about 24,000 of 30,000: %v, want it refused", err)
	}
	if over := second.release(); status(over) != http.StatusServiceUnavailable || !strings.Contains(over.Error(), "--api-answers-max-bytes") {
		t.Errorf("second call: %v, want a 503 naming --api-answers-max-bytes", over)
	}
	if over := first.release(); status(over) != http.StatusBadGateway || !strings.Contains(over.Error(), "--api-max-answer-bytes") {
		t.Errorf("first call: %v, want a 502 naming --api-max-answer-bytes", over)
	}
	third := limits.newCall()
	if err := read(third); err != nil {
		t.Fatalf("a call after the others ended: %v", err)
	}
	if over := third.release(); over != nil {
		t.Errorf("third call: %v", over)
	}
	if err := read(third); !errors.Is(err, errAnswersRefused) {
		t.Errorf("a read after its call ended: %v, want it refused (its bytes would never be given back)", err)
	}
	if !limits.inFlight.TryAcquire(30_000) {
		t.Error("the node's bound was not given back whole")
	}
}
