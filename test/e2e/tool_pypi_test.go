package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/connectorstatus"
)

// The pypi class's clients: Debian's python3 (with pip, setuptools and wheel) and twine, which
// hack/tools/pypi.sh installs. A python3 that PATH finds first (pyenv) is not used: its
// packages are not the ones the script installs.
const (
	pypiPython = "/usr/bin/python3"
	pypiTwine  = "/usr/bin/twine"
	pypiNginx  = "/usr/sbin/nginx"
)

// TestToolPypiPipAndTwine drives pip (install, download) and twine (upload) with only the
// pipconf and pypirc volumes of the pypi class, mounted as its documentation's Pod does,
// through the reverse proxy to a PEP 503 index that Debian's nginx serves behind Basic auth.
// Uploads go to a stand-in for the legacy upload API (the form POST twine sends) behind the same
// nginx, which stores the file in the index, so that pip then installs what twine uploaded.
func TestToolPypiPipAndTwine(t *testing.T) {
	pypiRequireTools(t)
	index := startPypiIndex(t)
	hello := pypiWheel(t, "connectors-hello", "1.0")
	index.addWithPage(t, "connectors-hello", "1.0", hello)

	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	class := deployedClass(t, "pypi.yaml")
	createSecret(t, ns, "pypi-auth", corev1.SecretTypeBasicAuth, map[string]string{"username": index.username, "password": index.password})
	newConnectorWithSecret(t, ns, "pypi", class, index.url, "basicAuth", "pypi-auth")
	allowConnectors(t, ns, "builder", "pypi")
	// The documentation's Pod: one volume per configuration, the deprecated connector.name form.
	pod := podOf(t, env.kubelet, ns, "pip", "builder",
		map[string]string{"connector.name": "pypi", "configuration.names": "pipconf"}, nil, pypiSecondVolume("pypirc"))
	vols := map[string]map[string]string{}
	for _, v := range []string{"connectors", "pypirc"} {
		if err := env.kubelet.Publish(ctx, pod, v); err != nil {
			t.Fatalf("publish %s: %v", v, err)
		}
		t.Cleanup(func() { // also when a check below stops the test: the mount must not outlive it
			if err := env.kubelet.Unpublish(ctx, pod, v); err != nil {
				t.Errorf("unpublish %s: %v", v, err)
			}
		})
		vols[v] = visibleFiles(t, env.kubelet.TargetPath(pod, v))
	}
	pipConf := filepath.Join(env.kubelet.TargetPath(pod, "connectors"), "pip.conf")
	pypirc := filepath.Join(env.kubelet.TargetPath(pod, "pypirc"), ".pypirc")
	token := vols["connectors"]["context.token"]
	if token == "" {
		t.Fatal("the volume has no context.token")
	}
	for v, files := range vols {
		pypiCheckNoCredential(t, v, files, index)
	}

	t.Run("pip install", func(t *testing.T) {
		target := t.TempDir()
		pypiRun(t, pypiConfig(t, pipConf), pypiPython, "-m", "pip", "install", "--no-cache-dir", "--no-deps", "--target", target, "connectors-hello==1.0")
		out := pypiRun(t, pypiConfig(t, ""), pypiPython, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import connectors_hello; print(connectors_hello.GREETING)", target)
		if !strings.Contains(out, "connectors-hello 1.0") {
			t.Errorf("the installed package says %q", out)
		}
	})
	t.Run("pip download", func(t *testing.T) {
		dest := t.TempDir()
		pypiRun(t, pypiConfig(t, pipConf), pypiPython, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "-d", dest, "connectors-hello")
		got, err := os.ReadFile(filepath.Join(dest, filepath.Base(hello)))
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := os.ReadFile(hello); !bytes.Equal(got, want) {
			t.Error("pip download got other bytes than the index holds")
		}
	})
	t.Run("twine upload, then pip install", func(t *testing.T) {
		wheel := pypiWheel(t, "connectors-upload", "2.0")
		pypiRun(t, pypiConfig(t, ""), pypiTwine, "upload", "--non-interactive", "--disable-progress-bar",
			"--config-file", pypirc, "--repository", "connectors-pypi", wheel)
		if n := index.uploads.count(); n != 1 {
			t.Fatalf("the upload API stored %d files, want 1", n)
		}
		target := t.TempDir()
		pypiRun(t, pypiConfig(t, pipConf), pypiPython, "-m", "pip", "install", "--no-cache-dir", "--no-deps", "--target", target, "connectors-upload==2.0")
		if _, err := os.Stat(filepath.Join(target, "connectors_upload.py")); err != nil {
			t.Errorf("the uploaded package did not install: %v", err)
		}
	})

	t.Run("the documented Jobs: ~/.pip/pip.conf and ~/.pypirc", func(t *testing.T) {
		// The documentation's Jobs mount the files with subPath as ~/.pip/pip.conf and
		// ~/.pypirc and run its commands unchanged; links stand in for those bind mounts.
		home := t.TempDir()
		if err := os.Mkdir(filepath.Join(home, ".pip"), 0o755); err != nil {
			t.Fatal(err)
		}
		for link, file := range map[string]string{".pip/pip.conf": pipConf, ".pypirc": pypirc} {
			if err := os.Symlink(file, filepath.Join(home, link)); err != nil {
				t.Fatal(err)
			}
		}
		env := pypiEnv(t, home)
		dist := filepath.Dir(pypiWheel(t, "connectors-documented", "1.0"))
		pypiRun(t, env, pypiPython, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
			"--repository", "connectors-pypi", filepath.Join(dist, "*"))
		target := t.TempDir()
		pypiRun(t, env, pypiPython, "-m", "pip", "install", "--no-cache-dir", "--target", target, "--upgrade", "connectors-documented", "--no-deps")
		if _, err := os.Stat(filepath.Join(target, "connectors_documented.py")); err != nil {
			t.Errorf("the uploaded package did not install: %v", err)
		}
	})
	t.Run("without the Pod token the proxy refuses", func(t *testing.T) {
		b, err := os.ReadFile(pipConf)
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(t.TempDir(), "pip.conf")
		if err := os.WriteFile(conf, []byte(strings.ReplaceAll(string(b), token, "not-a-token")), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pypiPython, "-m", "pip", "download", "-vv", "--no-cache-dir", "--no-deps", "-d", t.TempDir(), "connectors-hello")
		cmd.Env = pypiConfig(t, conf)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "401 Client Error") {
			t.Errorf("pip without the Pod token: %v, want a 401 from the proxy\n%s", err, lastLines(string(out), 20))
		}
	})
	t.Run("status probes the simple index", func(t *testing.T) {
		waitCondition(t, ns, "pypi", "LivenessReady", metav1.ConditionTrue, "Reachable")
		waitCondition(t, ns, "pypi", "AuthReady", metav1.ConditionTrue, "Accepted")
		createSecret(t, ns, "pypi-wrong", corev1.SecretTypeBasicAuth, map[string]string{"username": index.username, "password": "wrong"})
		newConnectorWithSecret(t, ns, "pypi-wrong", class, index.url, "basicAuth", "pypi-wrong")
		waitCondition(t, ns, "pypi-wrong", "AuthReady", metav1.ConditionFalse, "Rejected")
	})

	index.checkSawOnlyConnectorCredential(t, token)
	if strings.Contains(logs.String(), index.password) {
		t.Error("the driver log holds the Connector's password")
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the driver log holds the Pod token")
	}
}

