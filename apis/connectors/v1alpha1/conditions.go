package v1alpha1

import (
	"fmt"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SetCondition sets a condition True (ok) or False with a formatted message; the transition time
// changes only when the status does.
func SetCondition(conds *[]metav1.Condition, generation int64, typ string, ok bool, reason, format string, args ...any) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	SetConditionStatus(conds, generation, typ, status, reason, format, args...)
}

// SetConditionStatus is SetCondition for any status, Unknown included. The message is cut to
// MaxConditionMessage bytes: messages name tenants' objects (checks × objects × names), and a
// status with one longer than the schema's 32768 characters could never be written.
func SetConditionStatus(conds *[]metav1.Condition, generation int64, typ string, status metav1.ConditionStatus, reason, format string, args ...any) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, Reason: reason,
		Message: cutMessage(fmt.Sprintf(format, args...)), ObservedGeneration: generation})
}

// MaxConditionMessage is the longest condition message written, in bytes.
const MaxConditionMessage = 8 << 10

// cutMessage cuts msg to MaxConditionMessage bytes at a character's start, marking the cut.
func cutMessage(msg string) string {
	if len(msg) <= MaxConditionMessage {
		return msg
	}
	n := MaxConditionMessage
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n] + "…"
}

// ConditionsEqual compares conditions by type, status, reason and message, ignoring transition
// times, so that a controller writes status only when something a reader sees changed.
func ConditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, ca := range a {
		cb := meta.FindStatusCondition(b, ca.Type)
		if cb == nil || cb.Status != ca.Status || cb.Reason != ca.Reason || cb.Message != ca.Message ||
			cb.ObservedGeneration != ca.ObservedGeneration {
			return false
		}
	}
	return true
}
