package access

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"
)

func token(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".sig"
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
		if got := j.refusal(context.Background(), tok); got != want {
			t.Errorf("refusal(%q) = %q, want %q", tok, got, want)
		}
	}
	anyAudience := jwtPrecheck{now: func() time.Time { return now }}
	if got := anyAudience.refusal(context.Background(), token(`{"exp":`+exp(time.Hour)+`,"aud":["kubernetes"]}`)); got != "" {
		t.Errorf("without audiences: %q", got)
	}
	// A Secret's ServiceAccount token has no exp: malformed unless the reviewer takes those.
	secretToken := token(`{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:ns:sa"}`)
	if got := anyAudience.refusal(context.Background(), secretToken); got != "malformed" {
		t.Errorf("a token without exp: %q, want malformed", got)
	}
	anyAudience.unexpiring = true
	if got := anyAudience.refusal(context.Background(), secretToken); got != "" {
		t.Errorf("a token without exp, taken: %q", got)
	}
	if got := anyAudience.refusal(context.Background(), token(`{"exp":`+exp(-time.Hour)+`}`)); got != "expired" {
		t.Errorf("an expired token, tokens without exp taken: %q, want expired", got)
	}
}
