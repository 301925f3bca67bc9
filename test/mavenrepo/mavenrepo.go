// Package mavenrepo runs a real Maven repository for tests: Debian's nginx on a loopback
// address, with WebDAV PUT (what `mvn deploy` sends) under one path behind Basic auth. A GET
// that misses the repository's own files falls back to Debian's /usr/share/maven-repo, so that
// mvn resolves its plugins from this server (through whatever sits in between) and never from
// the internet. Every request is logged with its credential headers, for tests to check what
// reached the repository.
package mavenrepo

import (
	"bufio"
	"cmp"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kube-connectors/connectors-csi/test/testca"
)

// Host is the loopback address the repository listens on: not 127.0.0.1, so that a client's
// non-proxy rule for the proxy's host does not cover the repository too.
const Host = "127.0.0.2"

// DebianRepo is the directory of Debian's packaged Maven artifacts (plugins included).
const DebianRepo = "/usr/share/maven-repo"

// Server is a running nginx serving one Maven repository.
type Server struct {
	// URL is the repository's address, http(s)://<Host>:<port><path>.
	URL                string
	Username, Password string
	// Root is the directory holding what was deployed.
	Root string
	// CA issued the server's certificate, for a Server of StartTLS.
	CA  *testca.CA
	dir string
	cmd *exec.Cmd
}

// Request is one request as the repository logged it.
type Request struct {
	Method             string `json:"method"`
	URI                string `json:"uri"`
	Status             string `json:"status"`
	Authorization      string `json:"authorization"`
	ProxyAuthorization string `json:"proxyAuthorization"`
	UserAgent          string `json:"userAgent"`
	User               string `json:"user"`
}

// Missing names what is not installed, or is "" when nginx and the Debian repository are there.
func Missing() string {
	if _, err := exec.LookPath("nginx"); err != nil {
		return "nginx"
	}
	if _, err := os.Stat(filepath.Join(DebianRepo, "org/apache/maven/plugins/maven-deploy-plugin")); err != nil {
		return "libmaven-deploy-plugin-java"
	}
	return ""
}

// Start runs nginx over http in dir (which must exist) until Close, the repository at /maven.
func Start(dir string) (*Server, error) {
	return StartWith(dir, Options{})
}

// StartTLS is Start over https, with a certificate for Host from a new CA (Server.CA).
func StartTLS(dir string) (*Server, error) {
	return StartWith(dir, Options{Secure: true})
}

// StartAt runs the repository at path (e.g. /repository/maven-public, as Nexus serves one),
// over https when secure.
func StartAt(dir, path string, secure bool) (*Server, error) {
	return StartWith(dir, Options{Path: path, Secure: secure})
}

// Options say where and how a repository runs; the zero value is Start's.
type Options struct {
	// Path is where the repository is served (default /maven).
	Path string
	// Secure serves https with a certificate for Addr's host from a new CA.
	Secure bool
	// Addr is the host:port nginx listens on (default a free port of Host). It must be
	// reachable from this process, which waits for it to answer.
	Addr string
	// Wrap is a command nginx runs under, e.g. {"ip", "netns", "exec", "<name>"} to listen
	// inside a network namespace; it must exec nginx in place (so that Close stops it).
	Wrap []string
}