// TestToolPypiRendersTheDocumentedFiles checks the rendered pip.conf and .pypirc against the
// documented shape: the proxy address with /simple/ as the index, the proxy host trusted, and
// twine's repository connectors-pypi at the proxy address, user <namespace>-<connector>, the
// Pod token as the password.
func TestToolPypiRendersTheDocumentedFiles(t *testing.T) {
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	class := deployedClass(t, "pypi.yaml")
	newConnector(t, ns, "pypi", class, "https://pypi.example.com/repository/pypi/")
	newConnector(t, ns, "mirror", class, "https://mirror.example.com")
	allowConnectors(t, ns, "builder", "pypi", "mirror")
	proxyHost := strings.TrimPrefix(env.proxyURL, "http://")
	pypi := fmt.Sprintf("%s/namespaces/%s/connectors/pypi", proxyHost, ns)
	mirror := fmt.Sprintf("%s/namespaces/%s/connectors/mirror", proxyHost, ns)

	t.Run("one Connector", func(t *testing.T) {
		files, token := pypiRender(t, env, ns, "one", "pypi")
		pypiCompare(t, files, token, map[string]string{
			"pip.conf": fmt.Sprintf("[global]\nindex-url = http://%s-pypi:%s@%s/simple/\ntimeout = 30\n\n[install]\ntrusted-host = %s\n",
				ns, token, pypi, proxyHost),
			".pypirc": fmt.Sprintf("[distutils]\nindex-servers = connectors-pypi\n\n[connectors-pypi]\nrepository = http://%s/\nusername = %s-pypi\npassword = %s\n",
				pypi, ns, token),
		})
	})
	t.Run("more Connectors: extra indexes and repositories", func(t *testing.T) {
		enableMultiConnector(t)
		files, token := pypiRender(t, env, ns, "two", "pypi,mirror")
		pypiCompare(t, files, token, map[string]string{
			"pip.conf": fmt.Sprintf("[global]\nindex-url = http://%[1]s-pypi:%[2]s@%[3]s/simple/\nextra-index-url = http://%[1]s-mirror:%[2]s@%[4]s/simple/\n"+
				"timeout = 30\n\n[install]\ntrusted-host = %[5]s\n", ns, token, pypi, mirror, proxyHost),
			".pypirc": fmt.Sprintf("[distutils]\nindex-servers = connectors-pypi connectors-pypi-%[1]s-mirror\n\n"+
				"[connectors-pypi]\nrepository = http://%[3]s/\nusername = %[1]s-pypi\npassword = %[2]s\n\n"+
				"[connectors-pypi-%[1]s-mirror]\nrepository = http://%[4]s/\nusername = %[1]s-mirror\npassword = %[2]s\n", ns, token, pypi, mirror),
		})
	})
}

