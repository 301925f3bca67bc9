package approval

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestInvalidPoliciesAreLookedAtLessAndLessOften: a policy with an invalid check is looked at
// again after as long as it has been invalid (a minute at first, at most half an hour), and
// from a minute again once it changed: each look costs the API server, and a tenant can make
// many such policies.
func TestInvalidPoliciesAreLookedAtLessAndLessOften(t *testing.T) {
	c := &PolicyController{}
	nn := types.NamespacedName{Namespace: "team", Name: "p"}
	if got := c.invalidRecheck(nn, "u", 1); got != kindAnswerTTL {
		t.Errorf("found invalid now: again after %s, want %s", got, kindAnswerTTL)
	}
	c.invalid.Store(nn, invalidSince{uid: "u", generation: 1, at: time.Now().Add(-10 * time.Minute)})
	if got := c.invalidRecheck(nn, "u", 1); got < 10*time.Minute || got > 11*time.Minute {
		t.Errorf("invalid for 10 minutes: again after %s, want about 10m", got)
	}
	c.invalid.Store(nn, invalidSince{uid: "u", generation: 1, at: time.Now().Add(-5 * time.Hour)})
	if got := c.invalidRecheck(nn, "u", 1); got != invalidRecheckMax {
		t.Errorf("invalid for 5 hours: again after %s, want %s", got, invalidRecheckMax)
	}
	if got := c.invalidRecheck(nn, "u", 2); got != kindAnswerTTL {
		t.Errorf("changed since: again after %s, want %s", got, kindAnswerTTL)
	}
	c.invalid.Store(nn, invalidSince{uid: "u", generation: 1, at: time.Now().Add(-5 * time.Hour)})
	if got := c.invalidRecheck(nn, "made-again", 1); got != kindAnswerTTL {
		t.Errorf("made again under the name: again after %s, want %s", got, kindAnswerTTL)
	}
}
