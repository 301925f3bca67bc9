package access

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apiserver/pkg/authentication/authenticator"
)

var refusedLocally = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "connectors_tokens_refused_locally_total",
	Help: "Tokens refused without a TokenReview: not a JWT, expired, for another audience, or not signed by a key of the API server's ServiceAccount issuer.",
}, []string{"reason"})

func init() { prometheus.MustRegister(refusedLocally) }

// maxTokenBytes bounds the tokens looked at; projected ServiceAccount tokens are about 1 KiB.
const maxTokenBytes = 16 << 10

// clockSkew is how far past its exp a token is still sent for review, as the API server
// tolerates that much skew itself.
const clockSkew = time.Minute

// jwtPrecheck refuses, before any TokenReview, what the API server would refuse anyway: a
// token that is not a well-formed JWT, has expired, or names none of the expected audiences.
// Without it every random bearer token an unauthenticated client sends costs a TokenReview,
// through the same client rate limiter as the driver's other API calls. It only reads the
// claims, and, with keys, refuses a token that none of the ServiceAccount issuer's keys
// signed (IssuerKeys); who the token is stays the API server's to say. It sits behind the
// token cache, so a valid token pays for it once per cache period.
type jwtPrecheck struct {
	audiences []string // empty: any audience
	keys      *IssuerKeys
	// unexpiring lets a token without exp through to the review: a ServiceAccount token of a
	// Secret (kubernetes.io/service-account-token) carries none.
	unexpiring bool
	next       authenticator.Token
	now        func() time.Time
}

type claims struct {
	Exp *float64        `json:"exp"`
	Aud json.RawMessage `json:"aud"`
}

func (j jwtPrecheck) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	if reason := j.refusal(ctx, token); reason != "" {
		refusedLocally.WithLabelValues(reason).Inc()
		return nil, false, nil
	}
	return j.next.AuthenticateToken(ctx, token)
}

// jwtShaped is the allocation-free part of the check, done before the token cache is asked,
// so that junk tokens neither cost a lookup nor take the place of valid tokens in the cache.
func jwtShaped(token string) bool {
	return len(token) <= maxTokenBytes && strings.Count(token, ".") == 2
}

// refusal says why a token is refused locally, or "".
func (j jwtPrecheck) refusal(ctx context.Context, token string) string {
	parts := strings.Split(token, ".")
	if !jwtShaped(token) {
		return "malformed"
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "malformed"
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil || c.Exp == nil && !j.unexpiring {
		return "malformed"
	}
	if c.Exp != nil && time.Unix(int64(*c.Exp), 0).Add(clockSkew).Before(j.now()) {
		return "expired"
	}
	if len(j.audiences) > 0 && !slices.ContainsFunc(audiences(c.Aud), func(a string) bool { return slices.Contains(j.audiences, a) }) {
		return "audience"
	}
	if j.keys != nil && j.keys.check(ctx, token) == notSignedByIssuer {
		return "signature"
	}
	return ""
}

// audiences reads aud, a string or a list of strings.
func audiences(raw json.RawMessage) []string {
	raw = bytes.TrimSpace(raw)
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(raw, &many)
	return many
}
