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
	Help: "Tokens refused without a TokenReview, by reason: malformed (not a JWT, or not in its canonical encoding), expired, audience (for another), node (to the proxy of one node's Pods, of another node's Pod or of none), signature (not signed by a key of the API server's ServiceAccount issuer).",
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
	// node, when set, refuses a token whose claims bind it to no Pod, or to a Pod of another
	// node (Config.Node).
	node string
	keys *IssuerKeys
	// unexpiring lets a token without exp through to the review: a ServiceAccount token of a
	// Secret (kubernetes.io/service-account-token) carries none.
	unexpiring bool
	next       authenticator.Token
	now        func() time.Time
}

type claims struct {
	Exp *float64        `json:"exp"`
	Aud json.RawMessage `json:"aud"`
	// Kubernetes is what a ServiceAccount token is bound to (the API server's private claim),
	// read only by a precheck of one node's Pods' tokens (boundTo): another issuer's token
	// may carry a claim of that name of another shape.
	Kubernetes json.RawMessage `json:"kubernetes.io"`
}

// boundTo is what a ServiceAccount token's kubernetes.io claim says it is bound to.
type boundTo struct {
	Pod  *struct{} `json:"pod"`
	Node *struct {
		Name string `json:"name"`
	} `json:"node"`
}

// OtherNodeError refuses a token of a Pod of another node, or of no Pod, to a Reviewer that
// takes only the tokens of one node's Pods (Config.Node): locally, from the token's claims, or
// from its review's extras.
type OtherNodeError struct {
	// Node is the node the token names, "" for none; Pod whether it is bound to a Pod.
	Node string
	Pod  bool
}

func (e *OtherNodeError) Error() string {
	switch {
	case !e.Pod:
		return "the token is bound to no Pod"
	case e.Node == "":
		return "the token names no node"
	}
	return "the token's Pod runs on node " + e.Node
}

func (j jwtPrecheck) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	reason, err := j.refusal(ctx, token)
	if reason != "" {
		refusedLocally.WithLabelValues(reason).Inc()
	}
	if reason != "" || err != nil {
		// An OtherNodeError is an error, not a rejection, so that the token cache keeps no
		// answer for it (it could not review the token anyway) and the caller can say why.
		return nil, false, err
	}
	return j.next.AuthenticateToken(ctx, token)
}

// jwtShaped is the allocation-free part of the check, done before the token cache is asked,
// so that junk tokens neither cost a lookup nor take the place of valid tokens in the cache:
// three parts of base64url's characters only. Go's base64 decoders, the API server's too,
// skip CR and LF, which a Basic password may carry: a token with them would be another cache
// key, and another TokenReview, for the same token.
func jwtShaped(token string) bool {
	if len(token) > maxTokenBytes {
		return false
	}
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// refusal says why a token is refused locally, or "", with the error to answer instead of a
// rejection, if any.
func (j jwtPrecheck) refusal(ctx context.Context, token string) (string, error) {
	if !jwtShaped(token) {
		return "malformed", nil
	}
	payload, ok := payloadOf(strings.Split(token, "."))
	if !ok {
		return "malformed", nil
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil || c.Exp == nil && !j.unexpiring {
		return "malformed", nil
	}
	if c.Exp != nil && time.Unix(int64(*c.Exp), 0).Add(clockSkew).Before(j.now()) {
		return "expired", nil
	}
	if len(j.audiences) > 0 && !slices.ContainsFunc(audiences(c.Aud), func(a string) bool { return slices.Contains(j.audiences, a) }) {
		return "audience", nil
	}
	// Unverified claims, trusted only to refuse (before the signature's check, which costs
	// more and is never kept for such a token): a token that names this node is reviewed.
	if err := j.ofNode(c); err != nil {
		return "node", err
	}
	if j.keys != nil && j.keys.check(ctx, token) == notSignedByIssuer {
		return "signature", nil
	}
	return "", nil
}

// ofNode refuses, when the precheck takes one node's Pods' tokens only, claims of no Pod or of
// another node's.
func (j jwtPrecheck) ofNode(c claims) error {
	if j.node == "" {
		return nil
	}
	var k boundTo
	if len(c.Kubernetes) > 0 {
		_ = json.Unmarshal(c.Kubernetes, &k) // another shape: bound to nothing known
	}
	switch {
	case k.Pod == nil:
		return &OtherNodeError{}
	case k.Node == nil || k.Node.Name == "":
		return &OtherNodeError{Pod: true}
	case k.Node.Name != j.node:
		return &OtherNodeError{Pod: true, Node: k.Node.Name}
	}
	return nil
}

// strictBase64 is the encoding of a JWT's parts, strict: the unused bits of a part's last
// character must be zero, as every encoder writes them. The API server's JWT library ignores
// them, so one token could otherwise be sent as up to thousands of strings, each a token
// cache miss and a TokenReview of its own.
var strictBase64 = base64.RawURLEncoding.Strict()

// payloadOf decodes a JWT's three parts, each in its one canonical spelling, and returns the
// second.
func payloadOf(parts []string) ([]byte, bool) {
	var payload []byte
	for i, part := range parts {
		b, err := strictBase64.DecodeString(part)
		if err != nil {
			return nil, false
		}
		if i == 1 {
			payload = b
		}
	}
	return payload, true
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

// ExpiredToken tells, unverified, whether a token's exp has passed at now, beyond the clock skew
// the API server allows; false for a token that is no JWT or has no exp. For a token a review
// accepted before: whether it is refused now for its age alone.
func ExpiredToken(token string, now time.Time) bool {
	if !jwtShaped(token) {
		return false
	}
	payload, ok := payloadOf(strings.Split(token, "."))
	var c claims
	if !ok || json.Unmarshal(payload, &c) != nil || c.Exp == nil {
		return false
	}
	return time.Unix(int64(*c.Exp), 0).Add(clockSkew).Before(now)
}

// BoundPod is the Pod a ServiceAccount token's claims say it is bound to.
type BoundPod struct {
	Namespace, Name, UID, ServiceAccount string
}

// PodOfToken reads, unverified, the Pod a ServiceAccount token is bound to; ok is false for a
// token that is no JWT or names no Pod. For a token whose source is trusted (kubelet's, over
// the CSI socket), not for a caller's.
func PodOfToken(token string) (pod BoundPod, ok bool) {
	if !jwtShaped(token) {
		return BoundPod{}, false
	}
	payload, ok := payloadOf(strings.Split(token, "."))
	if !ok {
		return BoundPod{}, false
	}
	var c struct {
		Kubernetes struct {
			Namespace string `json:"namespace"`
			Pod       *struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"pod"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Kubernetes.Pod == nil {
		return BoundPod{}, false
	}
	k := c.Kubernetes
	return BoundPod{Namespace: k.Namespace, Name: k.Pod.Name, UID: k.Pod.UID, ServiceAccount: k.ServiceAccount.Name}, true
}
