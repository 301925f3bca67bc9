package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachebudget"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

// registryLogin is a Connector's basic credential for an OCI registry's token service, and the
// Connector's addresses: the credential goes only to a realm under one of them.
type registryLogin struct {
	username, password string
	addresses          []*url.URL
	// owner keys every cached token and realm: the Connector's UID and a hash of this
	// credential, so that another Connector with the same username (and a wrong or weaker
	// password) never gets a token this one earned, nor does this one after its Secret changed.
	owner string
}

func newRegistryLogin(c *v1alpha1.Connector, sec *corev1.Secret) *registryLogin {
	username, password := sec.Data[corev1.BasicAuthUsernameKey], sec.Data[corev1.BasicAuthPasswordKey]
	h := sha256.New()
	h.Write(username)
	h.Write([]byte{0})
	h.Write(password)
	return &registryLogin{username: string(username), password: string(password), addresses: parsedAddresses(c),
		owner: string(c.UID) + "\x00" + hex.EncodeToString(h.Sum(nil))}
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
	// tokens by owner, registry host and scope; scopes are chosen by clients, so the cache is
	// bounded, and no token is kept past maxTokenLife whatever the token service says.
	tokens *expirable.LRU[string, registryToken]
	// realms remembers each registry's challenge (by owner and host), so that a request whose
	// body cannot be replayed gets its token before it is sent.
	realms *expirable.LRU[string, challenge]
	// The token service and the challenges are the registry's, which is whatever server a
	// Connector's owner runs, and scopes come from request paths: what both caches hold is
	// bounded in bytes too (a tenant's registry answering 1 MiB tokens for 10,000 scopes would
	// otherwise have the node keep 10 GiB).
	tokenBytes, realmBytes *cachebudget.Budget
	group                  singleflight.Group
}

// maxRegistryTokenBytes bounds a token service's token (Docker Hub's, Harbor's, the clouds'
// are a few KiB at most); maxChallengeBytes a challenge's realm, service and scope together,
// and a request's scope (registries cap repository names at a few hundred bytes). Beyond
// either, the client gets the registry's own 401.
const (
	maxRegistryTokenBytes = 16 << 10
	maxChallengeBytes     = 1 << 10
)

// maxTokenLife caps how long a registry token is kept; realms are remembered as long.
const maxTokenLife = time.Hour

// registryToken is a token service's token as a request carries it: its Authorization value
// ("Bearer " and the token, made once per token, not per request).
type registryToken struct {
	authorization string
	expires       time.Time
}

// bytes is what a token kept under key takes, about.
func (tok registryToken) bytes(key string) int64 {
	return int64(len(key) + len(tok.authorization) + 64)
}

func newRegistryTokens(size int, maxBytes int64) *registryTokens {
	t := &registryTokens{tokenBytes: &cachebudget.Budget{Max: maxBytes}, realmBytes: &cachebudget.Budget{Max: max(maxBytes/8, 1)}}
	t.tokens = expirable.NewLRU(size, func(key string, tok registryToken) { t.tokenBytes.Evicted(tok.bytes(key)) }, maxTokenLife)
	t.realms = expirable.NewLRU(size, func(key string, ch challenge) { t.realmBytes.Evicted(ch.bytes(key)) }, maxTokenLife)
	cachemetrics.Register("registry_tokens", t.tokens.Len)
	cachemetrics.Register("registry_realms", t.realms.Len)
	return t
}

// roundTrip sends r with a cached token for its scope; on a Bearer challenge it fetches one and
// retries once when the body can be replayed.
func (t *registryTokens) roundTrip(base http.RoundTripper, login *registryLogin, r *http.Request) (*http.Response, error) {
	scope := scopeOf(r.Method, r.URL.Path)
	if len(scope) > maxChallengeBytes {
		return base.RoundTrip(r) // no registry names a repository so: its own answer
	}
	auth, ok := t.cached(login, r.URL.Host, scope)
	if !ok && scope != "" && !replayable(r) {
		auth, ok = t.prefetch(base, login, r.URL.Host, scope)
	}
	if ok {
		r.Header.Set("Authorization", auth.authorization)
	}
	res, err := base.RoundTrip(r)
	if err != nil || res.StatusCode != http.StatusUnauthorized {
		return res, err
	}
	ch, ok := parseBearerChallenge(res.Header.Get("WWW-Authenticate"))
	if !ok || len(ch.realm)+len(ch.service)+len(ch.scope) > maxChallengeBytes {
		return res, nil
	}
	realmKey, realm := t.key(login, r.URL.Host, ""), challenge{realm: ch.realm, service: ch.service}
	if known, ok := t.realms.Peek(realmKey); !ok || known != realm { // every 401 brings it again
		cachebudget.Add(t.realmBytes, t.realms, realmKey, realm, realm.bytes(realmKey))
	}
	if !replayable(r) {
		return res, nil
	}
	if ch.scope == "" {
		ch.scope = scope
	}
	auth, err = t.fetch(base, login, r.URL.Host, ch)
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
	retry.Header.Set("Authorization", auth.authorization)
	return base.RoundTrip(retry)
}