// StartWith runs a repository as o says, in dir (which must exist), until Close.
func StartWith(dir string, o Options) (*Server, error) {
	path := "/" + strings.Trim(cmp.Or(o.Path, "/maven"), "/")
	s := &Server{Username: "deployer", Password: randomHex(), Root: filepath.Join(dir, "repo"), dir: dir}
	for _, d := range []string{s.Root, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	sum := sha1.Sum([]byte(s.Password))
	htpasswd := fmt.Sprintf("%s:{SHA}%s\n", s.Username, base64.StdEncoding.EncodeToString(sum[:]))
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(htpasswd), 0o600); err != nil {
		return nil, err
	}
	addr := o.Addr
	if addr == "" {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	listen, scheme := addr, "http"
	if o.Secure {
		if err := s.writeCertificate(net.ParseIP(host)); err != nil {
			return nil, err
		}
		listen, scheme = addr+" ssl;\n    ssl_certificate "+dir+"/tls.crt;\n    ssl_certificate_key "+dir+"/tls.key", "https"
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(s.config(listen, path)), 0o600); err != nil {
		return nil, err
	}
	argv := append(slices.Clone(o.Wrap), "nginx", "-p", dir, "-c", conf)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	if err := waitListening(addr); err != nil {
		s.Close()
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, fmt.Errorf("%w\nnginx error.log:\n%s", err, log)
	}
	s.URL = scheme + "://" + addr + path
	return s, nil
}

// writeCertificate issues the server's certificate for ip from a new CA into dir/tls.crt and tls.key.
func (s *Server) writeCertificate(ip net.IP) error {
	ca, err := testca.New()
	if err != nil {
		return err
	}
	cert, err := ca.ServerCert([]net.IP{ip})
	if err != nil {
		return err
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	s.CA = ca
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	if err := os.WriteFile(filepath.Join(s.dir, "tls.crt"), crt, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
}

// config is nginx's configuration: one process in the foreground (so Close stops all of it),
// every path under dir, PUT allowed under path, misses served from Debian's repository.
func (s *Server) config(listen, path string) string {
	return fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
  client_body_temp_path %[1]s/tmp;
  proxy_temp_path %[1]s/tmp;
  fastcgi_temp_path %[1]s/tmp;
  uwsgi_temp_path %[1]s/tmp;
  scgi_temp_path %[1]s/tmp;
  log_format requests escape=json '{"method":"$request_method","uri":"$request_uri","status":"$status",'
    '"authorization":"$http_authorization","proxyAuthorization":"$http_proxy_authorization",'
    '"userAgent":"$http_user_agent","user":"$remote_user"}';
  access_log %[1]s/access.log requests;
  server {
    listen %[2]s;
    location %[4]s/ {
      alias %[1]s/repo/;
      auth_basic "maven";
      auth_basic_user_file %[1]s/htpasswd;
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      client_max_body_size 64m;
      error_page 404 = @debian;
    }
    location @debian {
      root %[3]s;
      rewrite ^%[4]s/(.*)$ /$1 break;
    }
    location / { return 404; }
  }
}
`, s.dir, listen, DebianRepo, path)
}

// flushPath is requested by Requests to know the log is complete: nginx logs a request when
// it is finalized, which for a request whose body it discards can be after the client read the
// answer. nginx here is one process: once this later request is logged, so is every earlier one.
const flushPath = "/connectors-test-log-flush"

// Requests are the requests the repository logged so far (its own flush requests left out).
func (s *Server) Requests() ([]Request, error) {
	u, err := url.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a flush of the test's own server
	res, err := client.Get(u.Scheme + "://" + u.Host + flushPath)
	if err != nil {
		return nil, fmt.Errorf("flushing the access log: %w", err)
	}
	res.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs, flushed, err := s.readLog()
		if err != nil || flushed || time.Now().After(deadline) {
			return reqs, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLog parses the access log, and tells whether a flush request is in it.
func (s *Server) readLog() ([]Request, bool, error) {
	f, err := os.Open(filepath.Join(s.dir, "access.log"))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	var out []Request
	flushed := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Request
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, false, fmt.Errorf("access.log: %w", err)
		}
		if r.URI == flushPath {
			flushed = true
			continue
		}
		out = append(out, r)
	}
	return out, flushed, sc.Err()
}

// Close stops nginx.
func (s *Server) Close() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", Host+":0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nginx did not listen on %s", addr)
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Contains reports whether any logged field of r holds s.
func (r Request) Contains(s string) bool {
	for _, v := range []string{r.Method, r.URI, r.Authorization, r.ProxyAuthorization, r.UserAgent, r.User} {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}
