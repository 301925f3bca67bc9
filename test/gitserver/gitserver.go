// Package gitserver runs a real Git smart-HTTP server for tests: git http-backend (from
// Debian's git) behind basic auth, on a loopback address (or a listener the test gives it),
// over http or https. It records the
// credentials each request carried, so tests can check what reached the tool.
package gitserver

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/kube-connectors/connectors-csi/test/testca"
)

// Host is the loopback address test tools listen on. It is not 127.0.0.1, so that a no_proxy
// list naming localhost does not route clients around the proxy.
const Host = "127.0.0.2"

// backend is git's CGI program on Debian.
const backend = "/usr/lib/git-core/git-http-backend"

// Server is a running Git server with one repository, repo.git, holding one commit on main.
type Server struct {
	URL                string
	Username, Password string
	CA                 *testca.CA // for https servers
	root               string
	srv                *httptest.Server

	mu   sync.Mutex
	seen []Request
}

// Request is what one request to the server carried.
type Request struct {
	Method, Path       string
	Authorization      string
	ProxyAuthorization string
	Header             http.Header
	// Chunked: the body came chunked (git sends a push's pack so from http.postBuffer, 1 MiB).
	Chunked bool
}

// Start starts a server on Host; secure selects https with a fresh test CA.
func Start(dir string, secure bool) (*Server, error) {
	lis, err := net.Listen("tcp", Host+":0")
	if err != nil {
		return nil, err
	}
	return StartOn(lis, dir, secure)
}

// StartOn starts a server on lis (a TCP listener, e.g. one inside a test's network namespace),
// which it closes on failure.
func StartOn(lis net.Listener, dir string, secure bool) (*Server, error) {
	s, err := startOn(lis, dir, secure)
	if err != nil {
		lis.Close()
	}
	return s, err
}

func startOn(lis net.Listener, dir string, secure bool) (*Server, error) {
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("git http-backend not found (apt-get install git): %w", err)
	}
	s := &Server{Username: "git-bot", Password: "tool-password-" + filepath.Base(dir), root: filepath.Join(dir, "repos")}
	if err := s.initRepo(dir); err != nil {
		return nil, err
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = lis
	if secure {
		var err error
		if s.CA, err = testca.New(); err != nil {
			return nil, err
		}
		cert, err := s.CA.ServerCert([]net.IP{lis.Addr().(*net.TCPAddr).IP})
		if err != nil {
			return nil, err
		}
		s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	return s, nil
}

// SetCredential makes the server accept Basic user:pass instead: the scheme a forge takes for
// git over HTTPS with a token (any user name, the token as the password). An empty user serves
// anyone, as a public repository's server does.
func (s *Server) SetCredential(user, pass string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Username, s.Password = user, pass
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Requests returns what the requests so far carried.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.seen...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen = append(s.seen, Request{Method: r.Method, Path: r.URL.Path, Authorization: r.Header.Get("Authorization"),
		ProxyAuthorization: r.Header.Get("Proxy-Authorization"), Header: r.Header.Clone(), Chunked: slices.Contains(r.TransferEncoding, "chunked")})
	username, password := s.Username, s.Password
	s.mu.Unlock()
	if r.URL.Path == "/redirect" {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		return
	}
	user, pass, ok := r.BasicAuth()
	if username != "" && (!ok || user != username || pass != password) {
		w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	if err := unchunk(r); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + s.root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER=" + user},
	}
	h.ServeHTTP(w, r)
}

// maxUnchunked bounds what unchunk holds in memory: well above the packs the tests push.
const maxUnchunked = 64 << 20

// unchunk reads a chunked body whole and gives r its length: net/http/cgi refuses chunked
// bodies (a CGI script learns a body's end from CONTENT_LENGTH), while git sends a push's
// pack chunked once it is larger than http.postBuffer.
func unchunk(r *http.Request) error {
	if r.ContentLength >= 0 {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxUnchunked+1))
	if err != nil {
		return fmt.Errorf("reading the chunked body: %w", err)
	}
	if len(body) > maxUnchunked {
		return fmt.Errorf("chunked body over %d bytes", maxUnchunked)
	}
	r.Body, r.ContentLength, r.TransferEncoding = io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
	return nil
}

// initRepo makes repos/repo.git with one commit on main, accepting pushes.
func (s *Server) initRepo(dir string) error {
	work := filepath.Join(dir, "seed")
	bare := filepath.Join(s.root, "repo.git")
	steps := [][]string{
		{"init", "-q", "-b", "main", work},
		{"-C", work, "-c", "user.name=seed", "-c", "user.email=seed@example.com", "commit", "-q", "--allow-empty", "-m", "initial"},
		{"clone", "-q", "--bare", work, bare},
		{"-C", bare, "config", "http.receivepack", "true"},
	}
	for _, args := range steps {
		if out, err := Git("", nil, args...); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Git runs git with a clean environment plus env; no credential helper or user config applies.
func Git(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"HOME=" + os.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// AddRefs adds branches and lightweight tags pointing at main's commit, in one transaction.
func (s *Server) AddRefs(branches, tags []string) error {
	sha, err := s.Head()
	if err != nil {
		return fmt.Errorf("rev-parse: %v: %s", err, sha)
	}
	var batch strings.Builder
	for _, b := range branches {
		fmt.Fprintf(&batch, "create refs/heads/%s %s\n", b, sha)
	}
	for _, t := range tags {
		fmt.Fprintf(&batch, "create refs/tags/%s %s\n", t, sha)
	}
	cmd := exec.Command("git", "-C", filepath.Join(s.root, "repo.git"), "update-ref", "--stdin")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("update-ref: %v: %s", err, out)
	}
	return nil
}

// Head returns main's commit id.
func (s *Server) Head() (string, error) {
	out, err := Git(filepath.Join(s.root, "repo.git"), nil, "rev-parse", "refs/heads/main")
	return strings.TrimSpace(out), err
}
