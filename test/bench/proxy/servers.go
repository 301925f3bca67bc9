package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/kube-connectors/connectors-csi/test/bench/benchenv"
	"github.com/kube-connectors/connectors-csi/test/testca"
)

// nginxServer is Debian's nginx as a keep-alive reverse proxy that sets the credential
// header: over http on addr, over http in front of the https upstream on toTLSAddr, and
// terminating TLS on tlsAddr in front of the https upstream.
type nginxServer struct {
	addr, toTLSAddr, tlsAddr string
	caPEM                    []byte
	cmd                      *exec.Cmd
	dir                      string
}

func (n *nginxServer) pids() []int { return benchenv.Family(n.cmd.Process.Pid) }

// stop ends nginx and its workers: SIGTERM is nginx's fast shutdown, in which the master stops
// its workers; a killed master would leave them running (and listening).
func (n *nginxServer) stop() {
	family := n.pids()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
	for _, pid := range family {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-exited
	_ = os.RemoveAll(n.dir)
}

func startNginx(up *benchenv.Upstream) (*nginxServer, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, fmt.Errorf("nginx not installed (apt-get install nginx): %w", err)
	}
	n := &nginxServer{}
	if n.addr, err = benchenv.FreeAddr(); err != nil {
		return nil, err
	}
	if n.tlsAddr, err = benchenv.FreeAddr(); err != nil {
		return nil, err
	}
	if n.toTLSAddr, err = benchenv.FreeAddr(); err != nil {
		return nil, err
	}
	if n.dir, err = os.MkdirTemp("", "bench-nginx-"); err != nil {
		return nil, err
	}
	authority, err := testca.New()
	if err != nil {
		return nil, err
	}
	if err := writeKeyPair(authority, n.dir); err != nil {
		return nil, err
	}
	n.caPEM = authority.PEM
	conf := fmt.Sprintf(`worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s; proxy_temp_path %[2]s; fastcgi_temp_path %[2]s; uwsgi_temp_path %[2]s; scgi_temp_path %[2]s;
  upstream tool { server %[3]s; keepalive 128; }
  upstream tool_tls { server %[6]s; keepalive 128; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Authorization "%[5]s";
  proxy_buffering off;
  server {
    listen %[4]s;
    location / { proxy_pass http://tool; }
    location /upload/ { proxy_pass http://tool/; proxy_request_buffering off; client_max_body_size 0; }
  }
  server {
    listen %[8]s;
    location / { proxy_pass https://tool_tls; proxy_ssl_session_reuse on; }
  }
  server {
    listen %[7]s ssl;
    ssl_certificate %[2]s/tls.crt;
    ssl_certificate_key %[2]s/tls.key;
    location / { proxy_pass https://tool_tls; proxy_ssl_session_reuse on; }
  }
}
`, runtime.NumCPU(), n.dir, strings.TrimPrefix(up.URL, "http://"), n.addr, benchenv.BasicCredential(),
		strings.TrimPrefix(up.TLSURL, "https://"), n.tlsAddr, n.toTLSAddr)
	if err := os.WriteFile(filepath.Join(n.dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	n.cmd = exec.Command(bin, "-c", filepath.Join(n.dir, "nginx.conf"), "-p", n.dir)
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	if err := benchenv.WaitListening(n.addr, n.tlsAddr, n.toTLSAddr); err != nil {
		n.stop()
		return nil, fmt.Errorf("nginx: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // its workers start after the master listens
	return n, nil
}

// writeKeyPair writes a server certificate for 127.0.0.1 from authority into dir/tls.crt and tls.key.
func writeKeyPair(authority *testca.CA, dir string) error {
	cert, err := authority.ServerCert([]net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return err
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
}
