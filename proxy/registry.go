package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// registryLogin is a Connector's basic credential for an OCI registry's token service, and the
// Connector's addresses: the credential goes only to a realm under one of them.
type registryLogin struct {
	username, password string
	addresses          []*url.URL
}

func (l *registryLogin) realmAllowed(realm *url.URL) bool {
	for _, a := range l.addresses {
		if covers(a, realm) {
			return true
		}
	}
	return false
}

// registryTokens answers registries' "WWW-Authenticate: Bearer realm=..." challenges for the
// client (SPEC §4.6): it fetches a token from the realm with the Connector's credential, keeps
// it per scope until it expires, and retries the request with it. A client then pulls and
// pushes through the proxy with only its Pod token. The challenge format is the Docker
// registry token protocol; go-containerregistry implements the client side of it for a client
// that holds the credential, not for a proxy that must keep it, so this part is the project's.
type registryTokens struct {
	client *http.Client
	mu     sync.Mutex
	tokens map[string]registryToken // by user, registry host and scope
	// realms remembers each registry's challenge (by user and host), so that a request whose
	// body cannot be replayed gets its token before it is sent.
	realms map[string]challenge
	group  singleflight.Group
}

type registryToken struct {
	value   string
	expires time.Time
}

func newRegistryTokens() *registryTokens {
	return &registryTokens{client: &http.Client{Timeout: 30 * time.Second}, tokens: map[string]registryToken{}, realms: map[string]challenge{}}
}

// roundTrip sends r with a cached token for its scope; on a Bearer challenge it fetches one and
// retries once when the body can be replayed.
func (t *registryTokens) roundTrip(base http.RoundTripper, login *registryLogin, r *http.Request) (*http.Response, error) {
	scope := scopeOf(r)
	tok, ok := t.cached(login, r.URL.Host, scope)
	if !ok && scope != "" && !replayable(r) {
		tok, ok = t.prefetch(base, login, r.URL.Host, scope)
	}
	if ok {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := base.RoundTrip(r)
	if err != nil || res.StatusCode != http.StatusUnauthorized {
		return res, err
	}
	ch, ok := parseBearerChallenge(res.Header.Get("WWW-Authenticate"))
	if !ok {
		return res, nil
	}
	t.mu.Lock()
	t.realms[t.key(login, r.URL.Host, "")] = challenge{realm: ch.realm, service: ch.service}
	t.mu.Unlock()
	if !replayable(r) {
		return res, nil
	}
	if ch.scope == "" {
		ch.scope = scope
	}
	tok, err = t.fetch(base, login, r.URL.Host, ch)
	if err != nil {
		return res, nil // the client sees the registry's own 401
	}
	retry := r.Clone(r.Context())
	if r.GetBody != nil {
		if retry.Body, err = r.GetBody(); err != nil {
			return res, nil
		}
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	retry.Header.Set("Authorization", "Bearer "+tok)
	return base.RoundTrip(retry)
}

// replayable reports whether r can be sent again.
func replayable(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

// prefetch gets a token for scope from the realm this registry challenged with before.
func (t *registryTokens) prefetch(base http.RoundTripper, login *registryLogin, host, scope string) (string, bool) {
	t.mu.Lock()
	ch, known := t.realms[t.key(login, host, "")]
	t.mu.Unlock()
	if !known {
		return "", false
	}
	ch.scope = scope
	tok, err := t.fetch(base, login, host, ch)
	return tok, err == nil
}

// normalizeScope sorts a scope's actions, so "push,pull" and "pull,push" share a token.
func normalizeScope(scope string) string {
	i := strings.LastIndexByte(scope, ':')
	if i < 0 {
		return scope
	}
	actions := strings.Split(scope[i+1:], ",")
	slices.Sort(actions)
	return scope[:i+1] + strings.Join(actions, ",")
}

// scopeOf guesses the token scope of a registry request from its path, so that a cached token
// is sent up front: /v2/<name>/(manifests|blobs|tags)/... → repository:<name>:pull[,push].
func scopeOf(r *http.Request) string {
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	for _, marker := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.Index(p, marker); i > 0 {
			actions := "pull"
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				actions = "pull,push"
			}
			return "repository:" + p[:i] + ":" + actions
		}
	}
	return ""
}

func (t *registryTokens) key(login *registryLogin, host, scope string) string {
	return login.username + "\x00" + host + "\x00" + normalizeScope(scope)
}

func (t *registryTokens) cached(login *registryLogin, host, scope string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tok, ok := t.tokens[t.key(login, host, scope)]
	if !ok && strings.HasSuffix(scope, ":pull") {
		// A push token also allows pulls.
		tok, ok = t.tokens[t.key(login, host, scope+",push")]
	}
	if !ok || time.Now().After(tok.expires) {
		return "", false
	}
	return tok.value, true
}

// challenge is a parsed Bearer challenge.
type challenge struct{ realm, service, scope string }

func parseBearerChallenge(h string) (challenge, bool) {
	rest, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return challenge{}, false
	}
	var c challenge
	for _, part := range splitParams(rest) {
		k, v, _ := strings.Cut(part, "=")
		v = strings.Trim(v, `"`)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "realm":
			c.realm = v
		case "service":
			c.service = v
		case "scope":
			c.scope = v
		}
	}
	return c, c.realm != ""
}

// splitParams splits auth-params on commas outside quotes (scopes contain commas).
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// fetch gets a token from the realm with the Connector's credential and caches it.
func (t *registryTokens) fetch(base http.RoundTripper, login *registryLogin, host string, ch challenge) (string, error) {
	key := t.key(login, host, ch.scope)
	v, err, _ := t.group.Do(key, func() (any, error) {
		u, err := url.Parse(ch.realm)
		if err != nil {
			return nil, err
		}
		if !login.realmAllowed(u) {
			return nil, fmt.Errorf("token realm %s is not an address of the Connector", u.Host)
		}
		q := u.Query()
		if ch.service != "" {
			q.Set("service", ch.service)
		}
		if ch.scope != "" {
			q.Set("scope", ch.scope)
		}
		u.RawQuery = q.Encode()
		req, err := http.NewRequest(http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth(login.username, login.password)
		res, err := (&http.Client{Transport: base, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("token service %s answered %s", u.Host, res.Status)
		}
		var body struct {
			Token       string `json:"token"`
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
		}
		if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&body); err != nil {
			return nil, fmt.Errorf("token service %s: %w", u.Host, err)
		}
		tok := body.Token
		if tok == "" {
			tok = body.AccessToken
		}
		if tok == "" {
			return nil, fmt.Errorf("token service %s returned no token", u.Host)
		}
		life := time.Duration(body.ExpiresIn) * time.Second
		if life <= 0 {
			life = 60 * time.Second // the protocol's default
		}
		t.mu.Lock()
		// Renew a little early so a request never carries a token about to expire.
		t.tokens[key] = registryToken{value: tok, expires: time.Now().Add(life * 9 / 10)}
		t.mu.Unlock()
		return tok, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}
