package connectorsapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/proxy"
)

// grantsReviewer accepts one token and allows the subresources in allowed.
type grantsReviewer struct {
	token   string
	allowed map[string]bool
}

func (g grantsReviewer) AuthenticateToken(_ context.Context, token string) (user.Info, bool, error) {
	return &user.DefaultInfo{Name: "ui"}, token == g.token, nil
}

func (g grantsReviewer) Authorize(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	if g.allowed[attrs.GetSubresource()] {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionDeny, "", nil
}

// jwtExpiring is an unsigned JWT-shaped token whose exp is at.
func jwtExpiring(at time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d}`, at.Unix()))) + ".c2ln"
}

// TestAStreamingCallIsCheckedWithWhatAllowedIt: a call's recheck asks again each permission the
// call needed, any one of its grants doing (revoking connectors/apis leaves apis/<class>); it
// refuses once none of one permission's grants allows, or the token is refused or expired.
func TestAStreamingCallIsCheckedWithWhatAllowedIt(t *testing.T) {
	live := jwtExpiring(time.Now().Add(time.Hour))
	attrs := func(sub string) authorizer.AttributesRecord { return connectorAttrs(nil, "ns", "c", "get", sub) }
	needed := [][]authorizer.AttributesRecord{{attrs("")}, {attrs("apis"), attrs("apis/git")}}
	for name, tc := range map[string]struct {
		token   string
		allowed map[string]bool
		status  int // 0: still allowed
		says    string
	}{
		"every grant":                {live, map[string]bool{"": true, "apis": true, "apis/git": true}, 0, ""},
		"another of the grants":      {live, map[string]bool{"": true, "apis/git": true}, 0, ""},
		"none of a permission's":     {live, map[string]bool{"": true}, http.StatusForbidden, "ui may no longer get connectors/apis nor connectors/apis/git of Connector ns/c"},
		"get on the Connector":       {live, map[string]bool{"apis": true}, http.StatusForbidden, "ui may no longer get connectors of Connector ns/c"},
		"a token no longer accepted": {"other", nil, http.StatusUnauthorized, "no longer accepted"},
		"a token that expired":       {jwtExpiring(time.Now().Add(-time.Hour)), map[string]bool{"": true, "apis": true}, http.StatusUnauthorized, "expired"},
	} {
		s := &Server{Reviewer: grantsReviewer{token: live, allowed: tc.allowed}}
		g := &callGrants{token: tc.token, user: &user.DefaultInfo{Name: "ui"}, needed: needed}
		err := s.stillAllowed(g)(context.Background())
		code, msg := proxy.Status(err)
		if code != tc.status || !strings.Contains(msg, tc.says) {
			t.Errorf("%s: %d %q, want %d saying %q", name, code, msg, tc.status, tc.says)
		}
	}
}
