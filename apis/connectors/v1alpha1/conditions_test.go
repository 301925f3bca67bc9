package v1alpha1

import (
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestConditionMessagesAreBounded: a message longer than MaxConditionMessage is cut at a
// character's start, marked, and still valid UTF-8; a short one is kept as it is.
func TestConditionMessagesAreBounded(t *testing.T) {
	var conds []metav1.Condition
	SetConditionStatus(&conds, 1, "Ready", metav1.ConditionFalse, "Pending", "x%s", strings.Repeat("é", MaxConditionMessage)) // the cut falls inside an "é"
	msg := conds[0].Message
	if len(msg) > MaxConditionMessage+len("…") || !strings.HasSuffix(msg, "…") || !utf8.ValidString(msg) {
		t.Fatalf("a long message was kept as %d bytes (valid UTF-8 %v, ends %q)", len(msg), utf8.ValidString(msg), msg[len(msg)-6:])
	}
	SetConditionStatus(&conds, 1, "Ready", metav1.ConditionFalse, "Pending", "waiting for %s", "approve-run-1")
	if conds[0].Message != "waiting for approve-run-1" {
		t.Fatalf("a short message became %q", conds[0].Message)
	}
}
