package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// tokenRegistry is a registry on loopback whose token service issues tokens of tokenBytes
// bytes, each for its scope, and whose challenges name a realm padded with realmPad bytes.
func tokenRegistry(t *testing.T, tokenBytes, realmPad int) (*httptest.Server, *registryLogin) {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/token") {
			if user, pass, _ := r.BasicAuth(); user != "bot" || pass != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			scope := r.URL.Query().Get("scope")
			_ = json.NewEncoder(w).Encode(map[string]any{"token": scope + "|" + strings.Repeat("t", max(tokenBytes-len(scope)-1, 0)), "expires_in": 3600})
			return
		}
		repo, _ := repositoryOf(r.URL.Path)
		if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && strings.HasPrefix(token, pullScope(repo)+"|") {
			_, _ = w.Write([]byte("ok"))
			return
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="registry"`, srv.URL+"/token"+strings.Repeat("p", realmPad)))
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return srv, &registryLogin{username: "bot", password: "s3cret", addresses: []*url.URL{u}, owner: "connector-uid"}
}

// TestRegistryTokensAreBoundedInBytes: a registry is whatever server a Connector's owner runs,
// and its scopes come from request paths: the tokens and challenges the proxy keeps are
// bounded in bytes, and a token or challenge no registry would send is not used at all (the
// client gets the registry's own 401).
func TestRegistryTokensAreBoundedInBytes(t *testing.T) {
	get := func(t *testing.T, tokens *registryTokens, srv *httptest.Server, login *registryLogin, repo string) int {
		t.Helper()
		r, err := http.NewRequest(http.MethodGet, srv.URL+"/v2/"+repo+"/manifests/v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tokens.roundTrip(http.DefaultTransport, login, r)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	t.Run("many scopes", func(t *testing.T) {
		const budget = 256 << 10
		tokens := newRegistryTokens(10_000, budget)
		srv, login := tokenRegistry(t, 8<<10, 0)
		for i := range 100 { // 800 KiB of tokens, each answering its request
			if code := get(t, tokens, srv, login, fmt.Sprintf("team/app%d", i)); code != http.StatusOK {
				t.Fatalf("repository %d: status %d, want 200", i, code)
			}
		}
		if held, n := tokens.tokenBytes.Held(), tokens.tokens.Len(); held > budget || n >= 100 || n == 0 {
			t.Errorf("%d tokens kept in %d bytes; want some, within %d bytes", n, held, budget)
		}
		if code := get(t, tokens, srv, login, "team/app99"); code != http.StatusOK {
			t.Errorf("the last scope's kept token: status %d", code)
		}
	})
	t.Run("a token larger than a registry's", func(t *testing.T) {
		tokens := newRegistryTokens(10_000, 8<<20)
		srv, login := tokenRegistry(t, maxRegistryTokenBytes+1, 0)
		if code := get(t, tokens, srv, login, "team/app"); code != http.StatusUnauthorized || tokens.tokens.Len() != 0 {
			t.Errorf("status %d with %d tokens kept; want the registry's 401 and none", code, tokens.tokens.Len())
		}
	})
	t.Run("a challenge larger than a registry's", func(t *testing.T) {
		tokens := newRegistryTokens(10_000, 8<<20)
		srv, login := tokenRegistry(t, 1<<10, maxChallengeBytes)
		if code := get(t, tokens, srv, login, "team/app"); code != http.StatusUnauthorized || tokens.realms.Len() != 0 {
			t.Errorf("status %d with %d challenges kept; want the registry's 401 and none", code, tokens.realms.Len())
		}
	})
	t.Run("a repository name longer than a registry's", func(t *testing.T) {
		tokens := newRegistryTokens(10_000, 8<<20)
		srv, login := tokenRegistry(t, 1<<10, 0)
		if code := get(t, tokens, srv, login, strings.Repeat("r", maxChallengeBytes)); code != http.StatusUnauthorized || tokens.tokens.Len() != 0 {
			t.Errorf("status %d with %d tokens kept; want the registry's 401 and none", code, tokens.tokens.Len())
		}
	})
}
