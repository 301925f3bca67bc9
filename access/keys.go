package access

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"k8s.io/client-go/kubernetes"
)

// IssuerKeys are the keys the API server's ServiceAccount tokens are signed with, as it
// publishes them (/openid/v1/jwks, ServiceAccount issuer discovery). With them the precheck
// refuses a token whose signature is none of theirs before any TokenReview: a well-formed
// token for the right audience and not expired is anyone's to make, and without this each
// one an unauthenticated client sends costs the API server a review, through the rate limit
// of the node's legitimate ones (every node is one flow of its priority level there).
//
// Written here, on go-jose's signature check: k8s.io/apiserver's OIDC authenticator finds its
// keys through the issuer's URL, which a node may not reach, and answers who a token is,
// which is the TokenReview's to say; this only rules tokens out.
type IssuerKeys struct {
	fetch func(context.Context) ([]byte, error)
	now   func() time.Time

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet // nil until a fetch succeeded
	fetchedAt time.Time           // of the last fetch, successful or not
}

// Keys are fetched again when older than keysMaxAge, and when a token names a key they do not
// hold and the last fetch is older than keysRefetch (a rotation); keysFetchTimeout bounds one.
const (
	keysMaxAge       = 5 * time.Minute
	keysRefetch      = 30 * time.Second
	keysFetchTimeout = 10 * time.Second
)

// NewIssuerKeys reads the keys from the API server kube talks to.
func NewIssuerKeys(kube kubernetes.Interface) *IssuerKeys {
	return &IssuerKeys{now: time.Now, fetch: func(ctx context.Context) ([]byte, error) {
		return kube.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	}}
}

// signatureVerdict is what the keys say of a token.
type signatureVerdict int

const (
	// signedByIssuer: a key of the issuer verifies the token's signature.
	signedByIssuer signatureVerdict = iota
	// notSignedByIssuer: the keys are known, and none of them verifies it.
	notSignedByIssuer
	// keysUnknown: the keys could not be read; the TokenReview decides.
	keysUnknown
)

// tokenAlgorithms are the signature algorithms a ServiceAccount token may use.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// check says whether token is signed by one of the issuer's keys.
func (k *IssuerKeys) check(ctx context.Context, token string) signatureVerdict {
	sig, err := jose.ParseSignedCompact(token, tokenAlgorithms)
	if err != nil || len(sig.Signatures) != 1 {
		return notSignedByIssuer
	}
	kid := sig.Signatures[0].Header.KeyID
	keys := k.keysFor(ctx, kid)
	if keys == nil {
		return keysUnknown
	}
	for _, key := range keys.Key(kid) {
		if _, err := sig.Verify(key); err == nil {
			return signedByIssuer
		}
	}
	return notSignedByIssuer
}

// keysFor returns the keys, fetched again when they are old, or hold no key kid and were not
// fetched just now; nil when they could never be read.
func (k *IssuerKeys) keysFor(ctx context.Context, kid string) *jose.JSONWebKeySet {
	k.mu.Lock()
	defer k.mu.Unlock()
	age := k.now().Sub(k.fetchedAt)
	stale := k.keys == nil || age > keysMaxAge || len(k.keys.Key(kid)) == 0
	if stale && (k.fetchedAt.IsZero() || age > keysRefetch) {
		k.refetch(ctx)
	}
	return k.keys
}

// refetch reads the keys; a failure keeps those read before.
func (k *IssuerKeys) refetch(ctx context.Context) {
	k.fetchedAt = k.now()
	ctx, cancel := context.WithTimeout(ctx, keysFetchTimeout)
	defer cancel()
	raw, err := k.fetch(ctx)
	if err != nil {
		return
	}
	var set jose.JSONWebKeySet
	if json.Unmarshal(raw, &set) == nil && len(set.Keys) > 0 {
		k.keys = &set
	}
}
