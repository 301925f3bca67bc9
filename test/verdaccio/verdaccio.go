// Package verdaccio runs a real npm registry for tests: Verdaccio, as hack/tools/npm.sh
// installs it, without uplinks (it never asks the public registry), letting only its own
// htpasswd users read or publish.
package verdaccio

import (
	"cmp"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// User is one of the registry's users.
type User struct{ Name, Password string }

// Server is a running Verdaccio.
type Server struct {
	// URL is the registry's address, http://<addr>.
	URL   string
	Users []User
	dir   string
	cmd   *exec.Cmd
}

// Options say where Verdaccio runs; the zero value is loopback.
type Options struct {
	// Addr is the host:port it listens on (default a free port of 127.0.0.1). It must be
	// reachable from this process, which waits for it to answer.
	Addr string
	// Wrap is a command Verdaccio's node runs under, e.g. {"ip", "netns", "exec", "<name>"};
	// it must exec node in place (so that Close stops it).
	Wrap []string
}

// ToolsDir is where hack/tools/npm.sh installs Verdaccio and Yarn (their node_modules).
func ToolsDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cmp.Or(os.Getenv("CONNECTORS_TOOLS_DIR"), filepath.Join(home, ".cache", "connectors-csi", "tools")),
		"verdaccio", "node_modules"), nil
}

// Tools returns node and Verdaccio's entry point, or an error naming the install step.
func Tools() (node, main string, err error) {
	if node, err = exec.LookPath("node"); err != nil {
		return "", "", fmt.Errorf("node is missing: run hack/tools.sh")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", "", fmt.Errorf("npm is missing: run hack/tools.sh")
	}
	dir, err := ToolsDir()
	if err != nil {
		return "", "", err
	}
	main = filepath.Join(dir, "verdaccio", "bin", "verdaccio")
	if _, err := os.Stat(main); err != nil {
		return "", "", fmt.Errorf("verdaccio is missing (%v): run hack/tools.sh", err)
	}
	return node, main, nil
}

// Start runs Verdaccio with users new users, its storage and configuration in dir (which
// must exist), until Close.
func Start(dir string, users int, o Options) (*Server, error) {
	node, main, err := Tools()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	var htpasswd strings.Builder
	for range users {
		u := User{Name: "ci-" + randomHex(3), Password: randomHex(12)}
		sum := sha1.Sum([]byte(u.Password)) // the {SHA} scheme of Verdaccio's htpasswd
		fmt.Fprintf(&htpasswd, "%s:{SHA}%s:autocreated 2026-01-01T00:00:00.000Z\n", u.Name, base64.StdEncoding.EncodeToString(sum[:]))
		s.Users = append(s.Users, u)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(htpasswd.String()), 0o600); err != nil {
		return nil, err
	}
	addr := o.Addr
	if addr == "" {
		if addr, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	config := fmt.Sprintf(`storage: %s
auth:
  htpasswd:
    file: %s
    max_users: -1
uplinks: {}
packages:
  '**':
    access: $authenticated
    publish: $authenticated
    unpublish: $authenticated
web:
  enable: false
log: {type: stdout, format: json, level: http}
`, filepath.Join(dir, "storage"), filepath.Join(dir, "htpasswd"))
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	argv := append(slices.Clone(o.Wrap), node, main, "--config", filepath.Join(dir, "config.yaml"), "--listen", addr)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	log, err := os.Create(filepath.Join(dir, "verdaccio.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own descriptor
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start verdaccio: %w", err)
	}
	s.URL = "http://" + addr
	if err := s.waitReady(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// waitReady waits (at most a minute) until the registry answers its ping.
func (s *Server) waitReady() error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get(s.URL + "/-/ping"); err == nil {
			resp.Body.Close()
			return nil
		}
	}
	return fmt.Errorf("verdaccio at %s did not answer within a minute:\n%s", s.URL, lastLines(s.Log(), 20))
}

// Log is what Verdaccio printed so far (one JSON object per line, a request's user among its
// fields).
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "verdaccio.log"))
	return string(b)
}

// Close stops Verdaccio.
func (s *Server) Close() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Auth is u's Basic Authorization header value.
func (u User) Auth() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Name+":"+u.Password))
}

func freeLoopbackAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
