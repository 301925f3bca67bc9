package access

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-connectors/connectors-csi/singlecall"
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
// which is the TokenReview's to say; this only rules tokens out, and only while the keys it
// holds are the issuer's as last read.
type IssuerKeys struct {
	fetch func(context.Context) ([]byte, error)
	now   func() time.Time

	// current are the keys of the last successful read; nil before one.
	current atomic.Pointer[heldKeys]
	// lastTry is when a read was last started; lastFailed whether the last one failed (then
	// a token naming a key the keys lack goes to the TokenReview: the issuer may have rotated).
	mu         sync.Mutex
	lastTry    time.Time
	lastFailed bool
	reads      singleflight.Group
}

type heldKeys struct {
	set  jose.JSONWebKeySet
	read time.Time
}

// Keys are read again in the background once older than keysMaxAge, and at once for a token
// naming a key they lack, unless a read started within keysRefetch (a made-up key ID costs
// the API server one read per keysRefetch at most); keysFetchTimeout bounds one read.
const (
	keysMaxAge       = 5 * time.Minute
	keysRefetch      = 5 * time.Second
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
	// keysUnknown: the keys could not be read (or not lately); the TokenReview decides.
	keysUnknown
)

// tokenAlgorithms are the signature algorithms a ServiceAccount token may use.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// check says whether token is signed by one of the issuer's keys: the key its header names, or,
// naming none, any (as the API server tries them).
func (k *IssuerKeys) check(ctx context.Context, token string) signatureVerdict {
	sig, err := jose.ParseSignedCompact(token, tokenAlgorithms)
	if err != nil || len(sig.Signatures) != 1 {
		return notSignedByIssuer
	}
	kid := sig.Signatures[0].Header.KeyID
	held := k.keysFor(ctx, kid)
	if held == nil {
		return keysUnknown
	}
	candidates := held.set.Keys
	if kid != "" {
		candidates = held.set.Key(kid)
	}
	for _, key := range candidates {
		if _, err := sig.Verify(key); err == nil {
			return signedByIssuer
		}
	}
	if len(candidates) == 0 && k.failedLately() {
		return keysUnknown
	}
	return notSignedByIssuer
}

// keysFor returns the keys to check a token naming kid with: read at once when there are none
// yet, or they lack kid and no read started within keysRefetch (callers wait for one read
// together); read again in the background when old. nil when they could not be read.
func (k *IssuerKeys) keysFor(ctx context.Context, kid string) *heldKeys {
	held := k.current.Load()
	lacks := held == nil || kid != "" && len(held.set.Key(kid)) == 0
	switch {
	case lacks && k.startRead():
		_, _ = singlecall.Do(ctx, &k.reads, "", keysFetchTimeout, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, k.read(ctx)
		})
		return k.current.Load()
	case held != nil && k.now().Sub(held.read) > keysMaxAge && k.startRead():
		go func() { _ = k.read(context.Background()) }()
	}
	return held
}

// startRead tells whether a read may start now (none started within keysRefetch), and marks
// one started.
func (k *IssuerKeys) startRead() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.lastTry.IsZero() && k.now().Sub(k.lastTry) < keysRefetch {
		return false
	}
	k.lastTry = k.now()
	return true
}

func (k *IssuerKeys) failedLately() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastFailed
}

// read reads the keys; a failure keeps those read before, and says so (failedLately).
func (k *IssuerKeys) read(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, keysFetchTimeout)
	defer cancel()
	raw, err := k.fetch(ctx)
	var set jose.JSONWebKeySet
	if err == nil && (json.Unmarshal(raw, &set) != nil || len(set.Keys) == 0) {
		err = errors.New("the issuer's keys are not a JSON Web Key Set")
	}
	k.mu.Lock()
	k.lastFailed = err != nil
	k.mu.Unlock()
	if err == nil {
		k.current.Store(&heldKeys{set: set, read: k.now()})
	}
	return err
}
