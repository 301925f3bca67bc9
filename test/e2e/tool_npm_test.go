package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/testca"
	"github.com/kube-connectors/connectors-csi/test/verdaccio"
)

type npmUser = verdaccio.User

// npmToolsDir is where hack/tools/npm.sh installs Verdaccio and Yarn.
func npmToolsDir(t testing.TB) string {
	t.Helper()
	dir, err := verdaccio.ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// startVerdaccio runs a Verdaccio on loopback with users users (test/verdaccio), stopped when
// t ends.
func startVerdaccio(t *testing.T, users int) *verdaccio.Server {
	t.Helper()
	v, err := verdaccio.Start(t.TempDir(), users, verdaccio.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// headerTap is a transparent reverse proxy in front of a server that records the headers of
// every request, so that a test can tell what reached the server. It keeps the request's Host
// and says the scheme in X-Forwarded-Proto, so that URLs the server builds from them
// (Verdaccio's tarball URLs) lead back through the tap.
type headerTap struct {
	URL string
	CA  *testca.CA // for an https tap
	mu  sync.Mutex
	got []http.Header
}

// startHeaderTap starts a tap to target on the tools' loopback address, or, when secure, as
// https://localhost:<port> with a fresh test CA (npm checks a tunnelled server's certificate
// against a host name, never an IP address).
func startHeaderTap(t *testing.T, target string, secure bool) *headerTap {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tap := &headerTap{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.SetXForwarded()
		r.Out.Host = r.In.Host
	}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tap.mu.Lock()
		tap.got = append(tap.got, r.Header.Clone())
		tap.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	host := gitserver.Host
	if secure {
		host = "127.0.0.1" // where the tests' resolver puts localhost
	}
	lis, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = lis
	t.Cleanup(srv.Close)
	if !secure {
		srv.Start()
		tap.URL = srv.URL
		return tap
	}
	if tap.CA, err = testca.New(); err != nil {
		t.Fatal(err)
	}
	cert, err := tap.CA.ServerCert(nil, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	tap.URL = fmt.Sprintf("https://localhost:%d", lis.Addr().(*net.TCPAddr).Port)
	return tap
}

func (tap *headerTap) headers() []http.Header {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]http.Header(nil), tap.got...)
}

// npm runs the real npm client in dir with only the volume's .npmrc as its configuration (no
// global or user config of this machine, no proxy variables) and a fresh cache.
func npm(t *testing.T, dir, npmrc, cache string, args ...string) string {
	t.Helper()
	return npmWith(t, nil, dir, npmrc, cache, args...)
}

// npmWith is npm with more environment variables.
func npmWith(t *testing.T, env []string, dir, npmrc, cache string, args ...string) string {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "npmrc")
	writeFile(t, empty, "")
	cmd := exec.Command("npm", args...)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"npm_config_userconfig=" + npmrc,
		"npm_config_globalconfig=" + empty,
		"npm_config_cache=" + cache,
		"npm_config_update_notifier=false",
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// npmConnector creates an npm Connector at address with user's credential and params.
func npmConnector(t *testing.T, ns, name, class, address string, user npmUser, params map[string]string, caPEM ...[]byte) {
	t.Helper()
	createSecret(t, ns, name+"-auth", corev1.SecretTypeBasicAuth, map[string]string{"username": user.Name, "password": user.Password})
	c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: address,
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: name + "-auth"}}}}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		c.Spec.Params = append(c.Spec.Params, v1alpha1.Param{Name: k, Value: *jsonValue(params[k])})
	}
	for _, pem := range caPEM {
		createSecret(t, ns, name+"-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(pem)})
		c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: name + "-ca"}
	}
	create(t, c)
}

// npmVolume publishes a volume with the npm class's configurations for the Connectors and
// returns its files, checking that none holds a Connector's credential.
func npmVolume(t *testing.T, env *proxyEnv, ns string, connectors string, users []npmUser) (dir string, files map[string]string) {
	t.Helper()
	ctx := context.Background()
	pod := podWithVolume(t, env.kubelet, ns, "npm", map[string]string{"connectors": connectors, "configuration.names": "npmrc,yarnrc"}, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(ctx, pod, "connectors") })
	dir = env.kubelet.TargetPath(pod, "connectors")
	files = visibleFiles(t, dir)
	for name, content := range files {
		for _, u := range users {
			if strings.Contains(content, u.Password) || strings.Contains(content, basic(u.Name, u.Password)) {
				t.Errorf("the volume's %s holds a Connector's credential", name)
			}
		}
	}
	return dir, files
}

// npmPackage writes a package named name to a new directory and returns it.
func npmPackage(t *testing.T, name string) string {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "package.json"), fmt.Sprintf(`{"name": %q, "version": "1.0.0", "main": "index.js"}`, name))
	writeFile(t, filepath.Join(src, "index.js"), "module.exports = 'published through the Connectors proxy';\n")
	return src
}

