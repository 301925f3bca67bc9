// Package registry runs a real OCI registry for tests: github.com/distribution/distribution/v3
// with in-memory storage and token auth, plus the token service it trusts, which hands out
// tokens for any requested scope to one basic-auth user. Both are served on one loopback
// address (the token service at /token, as many registries do; go-containerregistry accepts a
// realm on a private IP only on the registry's own host:port) and record what credentials
// reach them.
package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/go-jose/go-jose/v4"

	// The registry's storage and auth plugins register themselves.
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

const (
	service = "test-registry"
	issuer  = "test-token-issuer"
)

// Server is a running registry and its token service.
type Server struct {
	URL, TokenURL      string // http://host:port; TokenURL is URL + "/token"
	Username, Password string
	// AnonymousPull lets token requests without credentials have pull access, as public
	// registries do; set it before the first request.
	AnonymousPull bool

	key *ecdsa.PrivateKey
	kid string
	srv *httptest.Server

	mu   sync.Mutex
	seen []Seen
}

// Seen is the credential one request carried, and where it went.
type Seen struct {
	Server, Method, Path, Authorization, ProxyAuthorization string
}

// Start starts the registry and token service on host (a loopback address).
func Start(dir, host string) (*Server, error) {
	lis, err := net.Listen("tcp", host+":0")
	if err != nil {
		return nil, err
	}
	return StartOn(dir, lis)
}

// StartOn starts the registry and token service on lis (a TCP listener, e.g. one inside a
// test's network namespace), which it closes on failure.
func StartOn(dir string, lis net.Listener) (*Server, error) {
	s, err := startOn(dir, lis)
	if err != nil {
		lis.Close()
	}
	return s, err
}

func startOn(dir string, lis net.Listener) (*Server, error) {
	s := &Server{Username: "registry-bot", Password: "registry-password-" + filepath.Base(dir)}
	var err error
	if s.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	s.kid = token.GetJWKThumbprint(&s.key.PublicKey)
	bundle := filepath.Join(dir, "token-signer.pem")
	if err := s.writeSignerCert(bundle); err != nil {
		return nil, err
	}
	s.URL = "http://" + lis.Addr().String()
	s.TokenURL = s.URL + "/token"
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{"inmemory": configuration.Parameters{}},
		Auth: configuration.Auth{"token": configuration.Parameters{
			"realm": s.TokenURL, "service": service, "issuer": issuer, "rootcertbundle": bundle,
		}},
	}
	cfg.HTTP.Secret = "test-http-secret"
	cfg.Catalog.MaxEntries = 1000
	mux := http.NewServeMux()
	mux.Handle("/token", s.record("token", http.HandlerFunc(s.serveToken)))
	mux.Handle("/", s.record("registry", handlers.NewApp(context.Background(), cfg)))
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.Listener.Close()
	s.srv.Listener = lis
	s.srv.Start()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Requests returns what reached the registry and the token service.
func (s *Server) Requests() []Seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Seen(nil), s.seen...)
}

func (s *Server) record(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, Seen{Server: name, Method: r.Method, Path: r.URL.Path,
			Authorization: r.Header.Get("Authorization"), ProxyAuthorization: r.Header.Get("Proxy-Authorization")})
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// writeSignerCert writes a self-signed certificate of the token signing key, the registry's
// rootcertbundle.
func (s *Server) writeSignerCert(path string) error {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: issuer},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &s.key.PublicKey, s.key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

// serveToken issues a token for the requested scopes to the one known user.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	anonymous := !ok && r.Header.Get("Authorization") == "" && s.AnonymousPull
	if !anonymous && (!ok || user != s.Username || pass != s.Password) {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	var access []*token.ResourceActions
	for _, scope := range r.URL.Query()["scope"] {
		parts := strings.SplitN(scope, ":", 3)
		if len(parts) != 3 {
			continue
		}
		actions := strings.Split(parts[2], ",")
		if anonymous {
			actions = []string{"pull"}
		}
		access = append(access, &token.ResourceActions{Type: parts[0], Name: parts[1], Actions: actions})
	}
	now := time.Now()
	claims := token.ClaimSet{Issuer: issuer, Subject: user, Audience: token.AudienceList{service},
		Expiration: now.Add(5 * time.Minute).Unix(), NotBefore: now.Add(-time.Minute).Unix(), IssuedAt: now.Unix(),
		JWTID: fmt.Sprint(now.UnixNano()), Access: access}
	tok, err := s.sign(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300, "issued_at": now.Format(time.RFC3339)})
}

func (s *Server) sign(claims token.ClaimSet) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.kid))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}
