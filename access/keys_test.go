package access

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
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

// TestIssuerKeysRuleOutTokensTheIssuerDidNotSign: a token signed by a published key passes; one
// signed by another key, under a published kid or another, does not (the keys are fetched
// again for an unknown kid, at most every keysRefetch, so that a rotation is seen and a flood
// of made-up kids is not a flood of fetches); while the keys cannot be read, the TokenReview
// decides.
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
	published := []jose.JSONWebKey{{Key: issuer.Public(), KeyID: "a", Algorithm: "RS256", Use: "sig"}}
	now := time.Unix(1_000_000, 0)
	fetches := 0
	var unreachable bool
	keys := &IssuerKeys{now: func() time.Time { return now }, fetch: func(context.Context) ([]byte, error) {
		fetches++
		if unreachable {
			return nil, errors.New("forbidden")
		}
		return json.Marshal(jose.JSONWebKeySet{Keys: published})
	}}
	ctx := context.Background()
	claims := `{"aud":["connectors"],"exp":2000000000}`
	check := func(token string, want signatureVerdict, what string) {
		t.Helper()
		if got := keys.check(ctx, token); got != want {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	check(signedToken(t, issuer, jose.RS256, "a", claims), signedByIssuer, "signed by the issuer")
	check(signedToken(t, forger, jose.RS256, "a", claims), notSignedByIssuer, "forged under the issuer's kid")
	check("eyJhbGciOiJub25lIn0.eyJleHAiOjJ9.", notSignedByIssuer, "unsigned")
	fetchesBefore := fetches
	for range 100 {
		check(signedToken(t, forger, jose.RS256, "made-up", claims), notSignedByIssuer, "forged under a made-up kid")
	}
	if fetches-fetchesBefore > 1 {
		t.Errorf("100 made-up kids at once fetched the keys %d times, want at most once", fetches-fetchesBefore)
	}
	// A rotation: the new key is published; a token signed with it is seen once the keys are
	// fetched again (an unknown kid, past keysRefetch).
	published = append(published, jose.JSONWebKey{Key: rotated.Public(), KeyID: "b", Algorithm: "ES256", Use: "sig"})
	now = now.Add(keysRefetch + time.Second)
	check(signedToken(t, rotated, jose.ES256, "b", claims), signedByIssuer, "signed by a key published since")

	unknown := &IssuerKeys{now: time.Now, fetch: func(context.Context) ([]byte, error) { return nil, errors.New("forbidden") }}
	if got := unknown.check(ctx, signedToken(t, forger, jose.RS256, "a", claims)); got != keysUnknown {
		t.Errorf("keys that cannot be read: %v, want the TokenReview to decide", got)
	}
	unreachable = true
	now = now.Add(keysMaxAge + time.Second)
	check(signedToken(t, issuer, jose.RS256, "a", claims), signedByIssuer, "keys read before, not again now")
}
