package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// proxyEnv is a driver with its proxy listening, and the kubelet stand-in for it.
type proxyEnv struct {
	driver   *runningDriver
	kubelet  *kubelet.Kubelet
	proxyURL string
}

// freeLoopbackAddr returns a loopback address that was free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// startProxyDriver starts a driver whose volumes point at its own proxy listener.
func startProxyDriver(t testing.TB, adjust func(*driver.Options)) *proxyEnv {
	t.Helper()
	addr := freeLoopbackAddr(t)
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) {
		o.ProxyListen = addr
		o.ProxyURL = "http://" + addr
		if adjust != nil {
			adjust(o)
		}
	})
	// The CSI socket is up; the proxy's listener is bound by a goroutine of its own.
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}) {
		t.Fatalf("the proxy does not listen on %s", addr)
	}
	return &proxyEnv{driver: d, kubelet: newKubelet(t, d), proxyURL: "http://" + addr}
}

// gitConnector creates a git Connector for a test server, with its credential (and CA) Secrets.
func gitConnector(t testing.TB, ns, name, class string, s *gitserver.Server) {
	t.Helper()
	createSecret(t, ns, name+"-auth", corev1.SecretTypeBasicAuth, map[string]string{"username": s.Username, "password": s.Password})
	c := &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: s.URL,
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: name + "-auth"}}},
	}
	if s.CA != nil {
		createSecret(t, ns, name+"-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(s.CA.PEM)})
		c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: name + "-ca"}
	}
	create(t, c)
}

func startGitServer(t testing.TB, secure bool) *gitserver.Server {
	t.Helper()
	s, err := gitserver.Start(t.TempDir(), secure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// envFile reads the export lines of a volume's .env, as `source .env` would.
func envFile(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			env = append(env, kv)
		}
	}
	return env
}

// cloneAndPush clones repo.git from url with env, commits, and pushes back.
func cloneAndPush(t *testing.T, url string, env []string) { pushCommit(t, url, env, nil) }

// pushCommit clones the repository at url and pushes a commit of a file of content (none: an
// empty commit).
func pushCommit(t *testing.T, url string, env []string, content []byte) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "clone")
	if out, err := gitserver.Git("", env, "clone", url+"/repo.git", dest); err != nil {
		t.Fatalf("git clone %s: %v\n%s", url, err, out)
	}
	if content != nil {
		if err := os.WriteFile(filepath.Join(dest, "file.bin"), content, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := gitserver.Git(dest, env, "add", "file.bin"); err != nil {
			t.Fatalf("git add: %v\n%s", err, out)
		}
	}
	if out, err := gitserver.Git(dest, env, "-c", "user.name=pod", "-c", "user.email=pod@example.com",
		"commit", "-q", "--allow-empty", "-m", "from the pod"); err != nil {
		t.Fatalf("git commit: %v\n%s", err, out)
	}
	if out, err := gitserver.Git(dest, env, "push", "-q", "origin", "HEAD:main"); err != nil {
		t.Fatalf("git push %s: %v\n%s", url, err, out)
	}
}

// checkToolSawOnlyConnectorCredential asserts every request that reached the tool carried the
// Connector's credential, and none carried the Pod's token or a proxy credential.
func checkToolSawOnlyConnectorCredential(t *testing.T, s *gitserver.Server, token string) {
	t.Helper()
	want := "Basic " + basic(s.Username, s.Password)
	for _, r := range s.Requests() {
		if r.Header.Get("User-Agent") == connectorstatus.ProbeUserAgent && r.Authorization != "" {
			t.Errorf("the liveness probe sent a credential")
		}
	}
	reqs := proxiedRequests(s, 0)
	if len(reqs) == 0 {
		t.Fatal("no request reached the Git server")
	}
	for _, r := range reqs {
		if r.Authorization != want {
			t.Errorf("%s %s reached the tool with Authorization %q, want the Connector's", r.Method, r.Path, r.Authorization)
		}
		if r.ProxyAuthorization != "" {
			t.Errorf("%s %s reached the tool with a Proxy-Authorization header", r.Method, r.Path)
		}
		for name, values := range r.Header {
			for _, v := range values {
				if strings.Contains(v, token) {
					t.Errorf("%s %s reached the tool with the Pod token in %s", r.Method, r.Path, name)
				}
			}
		}
	}
}

// proxiedRequests are the requests that reached s from the proxy, from the from-th on: the
// status controller's liveness probes, which may land at any time, are left out.
func proxiedRequests(s *gitserver.Server, from int) []gitserver.Request {
	var out []gitserver.Request
	for _, r := range s.Requests()[from:] {
		if r.Header.Get("User-Agent") != connectorstatus.ProbeUserAgent {
			out = append(out, r)
		}
	}
	return out
}

// TestGitThroughProxy runs the driver with the deployed RBAC only.
func TestGitThroughProxy(t *testing.T) {
	plain, secure := startGitServer(t, false), startGitServer(t, true)
	enableMultiConnector(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.LeaderElect = true })
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	gitConnector(t, ns, "plain", git, plain)
	gitConnector(t, ns, "secure", git, secure)
	allowConnectors(t, ns, "builder", "plain", "secure")
	pod := podWithVolume(t, env.kubelet, ns, "git", map[string]string{"connectors": "plain,secure", "configuration.names": "gitconfig"}, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	vol := env.kubelet.TargetPath(pod, "connectors")
	token := visibleFiles(t, vol)["context.token"]

	t.Run("reverse proxy with .gitconfig", func(t *testing.T) {
		gitconfig := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")}
		cloneAndPush(t, plain.URL, gitconfig)
		cloneAndPush(t, secure.URL, gitconfig)
	})
	t.Run("forward proxy with .env and ca.crt", func(t *testing.T) {
		forward := append(envFile(t, filepath.Join(vol, ".env")), "GIT_SSL_CAINFO="+filepath.Join(vol, "ca.crt"))
		cloneAndPush(t, plain.URL, forward)
		cloneAndPush(t, secure.URL, forward)
	})
	checkToolSawOnlyConnectorCredential(t, plain, token)
	checkToolSawOnlyConnectorCredential(t, secure, token)

	for _, s := range []*gitserver.Server{plain, secure} {
		if strings.Contains(logs.String(), s.Password) {
			t.Error("the driver log holds a Connector's password")
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the driver log holds the Pod token")
	}
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
}
