package connectorsapi

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAnswersAreBoundedPerCallCallerAndNode reads real answers through the counted
// transport: one call stops at its bound; a caller's calls together at their share of the
// node's bound, which another caller's still get; calls in flight together at the node's;
// a call that ended gives its bytes back.
func TestAnswersAreBoundedPerCallCallerAndNode(t *testing.T) {
	body := strings.Repeat("x", 10_000) // an answer counts 11,024 bytes
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
	t.Cleanup(srv.Close)
	read := func(b *callBudget) error {
		res, err := (&http.Client{Transport: b.transport(http.DefaultTransport)}).Get(srv.URL)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		_, err = io.ReadAll(res.Body)
		return err
	}
	refused := func(t *testing.T, b *callBudget, code int, names string) {
		t.Helper()
		if err := read(b); !errors.Is(err, errAnswersRefused) {
			t.Fatalf("read: %v, want it refused", err)
		}
		var ae *apiError
		if over := b.release(); !errors.As(over, &ae) || ae.code != code || !strings.Contains(ae.msg, names) {
			t.Fatalf("%v, want a %d naming %s", over, code, names)
		}
	}

	limits := NewAnswerLimits(12_000, 60_000) // a caller's share: 15,000
	first := limits.newCall("a")
	if err := read(first); err != nil {
		t.Fatal(err)
	}
	second := limits.newCall("a")
	refused(t, second, http.StatusServiceUnavailable, "namespace a")
	other := limits.newCall("b")
	if err := read(other); err != nil {
		t.Fatalf("another caller's call while caller a holds its share: %v", err)
	}
	refused(t, first, http.StatusBadGateway, "--api-call-max-answer-bytes")
	if err := other.release(); err != nil {
		t.Fatal(err)
	}
	if err := read(other); !errors.Is(err, errAnswersRefused) {
		t.Errorf("a read after its call ended: %v, want it refused (its bytes would never be given back)", err)
	}
	if limits.total != 0 || len(limits.byCaller) != 0 {
		t.Errorf("after every call ended: %d bytes held, %v", limits.total, limits.byCaller)
	}

	small := NewAnswerLimits(12_000, 20_000) // a caller's share: 12,000, one call's
	held := small.newCall("x")
	if err := read(held); err != nil {
		t.Fatal(err)
	}
	refused(t, small.newCall("y"), http.StatusServiceUnavailable, "--api-node-max-answer-bytes")
	if err := held.release(); err != nil {
		t.Fatal(err)
	}
}