// pypiRender publishes a volume of the pypi configurations for the Connectors and returns its
// files and the Pod token in it.
func pypiRender(t *testing.T, env *proxyEnv, ns, pod, connectors string) (map[string]string, string) {
	t.Helper()
	p := podWithVolume(t, env.kubelet, ns, pod, map[string]string{"connectors": connectors, "configuration.names": "pipconf,pypirc"}, nil)
	ctx := context.Background()
	if err := env.kubelet.Publish(ctx, p, "connectors"); err != nil {
		t.Fatal(err)
	}
	files := visibleFiles(t, env.kubelet.TargetPath(p, "connectors"))
	if err := env.kubelet.Unpublish(ctx, p, "connectors"); err != nil {
		t.Fatal(err)
	}
	return files, files["context.token"]
}

// pypiCompare compares rendered files with the wanted text, keeping the token out of the output.
func pypiCompare(t *testing.T, files map[string]string, token string, want map[string]string) {
	t.Helper()
	for name, w := range want {
		if got := files[name]; got != w {
			t.Errorf("%s:\n%s\nwant:\n%s", name, redactToken(got, token), redactToken(w, token))
		}
	}
}

// redactToken keeps a token out of test output.
func redactToken(s, token string) string { return strings.ReplaceAll(s, token, "<token>") }

// pypiRequireTools fails the test, naming the install script, when a client or server is missing.
func pypiRequireTools(t *testing.T) {
	t.Helper()
	for _, check := range [][]string{
		{pypiPython, "-m", "pip", "--version"},
		{pypiPython, "-c", "import setuptools, wheel"},
		{pypiTwine, "--version"},
		{pypiNginx, "-v"},
	} {
		if out, err := exec.Command(check[0], check[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s\nrun hack/tools.sh (hack/tools/pypi.sh) to install the pypi class's tools", strings.Join(check, " "), err, out)
		}
	}
}

// pypiSecondVolume adds a volume of the same Connector with one configuration, as the
// documentation mounts pip.conf and .pypirc.
func pypiSecondVolume(configuration string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		v := p.Spec.Volumes[0].DeepCopy()
		v.Name = configuration
		v.CSI.VolumeAttributes = map[string]string{"connector.name": v.CSI.VolumeAttributes["connector.name"], "configuration.names": configuration}
		p.Spec.Volumes = append(p.Spec.Volumes, *v)
	}
}

