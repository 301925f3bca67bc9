package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy/ca"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/testca"
)

// upstream is the tool: it serves 1 KiB and 1 MiB bodies to requests carrying its credential,
// over http and over https (a certificate for 127.0.0.2 from its own CA).
type upstream struct {
	url, tlsURL string
	ca          *testca.CA
}

func startUpstream() (*upstream, error) {
	bodies := map[string][]byte{"/1k": make([]byte, 1<<10), "/1m": make([]byte, 1<<20)}
	want := basicCredential()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		body, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})
	authority, err := testca.New()
	if err != nil {
		return nil, err
	}
	cert, err := authority.ServerCert([]net.IP{net.ParseIP("127.0.0.2")})
	if err != nil {
		return nil, err
	}
	plain, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return nil, err
	}
	secure, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return nil, err
	}
	go http.Serve(plain, handler)
	go http.Serve(tls.NewListener(secure, &tls.Config{Certificates: []tls.Certificate{cert}}), handler)
	return &upstream{url: "http://" + plain.Addr().String(), tlsURL: "https://" + secure.Addr().String(), ca: authority}, nil
}

func basicCredential() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(toolUser+":"+toolPass))
}

// nginxServer is Debian's nginx as a keep-alive reverse proxy that sets the credential
// header: over http on addr, and terminating TLS on tlsAddr in front of the https upstream.
type nginxServer struct {
	addr, tlsAddr string
	caPEM         []byte
	cmd           *exec.Cmd
	dir           string
}

func (n *nginxServer) pids() []int { return family(n.cmd.Process.Pid) }

func (n *nginxServer) stop() { _ = n.cmd.Process.Kill(); _ = n.cmd.Wait(); _ = os.RemoveAll(n.dir) }

func startNginx(up *upstream) (*nginxServer, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, fmt.Errorf("nginx not installed (apt-get install nginx): %w", err)
	}
	n := &nginxServer{}
	if n.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	if n.tlsAddr, err = freeAddr(); err != nil {
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
  }
  server {
    listen %[7]s ssl;
    ssl_certificate %[2]s/tls.crt;
    ssl_certificate_key %[2]s/tls.key;
    location / { proxy_pass https://tool_tls; proxy_ssl_session_reuse on; }
  }
}
`, runtime.NumCPU(), n.dir, strings.TrimPrefix(up.url, "http://"), n.addr, basicCredential(),
		strings.TrimPrefix(up.tlsURL, "https://"), n.tlsAddr)
	if err := os.WriteFile(filepath.Join(n.dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	n.cmd = exec.Command(bin, "-c", filepath.Join(n.dir, "nginx.conf"), "-p", n.dir)
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitListening(n.addr, n.tlsAddr); err != nil {
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

// driverProcess is bin/connectors-csi in the node role (the DaemonSet's process: CSI, proxy,
// Connectors API), in a process of its own so that its CPU time is its own.
type driverProcess struct {
	proxyAddr, metricsAddr string
	cmd                    *exec.Cmd
	dir                    string
}

func (d *driverProcess) pids() []int { return []int{d.cmd.Process.Pid} }

func (d *driverProcess) stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	_ = d.cmd.Wait()
	_ = os.RemoveAll(d.dir)
}

func startDriverProcess(cp *controlplane.ControlPlane) (*driverProcess, error) {
	d := &driverProcess{}
	var err error
	if d.proxyAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if d.metricsAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if d.dir, err = os.MkdirTemp("", "bench-driver-"); err != nil {
		return nil, err
	}
	bin := filepath.Join(controlplane.RepoRoot(), "bin", "connectors-csi")
	d.cmd = exec.Command(bin, "--role=node", "--endpoint=unix://"+filepath.Join(d.dir, "csi.sock"), "--node-id=bench",
		"--kubeconfig="+cp.Kubeconfig, "--system-namespace="+namespace, "--state-dir="+filepath.Join(d.dir, "state"),
		"--proxy-listen="+d.proxyAddr, "--proxy-url=http://"+d.proxyAddr, "--metrics-listen="+d.metricsAddr,
		"--profiling", "--unprivileged-mounts", "--allow-loopback-destinations", "--leader-elect=false")
	log, err := os.Create(filepath.Join(d.dir, "driver.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (make build first): %w", bin, err)
	}
	if err := waitListening(d.proxyAddr, d.metricsAddr); err != nil {
		b, _ := os.ReadFile(filepath.Join(d.dir, "driver.log"))
		d.stop()
		return nil, fmt.Errorf("driver: %w\n%s", err, b)
	}
	return d, nil
}

// createObjects makes the benchmark's Connectors (tool over http, tool-tls over https with
// the upstream's CA, and the two Rego ones), the RBAC that lets ServiceAccount default of ns
// get and use them through the proxy, and returns that ServiceAccount's token.
func createObjects(ctx context.Context, cp *controlplane.ControlPlane, up *upstream) (string, error) {
	kube := cp.Kube
	for _, n := range []string{namespace, ns} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return "", err
		}
	}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "tool"}, Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": toolUser, "password": toolPass}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tool-ca"}, StringData: map[string]string{"ca.crt": string(up.ca.PEM)}},
	}
	for _, s := range secrets {
		if _, err := kube.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return "", err
		}
	}
	if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicAuth", SecretType: v1alpha1.SecretTypeBasicAuth}}}}}); err != nil {
		return "", err
	}
	auth := &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "tool"}}
	for _, c := range []*v1alpha1.Connector{
		{ObjectMeta: metav1.ObjectMeta{Name: "tool", Namespace: ns}, Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench", Address: up.url, Auth: auth}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tool-tls", Namespace: ns}, Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench", Address: up.tlsURL, Auth: auth,
			CACertSecretRef: &v1alpha1.LocalSecretRef{Name: "tool-ca"}}},
	} {
		if err := cp.Client.Create(ctx, c); err != nil {
			return "", err
		}
	}
	if err := regoConnectors(ctx, cp, up.url); err != nil {
		return "", err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "bench-connectors"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors", "connectors/proxy"}, Verbs: []string{"get"}}}}); err != nil {
		return "", err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "bench-connectors"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: ns}}}); err != nil {
		return "", err
	}
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"connectors-csi"}}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// The generators measured: Alauda's Basic example, which reads only the Secret (its answer is
// kept per Secret version), and the same one made to read the request (evaluated per request).
const (
	basicGenerator = `package proxy