// replayable reports whether r can be sent again.
func replayable(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

// prefetch gets a token for scope from the realm this registry challenged with before.
func (t *registryTokens) prefetch(base http.RoundTripper, login *registryLogin, host, scope string) (registryToken, bool) {
	ch, known := t.realms.Get(t.key(login, host, ""))
	if !known {
		return registryToken{}, false
	}
	ch.scope = scope
	tok, err := t.fetch(base, login, host, ch)
	return tok, err == nil
}

// normalizeScope sorts a scope's actions, so "push,pull" and "pull,push" share a token.
func normalizeScope(scope string) string {
	i := strings.LastIndexByte(scope, ':')
	if i < 0 || strings.IndexByte(scope[i+1:], ',') < 0 {
		return scope // one action (a pull's): nothing to sort
	}
	actions := strings.Split(scope[i+1:], ",")
	slices.Sort(actions)
	return scope[:i+1] + strings.Join(actions, ",")
}

// scopeOf guesses the token scope of a registry request of method to path (decoded), so that a
// cached token is sent up front: /v2/<name>/(manifests|blobs|tags)/... →
// repository:<name>:pull[,push].
func scopeOf(method, path string) string {
	name, ok := repositoryOf(path)
	if !ok {
		return ""
	}
	if !getOrHead(method) {
		return "repository:" + name + ":pull,push"
	}
	return pullScope(name)
}

// repositoryOf is the repository a registry request to path (decoded) is about:
// /v2/<name>/(manifests|blobs|tags)/...; ok is false for the others (the /v2/ ping, the
// catalog).
func repositoryOf(path string) (name string, ok bool) {
	p := strings.TrimPrefix(path, "/v2/")
	for _, marker := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.Index(p, marker); i > 0 {
			return p[:i], true
		}
	}
	return "", false
}

func pullScope(name string) string { return "repository:" + name + ":pull" }

func (t *registryTokens) key(login *registryLogin, host, scope string) string {
	return login.owner + "\x00" + host + "\x00" + normalizeScope(scope)
}

func (t *registryTokens) cached(login *registryLogin, host, scope string) (registryToken, bool) {
	tok, ok := t.tokens.Get(t.key(login, host, scope))
	if !ok && strings.HasSuffix(scope, ":pull") {
		// A push token also allows pulls.
		tok, ok = t.tokens.Get(t.key(login, host, scope+",push"))
	}
	if !ok || time.Now().After(tok.expires) {
		return registryToken{}, false
	}
	return tok, true
}

// challenge is a parsed Bearer challenge.
type challenge struct{ realm, service, scope string }

// bytes is what a challenge kept under key takes, about.
func (ch challenge) bytes(key string) int64 {
	return int64(len(key) + len(ch.realm) + len(ch.service) + len(ch.scope) + 64)
}

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
func (t *registryTokens) fetch(base http.RoundTripper, login *registryLogin, host string, ch challenge) (registryToken, error) {
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
		req.Header.Set(egress.HopHeader, "1")
		// No redirect is followed: the credential would go with it (Go keeps Authorization
		// on a redirect to the same host name or a subdomain).
		res, err := egress.Client(base, 30*time.Second).Do(req)
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
		if len(tok) > maxRegistryTokenBytes {
			return nil, fmt.Errorf("token service %s returned a token of %d bytes, more than %d", u.Host, len(tok), maxRegistryTokenBytes)
		}
		life := time.Duration(body.ExpiresIn) * time.Second
		if life <= 0 {
			life = 60 * time.Second // the protocol's default
		}
		// Renew a little early so a request never carries a token about to expire.
		// Sanitized as net/http writes a header value: the fast lane writes it as it is.
		kept := registryToken{authorization: sanitizedValue("Bearer " + tok), expires: time.Now().Add(min(life*9/10, maxTokenLife))}
		cachebudget.Add(t.tokenBytes, t.tokens, key, kept, kept.bytes(key))
		return kept, nil
	})
	if err != nil {
		return registryToken{}, err
	}
	return v.(registryToken), nil
}
