// Package benchenv sets up what the proxy benchmarks run against: a Go upstream that demands
// a credential, envtest, the benchmark Connectors with their RBAC, and the driver as a process
// of its own, whose CPU time, allocations and reviews it reads.
package benchenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy/ca"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/test/testca"
)

// Upstream is the tool: it serves 1 KiB and 1 MiB bodies (and /stall, which stops after 1 KiB
// of 2) to requests carrying its credential,
// over http and over https (a certificate for 127.0.0.2 from its own CA). As a registry of
// token auth, it serves the same bodies as /v2/team/app/blobs/1k and 1m to requests with the
// token its /token hands out for its credential, and challenges the others.
type Upstream struct {
	URL, TLSURL string
	CA          *testca.CA
}

func StartUpstream() (*Upstream, error) {
	bodies := map[string][]byte{"/1k": make([]byte, 1<<10), "/1m": make([]byte, 1<<20)}
	want := BasicCredential()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A body is read whole (net/http's server would close the connection after an
		// upload's first 256 KiB left unread).
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		path, authorized := r.URL.Path, r.Header.Get("Authorization") == want
		if path == "/token" || strings.HasPrefix(path, registryBlobs) {
			if !asRegistry(w, r) {
				return
			}
			path, authorized = "/"+strings.TrimPrefix(path, registryBlobs), true
		}
		if !authorized {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		if path == "/stall" { // a tool that stops answering mid-body, until the client leaves
			w.Header().Set("Content-Length", "2048")
			_, _ = w.Write(bodies["/1k"])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		body, ok := bodies[path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		// With its length, as artifact stores answer (registry blobs, jars, tarballs): without
		// it net/http would send the 1 MiB body chunked.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
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
	return &Upstream{URL: "http://" + plain.Addr().String(), TLSURL: "https://" + secure.Addr().String(), CA: authority}, nil
}

// registryBlobs is where the upstream serves its bodies as a registry's blobs, and
// registryToken the token its /token hands out.
const (
	registryBlobs = "/v2/team/app/blobs/"
	registryToken = "bench-registry-token"
)

// asRegistry answers /token, and challenges a request to a blob without registryToken;
// true when it is a blob's request with it, for the caller to serve.
func asRegistry(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path == "/token" {
		if r.Header.Get("Authorization") != BasicCredential() {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return false
		}
		_, _ = io.WriteString(w, `{"token":"`+registryToken+`","expires_in":3600}`)
		return false
	}
	if r.Header.Get("Authorization") != "Bearer "+registryToken {
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="bench",scope="repository:team/app:pull"`)
		http.Error(w, "token needed", http.StatusUnauthorized)
		return false
	}
	return true
}

func BasicCredential() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(ToolUser+":"+ToolPass))
}

// DriverProcess is bin/connectors-csi in the node role (the DaemonSet's process: CSI, proxy,
// Connectors API), in a process of its own so that its CPU time is its own.
type DriverProcess struct {
	ProxyAddr, MetricsAddr string
	cmd                    *exec.Cmd
	dir                    string
}

func (d *DriverProcess) PIDs() []int { return []int{d.cmd.Process.Pid} }

func (d *DriverProcess) Stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	_ = d.cmd.Wait()
	_ = os.RemoveAll(d.dir)
}

func StartDriverProcess(cp *controlplane.ControlPlane, extraArgs ...string) (*DriverProcess, error) {
	d := &DriverProcess{}
	var err error
	if d.ProxyAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	if d.MetricsAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	if d.dir, err = os.MkdirTemp("", "bench-driver-"); err != nil {
		return nil, err
	}
	bin := filepath.Join(controlplane.RepoRoot(), "bin", "connectors-csi")
	d.cmd = exec.Command(bin, "--role=node", "--endpoint=unix://"+filepath.Join(d.dir, "csi.sock"), "--node-id=bench",
		"--kubeconfig="+cp.Kubeconfig, "--system-namespace="+SystemNamespace, "--state-dir="+filepath.Join(d.dir, "state"),
		"--proxy-listen="+d.ProxyAddr, "--proxy-url=http://"+d.ProxyAddr, "--metrics-listen="+d.MetricsAddr, "--metrics-auth=none",
		"--profiling", "--unprivileged-mounts", "--allow-loopback-destinations", "--leader-elect=false")
	d.cmd.Args = append(d.cmd.Args, extraArgs...)
	log, err := os.Create(filepath.Join(d.dir, "driver.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (make build first): %w", bin, err)
	}
	if err := WaitListening(d.ProxyAddr, d.MetricsAddr); err != nil {
		b, _ := os.ReadFile(filepath.Join(d.dir, "driver.log"))
		d.Stop()
		return nil, fmt.Errorf("driver: %w\n%s", err, b)
	}
	return d, nil
}

// CreateObjects makes the benchmark's Connectors (tool over http, tool-tls over https with
// the upstream's CA, and the two Rego ones), the RBAC that lets ServiceAccount default of Namespace
// get and use them through the proxy, and returns that ServiceAccount's token.
func CreateObjects(ctx context.Context, cp *controlplane.ControlPlane, up *Upstream) (string, error) {
	kube := cp.Kube
	for _, n := range []string{SystemNamespace, Namespace} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return "", err
		}
	}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "tool"}, Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": ToolUser, "password": ToolPass}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tool-ca"}, StringData: map[string]string{"ca.crt": string(up.CA.PEM)}},
	}
	for _, s := range secrets {
		if _, err := kube.CoreV1().Secrets(Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return "", err
		}
	}
	if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicAuth", SecretType: v1alpha1.SecretTypeBasicAuth}}}}}); err != nil {
		return "", err
	}
	auth := &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "tool"}}
	for _, c := range []*v1alpha1.Connector{
		{ObjectMeta: metav1.ObjectMeta{Name: "tool", Namespace: Namespace}, Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench", Address: up.URL, Auth: auth}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tool-tls", Namespace: Namespace}, Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench", Address: up.TLSURL, Auth: auth,
			CACertSecretRef: &v1alpha1.LocalSecretRef{Name: "tool-ca"}}},
	} {
		if err := cp.Client.Create(ctx, c); err != nil {
			return "", err
		}
	}
	if err := regoConnectors(ctx, cp, up.URL); err != nil {
		return "", err
	}
	if err := extractorConnector(ctx, cp, up.URL, auth); err != nil {
		return "", err
	}
	if err := registryConnector(ctx, cp, up.URL); err != nil {
		return "", err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "bench-connectors"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors", "connectors/proxy"}, Verbs: []string{"get"}}}}); err != nil {
		return "", err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "bench-connectors"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: Namespace}}}); err != nil {
		return "", err
	}
	if _, err := kube.CoreV1().ServiceAccounts(Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	// The driver takes only the tokens of Pods on its node (--node-id=bench), as it is deployed.
	return kubelet.ProjectedToken(ctx, kube, Namespace, "client", "default", "bench", "connectors-csi")
}

// The generators measured: Alauda's Basic example, which reads only the Secret (its answer is
// kept per Secret version), and the same one made to read the request's path (kept per path),
// a header (kept per value of it) or the query (evaluated per request).
const (
	basicGenerator = `package proxy
auth = {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}}`
	// basicGeneratorByPath reads the request's path, as GitHub's and GitLab's classes do to pick
	// Basic or Bearer: its answers are kept per path.
	basicGeneratorByPath = `package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if not startswith(input.request.path, "/never/")`
	// basicGeneratorByHeader reads a header by name: its answers are kept per value of it.
	basicGeneratorByHeader = `package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if not input.request.headers["X-Never"]`
	// basicGeneratorByQuery reads the query: its answers are kept per query.
	basicGeneratorByQuery = `package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if not input.request.query["never"]`
	// basicGeneratorPerRequest reads the headers whole: it is evaluated for every request.
	basicGeneratorPerRequest = `package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if count(input.request.headers) < 100`
)

// regoConnectors are the benchmark Connector again, their Basic credential computed by a
// generator.rego over an Opaque Secret: tool-rego with basicGenerator, tool-rego-path with
// basicGeneratorByPath, tool-rego-header with basicGeneratorByHeader, tool-rego-query with
// basicGeneratorByQuery, tool-rego-request with basicGeneratorPerRequest.
func regoConnectors(ctx context.Context, cp *controlplane.ControlPlane, address string) error {
	if _, err := cp.Kube.CoreV1().Secrets(Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tool-rego"},
		Type: corev1.SecretTypeOpaque, StringData: map[string]string{"username": ToolUser, "password": ToolPass}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for name, generator := range map[string]string{"tool-rego": basicGenerator, "tool-rego-path": basicGeneratorByPath,
		"tool-rego-header": basicGeneratorByHeader, "tool-rego-query": basicGeneratorByQuery, "tool-rego-request": basicGeneratorPerRequest} {
		if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench-" + name},
			Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicRego", SecretType: "Opaque",
				Generator: &v1alpha1.RegoPolicy{Rego: generator}}}}}}); err != nil {
			return err
		}
		if err := cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench-" + name, Address: address,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicRego", SecretRef: &v1alpha1.SecretRef{Name: "tool-rego"}}}}); err != nil {
			return err
		}
	}
	return nil
}

// extractorConnector is tool-pt: the benchmark Connector again, of a class whose
// authExtractor finds the caller's token in PRIVATE-TOKEN, as GitLab's does for glab and
// GitLab's API clients.
func extractorConnector(ctx context.Context, cp *controlplane.ControlPlane, address string, auth *v1alpha1.ConnectorAuth) error {
	extractor, err := os.ReadFile(privateTokenExtractorFile)
	if err != nil {
		return err
	}
	if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench-extractor"},
		Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "basicAuth", SecretType: v1alpha1.SecretTypeBasicAuth}}},
			Proxy: &v1alpha1.ProxySpec{AuthExtractor: &v1alpha1.RegoPolicy{Rego: string(extractor)}}}}); err != nil {
		return err
	}
	return cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "tool-pt", Namespace: Namespace},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench-extractor", Address: address, Auth: auth}})
}

// registryConnector is tool-oci: the upstream as a registry of token auth (its blobs), the
// proxy fetching the token with the benchmark's credential from a registry login Secret.
func registryConnector(ctx context.Context, cp *controlplane.ControlPlane, address string) error {
	if _, err := cp.Kube.CoreV1().Secrets(Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tool-oci"},
		Type: v1alpha1.SecretTypeDistributionRegistryAuth, StringData: map[string]string{"username": ToolUser, "password": ToolPass}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := cp.Client.Create(ctx, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bench-oci"},
		Spec: v1alpha1.ConnectorClassSpec{Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "registryToken", SecretType: v1alpha1.SecretTypeDistributionRegistryAuth}}}}}); err != nil {
		return err
	}
	return cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "tool-oci", Namespace: Namespace},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "bench-oci", Address: address,
			Auth: &v1alpha1.ConnectorAuth{Name: "registryToken", SecretRef: &v1alpha1.SecretRef{Name: "tool-oci"}}}})
}

// privateTokenExtractorFile holds the extractor of tool-pt: Alauda's robust authExtractor
// example as published (its null checks included), which answers as the shipped GitLab class's
// shorter one does.
var privateTokenExtractorFile = filepath.Join(controlplane.RepoRoot(), "regoeval", "testdata", "alauda-robust-extractor.rego")

// ProxyCA is the proxy's CA certificate, which the driver keeps in the system namespace
// (made on first use: a CONNECT through the proxy makes it).
func ProxyCA(ctx context.Context, cp *controlplane.ControlPlane) (*x509.CertPool, error) {
	sec, err := cp.Kube.CoreV1().Secrets(SystemNamespace).Get(ctx, ca.SecretName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data[corev1.TLSCertKey]) {
		return nil, fmt.Errorf("secret %s has no certificate", ca.SecretName)
	}
	return pool, nil
}

// WaitReady sends GETs until each answers 200 (the driver's caches have the Connectors, RBAC
// has settled), at most a minute.
func WaitReady(client *http.Client, urls []string, header http.Header) error {
	for _, u := range urls {
		var last string
		ok := false
		for deadline := time.Now().Add(time.Minute); !ok && time.Now().Before(deadline); {
			err := Get(context.Background(), client, u, header)
			if ok, last = err == nil, "200 OK"; err != nil {
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

func FreeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

func WaitListening(addrs ...string) error {
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

// Names the benchmark objects use.
const (
	Namespace       = "bench"
	SystemNamespace = "connectors-system"
	ToolUser        = "bench-bot"
	ToolPass        = "bench-password"
)

// Env is a running benchmark setup: the upstream, envtest with the benchmark's objects, the
// driver process, and the token of ServiceAccount default of Namespace.
type Env struct {
	Up     *Upstream
	CP     *controlplane.ControlPlane
	Driver *DriverProcess
	Token  string
}

// Start starts the whole setup, the driver with driverArgs added; Stop ends it.
func Start(ctx context.Context, driverArgs ...string) (*Env, error) {
	up, err := StartUpstream()
	if err != nil {
		return nil, err
	}
	cp, err := controlplane.Start()
	if err != nil {
		return nil, err
	}
	e := &Env{Up: up, CP: cp}
	if e.Token, err = CreateObjects(ctx, cp, up); err != nil {
		e.Stop()
		return nil, err
	}
	if e.Driver, err = StartDriverProcess(cp, driverArgs...); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Stop stops the driver and envtest.
func (e *Env) Stop() {
	if e.Driver != nil {
		e.Driver.Stop()
	}
	e.CP.Stop()
}

// Get sends one GET with the headers and reads the answer whole; an answer other than 200 is an
// error.
func Get(ctx context.Context, c *http.Client, u string, h http.Header) error {
	return Send(ctx, c, u, h, nil)
}

// UploadType is the media type of the bodies the benchmarks POST, as a registry's blob upload.
const UploadType = "application/octet-stream"

// Send is Get, or a POST of body (of UploadType unless h says otherwise) when it is not nil:
// chunked when h says Transfer-Encoding: chunked.
func Send(ctx context.Context, c *http.Client, u string, h http.Header, body []byte) error {
	method, reader := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, reader = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, reader)
	if err != nil {
		return err
	}
	if body != nil {
		// As git's and a registry's uploads are typed: a POST without a type, or a form's,
		// may carry a _method override, which the proxy leaves to its full path.
		req.Header.Set("Content-Type", UploadType)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if host := h.Get("Host"); host != "" { // net/http sends req.Host, not a Host header
		req.Host = host
	}
	if h.Get("Transfer-Encoding") == "chunked" { // nor a Transfer-Encoding header
		req.TransferEncoding, req.ContentLength = []string{"chunked"}, -1
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	return err
}