auth = {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}}`
	basicGeneratorPerRequest = `package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if input.request.method != "TRACE"`
)

// regoConnectors are the benchmark Connector again, their Basic credential computed by a
// generator.rego over an Opaque Secret: tool-rego with basicGenerator, tool-rego-request with
// basicGeneratorPerRequest.
func regoConnectors(ctx context.Context, cp *controlplane.ControlPlane, address string) error {
	if _, err := cp.Kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tool-rego"},
		Type: corev1.SecretTypeOpaque, StringData: map[string]string{"username": toolUser, "password": toolPass}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for name, generator := range map[string]string{"tool-rego": basicGenerator, "tool-rego-request": basicGeneratorPerRequest} {
		if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench-" + name},
			Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicRego", SecretType: "Opaque",
				Generator: &v1alpha1.RegoPolicy{Rego: generator}}}}}}); err != nil {
			return err
		}
		if err := cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench-" + name, Address: address,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicRego", SecretRef: &v1alpha1.SecretRef{Name: "tool-rego"}}}}); err != nil {
			return err
		}
	}
	return nil
}

// proxyCA is the proxy's CA certificate, which the driver keeps in the system namespace
// (made on first use: a CONNECT through the proxy makes it).
func proxyCA(ctx context.Context, cp *controlplane.ControlPlane) (*x509.CertPool, error) {
	sec, err := cp.Kube.CoreV1().Secrets(namespace).Get(ctx, ca.SecretName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data[corev1.TLSCertKey]) {
		return nil, fmt.Errorf("secret %s has no certificate", ca.SecretName)
	}
	return pool, nil
}

// waitReady sends GETs until each answers 200 (the driver's caches have the Connectors, RBAC
// has settled), at most a minute.
func waitReady(client *http.Client, urls []string, header http.Header) error {
	for _, u := range urls {
		var last string
		ok := false
		for deadline := time.Now().Add(time.Minute); !ok && time.Now().Before(deadline); {
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			for k, v := range header {
				req.Header[k] = v
			}
			res, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				ok, last = res.StatusCode == http.StatusOK, res.Status
			} else {
				last = err.Error()
			}
			if !ok {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !ok {
			return fmt.Errorf("%s never answered 200 (last: %s)", u, last)
		}
	}
	return nil
}

func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

func waitListening(addrs ...string) error {
	for _, addr := range addrs {
		up := false
		for i := 0; i < 300 && !up; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				up = true
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if !up {
			return fmt.Errorf("nothing listens on %s", addr)
		}
	}
	return nil
}
