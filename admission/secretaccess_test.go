package admission

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// fakeAuthz answers with decision (or err), but denies the object named denyName, and records
// what it was asked.
type fakeAuthz struct {
	decision authorizer.Decision
	err      error
	denyName string
	asked    []authorizer.Attributes
}

func (f *fakeAuthz) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	f.asked = append(f.asked, a)
	if f.denyName != "" && a.GetName() == f.denyName {
		return authorizer.DecisionDeny, "", nil
	}
	return f.decision, "", f.err
}

// TestSecretReadableAsksAsTheWriter: the review asks whether the request's user, with its UID,
// groups and extras, may get the named Secret of the Connector's namespace; only an allow
// admits (no opinion refuses, naming the field), a failed review is an error (the write is
// refused, to be tried again), a CA Secret is asked about as the auth Secret is (its refusal
// naming its field), and a Connector naming no Secret asks nothing.
func TestSecretReadableAsksAsTheWriter(t *testing.T) {
	u := authenticationv1.UserInfo{Username: "alice", UID: "u-1", Groups: []string{"team-a"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"x"}}}
	connector := func(secret string) *v1alpha1.Connector {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "tool"}}
		if secret != "" {
			c.Spec.Auth = &v1alpha1.ConnectorAuth{SecretRef: &v1alpha1.SecretRef{Name: secret}}
		}
		return c
	}
	allow := &fakeAuthz{decision: authorizer.DecisionAllow}
	v := &ConnectorValidator{Authz: allow}
	if refused, err := v.secretReadable(context.Background(), u, connector("cred")); refused != nil || err != nil {
		t.Fatalf("allowed: %v %v", refused, err)
	}
	a := allow.asked[0]
	if a.GetUser().GetName() != "alice" || a.GetUser().GetUID() != "u-1" || !slices.Equal(a.GetUser().GetGroups(), []string{"team-a"}) ||
		!slices.Equal(a.GetUser().GetExtra()["scopes"], []string{"x"}) || a.GetVerb() != "get" || a.GetNamespace() != "team" ||
		a.GetAPIGroup() != "" || a.GetResource() != "secrets" || a.GetName() != "cred" || !a.IsResourceRequest() {
		t.Errorf("asked %+v", a)
	}
	for _, d := range []authorizer.Decision{authorizer.DecisionNoOpinion, authorizer.DecisionDeny} {
		refused, err := (&ConnectorValidator{Authz: &fakeAuthz{decision: d}}).secretReadable(context.Background(), u, connector("cred"))
		if err != nil || refused == nil || refused.Field != "spec.auth.secretRef.name" || !strings.Contains(refused.Detail, "alice may not get Secret team/cred") {
			t.Errorf("decision %v: %v %v, want a refusal naming the field", d, refused, err)
		}
	}
	if _, err := (&ConnectorValidator{Authz: &fakeAuthz{err: errors.New("unreachable")}}).secretReadable(context.Background(), u, connector("cred")); err == nil {
		t.Error("a review that failed admitted the write")
	}
	withCA := connector("cred")
	withCA.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: "tool-ca"}
	caOnly := &fakeAuthz{decision: authorizer.DecisionAllow, denyName: "tool-ca"}
	refused, err := (&ConnectorValidator{Authz: caOnly}).secretReadable(context.Background(), u, withCA)
	if err != nil || refused == nil || refused.Field != "spec.caCertSecretRef.name" || !strings.Contains(refused.Detail, "alice may not get Secret team/tool-ca") ||
		len(caOnly.asked) != 2 || caOnly.asked[0].GetName() != "cred" {
		t.Errorf("a CA Secret the writer may not get: %v %v, after %d reviews", refused, err, len(caOnly.asked))
	}
	sameSecret := connector("cred")
	sameSecret.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: "cred"}
	once := &fakeAuthz{decision: authorizer.DecisionAllow}
	if refused, err := (&ConnectorValidator{Authz: once}).secretReadable(context.Background(), u, sameSecret); refused != nil || err != nil || len(once.asked) != 1 {
		t.Errorf("one Secret named as both: %v %v, asked %d times, want once", refused, err, len(once.asked))
	}
	none := &fakeAuthz{}
	if refused, err := (&ConnectorValidator{Authz: none}).secretReadable(context.Background(), u, connector("")); refused != nil || err != nil || len(none.asked) != 0 {
		t.Errorf("a Connector naming no Secret: %v %v, asked %d times", refused, err, len(none.asked))
	}
}