// pypiEnv is a clean environment for python, pip and twine: no PIP_* or proxy variable of the
// machine, no keyring, HOME home (a new directory if ""), and the variables in extra (pip's
// PIP_CONFIG_FILE, or PIP_NO_INDEX where no index may be asked).
func pypiEnv(t *testing.T, home string, extra ...string) []string {
	if home == "" {
		home = t.TempDir()
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "LANG=C.UTF-8",
		"PIP_NO_INPUT=1", "PIP_DISABLE_PIP_VERSION_CHECK=1", "PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring"}
	return append(env, extra...)
}

// pypiConfig is pypiEnv with pip reading pipConf (if "", no index at all).
func pypiConfig(t *testing.T, pipConf string) []string {
	if pipConf == "" {
		return pypiEnv(t, "", "PIP_NO_INDEX=1")
	}
	return pypiEnv(t, "", "PIP_CONFIG_FILE="+pipConf)
}

// pypiRun runs a client in env and returns its output.
func pypiRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pypiWheel builds a one-module pure-Python project into a wheel with pip (setuptools, no build
// isolation, no index) and returns the wheel's path.
func pypiWheel(t *testing.T, project, version string) string {
	t.Helper()
	module := strings.ReplaceAll(project, "-", "_")
	src := t.TempDir()
	files := map[string]string{
		"setup.py":     fmt.Sprintf("from setuptools import setup\nsetup(name=%q, version=%q, py_modules=[%q])\n", project, version, module),
		module + ".py": fmt.Sprintf("GREETING = %q\n", "hello from "+project+" "+version),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dist := t.TempDir()
	pypiRun(t, pypiConfig(t, ""), pypiPython, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", dist, src)
	wheel := filepath.Join(dist, fmt.Sprintf("%s-%s-py3-none-any.whl", module, version))
	if _, err := os.Stat(wheel); err != nil {
		t.Fatalf("pip wheel built no %s: %v", filepath.Base(wheel), err)
	}
	return wheel
}

// pypiIndex is a PEP 503 index laid out as a Nexus PyPI repository: the address
// http://<loopback>/repository/pypi, the index under <address>/simple/ — Debian's nginx, with
// autoindex over <root>/simple/<project>/ or a project's own page linking to
// ../../packages/<project>/<version>/<file>#sha256=… as Nexus writes them — behind Basic auth,
// logging every request's credentials; POST <address>/ goes to the upload stand-in.
type pypiIndex struct {
	url                string
	root               string // what nginx serves under /repository/pypi/
	username, password string
	accessLog          string
	uploads            *pypiUploads
}

// pypiLogFormat is one request a line, tab-separated, for checkSawOnlyConnectorCredential.
const pypiLogFormat = "$request_method\\t$request_uri\\t$status\\t$http_user_agent\\t$http_authorization\\t$http_proxy_authorization"

const pypiNginxConf = `daemon off;
master_process off;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections 64; }
http {
  default_type application/octet-stream;
  log_format pypi "` + pypiLogFormat + `";
  access_log {{dir}}/access.log pypi;
  client_body_temp_path {{dir}}/tmp/body;
  proxy_temp_path {{dir}}/tmp/proxy;
  fastcgi_temp_path {{dir}}/tmp/fastcgi;
  uwsgi_temp_path {{dir}}/tmp/uwsgi;
  scgi_temp_path {{dir}}/tmp/scgi;
  client_max_body_size 16m;
  server {
    listen {{listen}};
    absolute_redirect off;
    auth_basic "pypi";
    auth_basic_user_file {{dir}}/htpasswd;
    location /repository/pypi/simple/ { alias {{dir}}/www/simple/; autoindex on; }
    location /repository/pypi/packages/ { alias {{dir}}/www/packages/; }
    location = /repository/pypi/ { limit_except POST { deny all; } proxy_pass {{upload}}; }
  }
}
`

// pypiCheckAgent marks startPypiIndex's request without a credential in the access log.
const pypiCheckAgent = "connectors-csi-test-unauthenticated"

// startPypiIndex starts nginx and the upload stand-in on loopback; both stop with the test.
func startPypiIndex(t *testing.T) *pypiIndex {
	t.Helper()
	dir := t.TempDir()
	ix := &pypiIndex{root: filepath.Join(dir, "www"), username: "uploader", password: "pypi-" + rand.String(16),
		accessLog: filepath.Join(dir, "access.log")}
	ix.uploads = &pypiUploads{index: ix}
	up := httptest.NewServer(ix.uploads)
	t.Cleanup(up.Close)
	for _, d := range []string{"tmp", "www/simple"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	listen := freeLoopbackAddr(t)
	conf := strings.NewReplacer("{{dir}}", dir, "{{listen}}", listen, "{{upload}}", up.URL).Replace(pypiNginxConf)
	for name, body := range map[string]string{
		"nginx.conf": conf,
		"htpasswd":   ix.username + ":{PLAIN}" + ix.password + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(pypiNginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	ix.url = "http://" + listen + "/repository/pypi"
	pypiWaitListening(t, listen, exited, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return stderr.String() + string(b)
	})
	// Without the credential nginx refuses: what reaches the index below was let in by it.
	req, err := http.NewRequest(http.MethodGet, ix.url+"/simple/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", pypiCheckAgent)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the index answered %d without a credential, want 401", res.StatusCode)
	}
	return ix
}

// pypiWaitListening waits until nginx accepts connections, or fails with its output if it exits.
func pypiWaitListening(t *testing.T, addr string, exited <-chan error, output func() string) {
	t.Helper()
	for {
		select {
		case err := <-exited:
			t.Fatalf("nginx exited: %v\n%s", err, output())
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addWithPage puts a distribution file under packages/ and writes its project's page as
// Nexus does: a link that leaves simple/ (../../packages/…) with the file's sha256, which pip
// resolves against the proxy address and checks.
func (ix *pypiIndex) addWithPage(t testing.TB, project, version, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	name, base := pypiNormalize(project), filepath.Base(file)
	sum := sha256.Sum256(b)
	page := fmt.Sprintf("<!DOCTYPE html>\n<html><body>\n<a href=\"../../packages/%s/%s/%s#sha256=%s\">%s</a>\n</body></html>\n",
		name, version, base, hex.EncodeToString(sum[:]), base)
	for path, content := range map[string][]byte{
		filepath.Join("packages", name, version, base): b,
		filepath.Join("simple", name, "index.html"):    []byte(page),
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(ix.root, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ix.root, path), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var pypiNameSeparators = regexp.MustCompile(`[-_.]+`)

// pypiNormalize is a project's name as PEP 503 normalizes it.
func pypiNormalize(project string) string {
	return strings.ToLower(pypiNameSeparators.ReplaceAllString(project, "-"))
}

// store writes an uploaded file as <root>/simple/<normalized project>/<file>, for autoindex.
func (ix *pypiIndex) store(project, file string, content []byte) error {
	dir := filepath.Join(ix.root, "simple", pypiNormalize(project))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, filepath.Base(file)), content, 0o644)
}

// checkSawOnlyConnectorCredential asserts that pip's and twine's requests reached nginx (and
// the uploads the stand-in) with the Connector's Basic credential and never the Pod token.
func (ix *pypiIndex) checkSawOnlyConnectorCredential(t *testing.T, token string) {
	t.Helper()
	b, err := os.ReadFile(ix.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	want := "Basic " + basic(ix.username, ix.password)
	seen := map[string]bool{} // "<method> <pypiArea>" of successful requests
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			t.Fatalf("access log line %q has %d fields", line, len(f))
		}
		if strings.Contains(line, token) {
			t.Errorf("%s %s reached the index with the Pod token", f[0], f[1])
		}
		if f[3] == connectorstatus.ProbeUserAgent || f[3] == pypiCheckAgent {
			continue // the status controller's probes; startPypiIndex's check
		}
		if f[4] != want {
			t.Errorf("%s %s (%s, User-Agent %q) reached the index with Authorization %q, want the Connector's", f[0], f[1], f[2], f[3], f[4])
		}
		if f[5] != "-" {
			t.Errorf("%s %s reached the index with a Proxy-Authorization header", f[0], f[1])
		}
		if f[2] == "200" {
			seen[f[0]+" "+pypiArea(f[1])] = true
		}
	}
	for _, want := range []string{"GET simple", "GET packages", "POST upload"} {
		if !seen[want] {
			t.Errorf("no %s reached the index through the proxy; it saw %v", want, seen)
		}
	}
	ix.uploads.checkNoToken(t, token)
}

// pypiArea names the part of the index a path is in: simple (pages and autoindexed files),
// packages (files by Nexus-style links), upload (the repository's root).
func pypiArea(path string) string {
	rest := strings.TrimPrefix(path, "/repository/pypi/")
	if rest == "" {
		return "upload"
	}
	area, _, _ := strings.Cut(rest, "/")
	return area
}

// pypiUploads stands in for the legacy upload API (PyPI's and Nexus's `POST /` with a
// multipart form, :action=file_upload, the file in content and its sha256_digest). It accepts
// only Basic with the index's credential and stores the file in the index.
type pypiUploads struct {
	index   *pypiIndex
	mu      sync.Mutex
	stored  int
	headers []http.Header
}

func (u *pypiUploads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.headers = append(u.headers, r.Header.Clone())
	u.mu.Unlock()
	if user, pass, ok := r.BasicAuth(); !ok || user != u.index.username || pass != u.index.password {
		w.Header().Set("WWW-Authenticate", `Basic realm="pypi"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if err := u.upload(r); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintln(w, "OK")
}

// upload checks the form as PyPI does (action, name, version, digest) and stores the file.
func (u *pypiUploads) upload(r *http.Request) error {
	if r.Method != http.MethodPost {
		return fmt.Errorf("method %s", r.Method)
	}
	if err := r.ParseMultipartForm(16 << 20); err != nil {
		return err
	}
	if a := r.FormValue(":action"); a != "file_upload" {
		return fmt.Errorf(":action %q, want file_upload", a)
	}
	name, version := r.FormValue("name"), r.FormValue("version")
	if name == "" || version == "" {
		return fmt.Errorf("name and version are required")
	}
	f, hdr, err := r.FormFile("content")
	if err != nil {
		return err
	}
	defer f.Close()
	content, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(content)
	if got := r.FormValue("sha256_digest"); got != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("sha256_digest %q does not match the content", got)
	}
	if err := u.index.store(name, hdr.Filename, content); err != nil {
		return err
	}
	u.mu.Lock()
	u.stored++
	u.mu.Unlock()
	return nil
}

func (u *pypiUploads) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.stored
}

// checkNoToken asserts that no header of any upload request held the Pod token.
func (u *pypiUploads) checkNoToken(t *testing.T, token string) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, h := range u.headers {
		for name, values := range h {
			for _, v := range values {
				if strings.Contains(v, token) {
					t.Errorf("an upload reached the stand-in with the Pod token in %s", name)
				}
			}
		}
	}
}

// pypiCheckNoCredential asserts that a volume holds neither the Connector's password nor its
// Basic credential.
func pypiCheckNoCredential(t *testing.T, volume string, files map[string]string, ix *pypiIndex) {
	t.Helper()
	for name, body := range files {
		if strings.Contains(body, ix.password) || strings.Contains(body, basic(ix.username, ix.password)) {
			t.Errorf("volume %s: %s holds the Connector's credential", volume, name)
		}
	}
}
