package access

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// signedToken is a JWT of claims signed with key, whose header names kid.
func signedToken(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string, claims string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(claims))
	if err != nil {
		t.Fatal(err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TestIssuerKeysRuleOutTokensTheIssuerDidNotSign: a token signed by a published key passes,
// naming it or no key (the API server then tries them all); one signed by another key, under a
// published key ID or a made-up one, does not, and made-up IDs at once cost one read of the
// keys; a key published since is found once keysRefetch has passed (a rotation); a key the
// keys lack while they cannot be read goes to the TokenReview, as does every token before the
// keys were ever read.
func TestIssuerKeysRuleOutTokensTheIssuerDidNotSign(t *testing.T) {
	issuer, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards published, unreachable, fetches and now
	published := []jose.JSONWebKey{{Key: issuer.Public(), KeyID: "a", Algorithm: "RS256", Use: "sig"}}
	now := time.Unix(1_000_000, 0)
	fetches, unreachable := 0, false
	keys := &IssuerKeys{
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		fetch: func(context.Context) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			fetches++
			if unreachable {
				return nil, errors.New("forbidden")
			}
			return json.Marshal(jose.JSONWebKeySet{Keys: published})
		}}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()
	claims := `{"aud":["connectors"],"exp":2000000000}`
	check := func(token string, want signatureVerdict, what string) {
		t.Helper()
		if got := keys.check(ctx, token); got != want {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	check(signedToken(t, issuer, jose.RS256, "a", claims), signedByIssuer, "signed by the issuer")
	check(signedToken(t, issuer, jose.RS256, "", claims), signedByIssuer, "signed by the issuer, naming no key")
	check(signedToken(t, forger, jose.RS256, "a", claims), notSignedByIssuer, "forged under the issuer's key ID")
	check(signedToken(t, forger, jose.RS256, "", claims), notSignedByIssuer, "forged, naming no key")
	check("eyJhbGciOiJub25lIn0.eyJleHAiOjJ9.", notSignedByIssuer, "unsigned")

	advance(keysRefetch + time.Second)
	mu.Lock()
	fetchesBefore := fetches
	mu.Unlock()
	forged := signedToken(t, forger, jose.RS256, "made-up", claims)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { check(forged, notSignedByIssuer, "forged under a made-up key ID") })
	}
	wg.Wait()
	mu.Lock()
	if fetches-fetchesBefore != 1 {
		t.Errorf("100 made-up key IDs at once read the keys %d times, want once", fetches-fetchesBefore)
	}
	published = append(published, jose.JSONWebKey{Key: rotated.Public(), KeyID: "b", Algorithm: "ES256", Use: "sig"})
	mu.Unlock()
	newKey := signedToken(t, rotated, jose.ES256, "b", claims)
	check(newKey, notSignedByIssuer, "signed by a key published within keysRefetch of the last read")
	advance(keysRefetch + time.Second)
	check(newKey, signedByIssuer, "signed by a key published since, keysRefetch later")

	mu.Lock()
	unreachable = true
	mu.Unlock()
	advance(keysRefetch + time.Second)
	check(signedToken(t, forger, jose.RS256, "c", claims), keysUnknown, "a key the keys lack while they cannot be read")
	check(newKey, signedByIssuer, "a key read before, while the keys cannot be read")

	never := &IssuerKeys{now: time.Now, fetch: func(context.Context) ([]byte, error) { return nil, errors.New("forbidden") }}
	if got := never.check(ctx, signedToken(t, forger, jose.RS256, "a", claims)); got != keysUnknown {
		t.Errorf("keys never read: %v, want the TokenReview to decide", got)
	}
}
