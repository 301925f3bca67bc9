package access

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func token(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".sig"
}

// reasonOf is the reason j refuses tok for locally, "" for none.
func reasonOf(j jwtPrecheck, tok string) string {
	reason, _ := j.refusal(context.Background(), tok)
	return reason
}

func TestJWTPrecheck(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	j := jwtPrecheck{audiences: []string{"connectors-csi"}, now: func() time.Time { return now }}
	exp := func(d time.Duration) string { return fmt.Sprint(now.Add(d).Unix()) }
	for tok, want := range map[string]string{
		token(`{"exp":` + exp(time.Hour) + `,"aud":["connectors-csi"]}`):         "",
		token(`{"exp":` + exp(time.Hour) + `,"aud":"connectors-csi"}`):           "",
		token(`{"exp":` + exp(-30*time.Second) + `,"aud":["connectors-csi"]}`):   "", // within the skew the API server allows
		token(`{"exp":` + exp(-time.Hour) + `,"aud":["connectors-csi"]}`):        "expired",
		token(`{"exp":` + exp(time.Hour) + `,"aud":["kubernetes","other"]}`):     "audience",
		token(`{"exp":` + exp(time.Hour) + `}`):                                  "audience",
		token(`{"aud":["connectors-csi"]}`):                                      "malformed",
		token(`not json`):                                                        "malformed",
		"not-a-token":                                                            "malformed",
		"a.b.c":                                                                  "malformed",
		"a.b.c.d":                                                                "malformed",
		token(`{"exp":`+exp(time.Hour)+`,"aud":["connectors-csi"]}`) + "." + "x": "malformed",
	} {
		if got := reasonOf(j, tok); got != want {
			t.Errorf("refusal(%q) = %q, want %q", tok, got, want)
		}
	}
	anyAudience := jwtPrecheck{now: func() time.Time { return now }}
	if got := reasonOf(anyAudience, token(`{"exp":`+exp(time.Hour)+`,"aud":["kubernetes"]}`)); got != "" {
		t.Errorf("without audiences: %q", got)
	}
	// A Secret's ServiceAccount token has no exp: malformed unless the reviewer takes those.
	secretToken := token(`{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:ns:sa"}`)
	if got := reasonOf(anyAudience, secretToken); got != "malformed" {
		t.Errorf("a token without exp: %q, want malformed", got)
	}
	anyAudience.unexpiring = true
	if got := reasonOf(anyAudience, secretToken); got != "" {
		t.Errorf("a token without exp, taken: %q", got)
	}
	if got := reasonOf(anyAudience, token(`{"exp":`+exp(-time.Hour)+`}`)); got != "expired" {
		t.Errorf("an expired token, tokens without exp taken: %q, want expired", got)
	}
}

func TestJWTPrecheckTakesOneSpellingOfAToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	j := jwtPrecheck{now: func() time.Time { return now }}
	enc := base64.RawURLEncoding.EncodeToString
	// 2 bytes of signature: 3 characters, the last with 2 unused bits.
	good := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d}`, now.Add(time.Hour).Unix()))) + "." + enc([]byte{0xfa, 0xce})
	if got := reasonOf(j, good); got != "" {
		t.Fatalf("the canonical spelling: %q", got)
	}
	// Go's base64 decoders skip CR and LF, which a Basic password may carry.
	for _, insert := range []string{"\n", "\r\n", "\r", " ", "="} {
		variant := good[:10] + insert + good[10:]
		if got := reasonOf(j, variant); got != "malformed" {
			t.Errorf("the token with %q inserted: %q, want malformed", insert, got)
		}
	}
	last := strings.IndexByte(alphabet, good[len(good)-1])
	for unused := 1; unused < 4; unused++ {
		variant := good[:len(good)-1] + string(alphabet[last|unused])
		if got := reasonOf(j, variant); got != "malformed" {
			t.Errorf("a spelling with unused bits %b set: %q, want malformed", unused, got)
		}
	}
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func TestJWTPrecheckOfOneNodesPods(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	j := jwtPrecheck{node: "n1", now: func() time.Time { return now }}
	exp := fmt.Sprint(now.Add(time.Hour).Unix())
	for _, c := range []struct {
		name, kubernetes string
		want             *OtherNodeError // nil: taken (to the next check)
	}{
		{"a Pod of this node", `{"pod":{"name":"p","uid":"u"},"node":{"name":"n1","uid":"v"}}`, nil},
		{"a Pod of another node", `{"pod":{"name":"p","uid":"u"},"node":{"name":"n2","uid":"v"}}`, &OtherNodeError{Pod: true, Node: "n2"}},
		{"a Pod of no node", `{"pod":{"name":"p","uid":"u"}}`, &OtherNodeError{Pod: true}},
		{"a Secret's", `{"secret":{"name":"s","uid":"u"}}`, &OtherNodeError{}},
		{"a node's, of this node", `{"node":{"name":"n1","uid":"v"}}`, &OtherNodeError{}},
		{"none", ``, &OtherNodeError{}},
	} {
		claims := `{"exp":` + exp
		if c.kubernetes != "" {
			claims += `,"kubernetes.io":` + c.kubernetes
		}
		reason, err := j.refusal(context.Background(), token(claims+`}`))
		var got *OtherNodeError
		if c.want == nil && (reason != "" || err != nil) {
			t.Errorf("%s: refused: %q %v", c.name, reason, err)
		}
		if c.want != nil && (reason != "node" || !errors.As(err, &got) || *got != *c.want) {
			t.Errorf("%s: %q %v, want node %+v", c.name, reason, err, *c.want)
		}
	}
	j.node = ""
	for _, claims := range []string{`{"exp":` + exp + `}`, `{"exp":` + exp + `,"kubernetes.io":"another issuer's shape"}`} {
		if reason, err := j.refusal(context.Background(), token(claims)); reason != "" || err != nil {
			t.Errorf("any token, without a node (%s): %q %v", claims, reason, err)
		}
	}
}

// TestPodOfToken: the Pod a ServiceAccount token is bound to, from its claims; none for a
// token that is no JWT or names no Pod.
func TestPodOfToken(t *testing.T) {
	part := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	jwt := func(payload string) string { return part(`{"alg":"none"}`) + "." + part(payload) + "." + part("sig") }
	bound := jwt(`{"kubernetes.io":{"namespace":"team","pod":{"name":"p","uid":"u"},"serviceaccount":{"name":"builder","uid":"s"}}}`)
	if pod, ok := PodOfToken(bound); !ok || pod != (BoundPod{Namespace: "team", Name: "p", UID: "u", ServiceAccount: "builder"}) {
		t.Errorf("PodOfToken(a Pod's token) = %+v, %v", pod, ok)
	}
	for _, token := range []string{"t", jwt(`{"kubernetes.io":{"namespace":"team","serviceaccount":{"name":"builder"}}}`), jwt(`not json`)} {
		if pod, ok := PodOfToken(token); ok {
			t.Errorf("PodOfToken(%q) = %+v, want none", token, pod)
		}
	}
}

// TestExpiredToken: a token is expired once its exp is more than the clock skew behind; one
// without exp, or no JWT, is not.
func TestExpiredToken(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for tok, want := range map[string]bool{
		token(`{"exp":999000}`):  true,  // 1,000 s ago
		token(`{"exp":999970}`):  false, // within the skew
		token(`{"exp":1000100}`): false,
		token(`{}`):              false,
		"not-a-jwt":              false,
	} {
		if got := ExpiredToken(tok, now); got != want {
			t.Errorf("ExpiredToken(%.40s) = %v, want %v", tok, got, want)
		}
	}
}