// npmInstall installs pkg@1.0.0 into a new project with npmrc and checks it arrived.
func npmInstall(t *testing.T, env []string, npmrc, cache, pkg string) {
	t.Helper()
	app := t.TempDir()
	writeFile(t, filepath.Join(app, "package.json"), `{"name": "app", "version": "1.0.0", "private": true}`)
	npmWith(t, env, app, npmrc, cache, "install", pkg+"@1.0.0")
	got, err := os.ReadFile(filepath.Join(app, "node_modules", pkg, "index.js"))
	if err != nil || !bytes.Contains(got, []byte("through the Connectors proxy")) {
		t.Fatalf("npm install did not install %s from Verdaccio: %v", pkg, err)
	}
}

// checkNoTokenInLogs fails when the driver's log holds the Pod token or a Connector's password.
func checkNoTokenInLogs(t *testing.T, token string, users []npmUser) {
	t.Helper()
	if strings.Contains(logs.String(), token) {
		t.Error("the driver log holds the Pod token")
	}
	for _, u := range users {
		if strings.Contains(logs.String(), u.Password) {
			t.Error("the driver log holds a Connector's password")
		}
	}
}

// yarn runs the real Yarn (4, the .yarnrc.yml form) in dir with HOME holding only the volume's
// .yarnrc.yml (as a Pod mounts it at ~/.yarnrc.yml), fresh cache and global folders, and
// node_modules linking.
func yarn(t *testing.T, dir, yarnrc string, args ...string) string {
	t.Helper()
	main := filepath.Join(npmToolsDir(t), "@yarnpkg", "cli-dist", "bin", "yarn.js")
	if _, err := os.Stat(main); err != nil {
		t.Fatalf("Yarn is missing (%v): run hack/tools.sh", err)
	}
	home := t.TempDir()
	if err := os.Symlink(yarnrc, filepath.Join(home, ".yarnrc.yml")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", append([]string{main}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"YARN_CACHE_FOLDER=" + t.TempDir(),
		"YARN_GLOBAL_FOLDER=" + t.TempDir(),
		"YARN_ENABLE_GLOBAL_CACHE=false",
		"YARN_ENABLE_TELEMETRY=false",
		"YARN_ENABLE_IMMUTABLE_INSTALLS=false",
		"YARN_NODE_LINKER=node-modules",
		"YARN_NPM_MINIMAL_AGE_GATE=0", // the test installs what it published a moment ago
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("yarn %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestToolNpmPublishAndInstall: `npm publish` and `npm install` with only the npm class's
// rendered .npmrc and the Pod token reach a real Verdaccio through the Connectors proxy; the
// registry sees the Connector's Basic credential on every request and never the Pod token, and
// the volume holds no credential but the token.
func TestToolNpmPublishAndInstall(t *testing.T) {
	v := startVerdaccio(t, 1)
	user := v.Users[0]
	tap := startHeaderTap(t, v.URL, false)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	npmConnector(t, ns, "npm", deployedClass(t, "npm.yaml"), tap.URL, user, nil)
	allowConnectors(t, ns, "builder", "npm")
	vol, files := npmVolume(t, env, ns, "npm", v.Users)
	token := files["context.token"]
	if !strings.Contains(files[".npmrc"], "\nregistry="+tap.URL+"/\n") || !strings.Contains(files[".yarnrc.yml"], `npmRegistryServer: "`+tap.URL+`"`) {
		t.Fatalf("the rendered files do not name the registry:\n%s\n%s", files[".npmrc"], files[".yarnrc.yml"])
	}

	npmrc, cache := filepath.Join(vol, ".npmrc"), t.TempDir()
	pkg := "connectors-npm-demo-" + rand.String(5)
	npm(t, npmPackage(t, pkg), npmrc, cache, "publish")
	npmInstall(t, nil, npmrc, cache, pkg)

	// Yarn 4 with the rendered .yarnrc.yml: publish another package, add both.
	yarnrc, yarnPkg := filepath.Join(vol, ".yarnrc.yml"), pkg+"-yarn"
	src := npmPackage(t, yarnPkg)
	yarn(t, src, yarnrc, "install")
	yarn(t, src, yarnrc, "npm", "publish")
	app := t.TempDir()
	writeFile(t, filepath.Join(app, "package.json"), `{"name": "app", "version": "1.0.0", "private": true}`)
	yarn(t, app, yarnrc, "add", pkg+"@1.0.0", yarnPkg+"@1.0.0")
	for _, p := range []string{pkg, yarnPkg} {
		if _, err := os.Stat(filepath.Join(app, "node_modules", p, "index.js")); err != nil {
			t.Errorf("yarn add did not install %s: %v", p, err)
		}
	}

	// The package is there for the Connector's credential only: not for none, nor for the Pod
	// token in either scheme.
	for _, auth := range []string{user.Auth(), "", "Bearer " + token, "Basic " + basic(user.Name, token)} {
		if got, want := directGet(t, v.URL+"/"+pkg, auth), auth == user.Auth(); got != want {
			t.Errorf("Verdaccio served the package directly with Authorization %q: %v, want %v", strings.SplitN(auth, " ", 2)[0], got, want)
		}
	}
	checkRegistrySawOnlyConnectorCredential(t, tap.headers(), user.Auth(), token)
	if log := v.Log(); !strings.Contains(log, `"user":"`+user.Name+`"`) {
		t.Errorf("Verdaccio's log names no request of user %s:\n%s", user.Name, lastLines(log, 20))
	}
	checkNoTokenInLogs(t, token, v.Users)
}

// TestToolNpmMirrorAndPublishConnectors: two npm Connectors in one volume, one with
// registryType mirror and one with publish, each with its own user. npm installs from the
// mirror (the rendered registry) and publishes with --registry to the publish Connector's
// address (as Tekton's nodejs task does); each address sees only its Connector's credential.
func TestToolNpmMirrorAndPublishConnectors(t *testing.T) {
	v := startVerdaccio(t, 2)
	mirrorUser, publishUser := v.Users[0], v.Users[1]
	mirror, publish := startHeaderTap(t, v.URL, false), startHeaderTap(t, v.URL, false)
	enableMultiConnector(t)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	class := deployedClass(t, "npm.yaml")
	npmConnector(t, ns, "publish", class, publish.URL, publishUser, map[string]string{"registryType": "publish"})
	npmConnector(t, ns, "mirror", class, mirror.URL, mirrorUser, map[string]string{"registryType": "mirror", "strict-ssl": "false"})
	allowConnectors(t, ns, "builder", "publish", "mirror")
	vol, files := npmVolume(t, env, ns, "publish,mirror", v.Users)
	token := files["context.token"]
	for file, want := range map[string][]string{
		".npmrc":      {"\nregistry=" + mirror.URL + "/\n", "--registry=" + publish.URL + "/\n", "\nstrict-ssl=false\n"},
		".yarnrc.yml": {`npmRegistryServer: "` + mirror.URL + `"`, `npmPublishRegistry: "` + publish.URL + `"`, "enableStrictSsl: false"},
	} {
		for _, w := range want {
			if !strings.Contains(files[file], w) {
				t.Errorf("%s lacks %q", file, w)
			}
		}
	}

	npmrc, cache := filepath.Join(vol, ".npmrc"), t.TempDir()
	pkg := "connectors-npm-two-" + rand.String(5)
	npm(t, npmPackage(t, pkg), npmrc, cache, "publish", "--registry="+publish.URL+"/")
	npmInstall(t, nil, npmrc, cache, pkg)

	checkRegistrySawOnlyConnectorCredential(t, publish.headers(), publishUser.Auth(), token)
	checkRegistrySawOnlyConnectorCredential(t, mirror.headers(), mirrorUser.Auth(), token)
	checkNoTokenInLogs(t, token, v.Users)
}

// directGet tells whether url answers 200 to a GET with Authorization auth (none when empty).
func directGet(t *testing.T, url, auth string) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// checkRegistrySawOnlyConnectorCredential asserts that requests reached the registry, each with
// the Connector's credential and no header holding the Pod token or a proxy credential.
func checkRegistrySawOnlyConnectorCredential(t *testing.T, seen []http.Header, want, token string) {
	t.Helper()
	var proxied int
	for _, h := range seen {
		if h.Get("User-Agent") == connectorstatus.ProbeUserAgent {
			continue
		}
		proxied++
		if got := h.Get("Authorization"); got != want {
			t.Errorf("a request reached the registry with Authorization %q, want the Connector's", strings.SplitN(got, " ", 2)[0])
		}
		if h.Get("Proxy-Authorization") != "" {
			t.Error("a request reached the registry with a Proxy-Authorization header")
		}
		for name, values := range h {
			for _, v := range values {
				if strings.Contains(v, token) {
					t.Errorf("a request reached the registry with the Pod token in %s", name)
				}
			}
		}
	}
	if proxied == 0 {
		t.Fatal("no request reached the registry")
	}
}

// TestToolNpmHTTPSRegistry: with an https:// registry, npm goes through a CONNECT tunnel that
// the proxy terminates with its CA; the client trusts the volume's ca.crt through
// NODE_EXTRA_CA_CERTS (as the class documents), and the proxy trusts the registry through the
// Connector's caCertSecretRef.
func TestToolNpmHTTPSRegistry(t *testing.T) {
	v := startVerdaccio(t, 1)
	user := v.Users[0]
	tap := startHeaderTap(t, v.URL, true)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	npmConnector(t, ns, "npm", deployedClass(t, "npm.yaml"), tap.URL, user, nil, tap.CA.PEM)
	allowConnectors(t, ns, "builder", "npm")
	vol, files := npmVolume(t, env, ns, "npm", v.Users)
	token := files["context.token"]

	npmrc, cache := filepath.Join(vol, ".npmrc"), t.TempDir()
	trust := []string{"NODE_EXTRA_CA_CERTS=" + filepath.Join(vol, "ca.crt")}
	pkg := "connectors-npm-tls-" + rand.String(5)
	npmWith(t, trust, npmPackage(t, pkg), npmrc, cache, "publish")
	npmInstall(t, trust, npmrc, cache, pkg)

	checkRegistrySawOnlyConnectorCredential(t, tap.headers(), user.Auth(), token)
	checkNoTokenInLogs(t, token, v.Users)
}
