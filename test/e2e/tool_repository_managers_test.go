package e2e

import (
	"context"
	"encoding/xml"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/test/mavenrepo"
)

// TestToolRepositoryManagersStandIn renders every configuration of the nexus and jfrog classes
// with the documented params, and sends, with only what each rendered file says (URL, proxy,
// token), one request the way its client would, through the proxy, to a stand-in that accepts
// only HTTP Basic with the Connector's user and password (both products' scheme for a user's
// password or token) and answers 401 to anything else. No real Nexus or Artifactory runs here:
// the clients themselves are proven by TestToolMaven and the npm and pypi tests.
func TestToolRepositoryManagersStandIn(t *testing.T) {
	env := startProxyDriver(t, func(o *driver.Options) { o.ForwardPassthrough = proxy.PassthroughNone })
	for _, tc := range []struct {
		file                          string
		npmParam                      string
		maven, npm, pypiGet, pypiPost string
	}{
		{"nexus.yaml", "registry", "/repository/maven-public", "/repository/npm-proxy/", "/repository/pypi-proxy/simple/", "/repository/pypi-hosted/"},
		{"jfrog.yaml", "repository", "/artifactory/maven-public", "/artifactory/api/npm/npm-proxy/", "/artifactory/api/pypi/pypi-proxy/simple/", "/artifactory/api/pypi/pypi-hosted/"},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			user, pass := "ci-bot", "s3cret-"+strings.TrimSuffix(tc.file, ".yaml")
			want := "Basic " + basic(user, pass)
			rec := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != want {
					w.Header().Set("WWW-Authenticate", `Basic realm="repository"`)
					w.WriteHeader(http.StatusUnauthorized)
				}
			})
			ns := newNamespace(t)
			class := deployedClass(t, tc.file)
			createSecret(t, ns, "auth", corev1.SecretTypeBasicAuth, map[string]string{"username": user, "password": pass})
			create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "repo", Namespace: ns},
				Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: rec.URL,
					Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "auth"}}}})
			allowConnectors(t, ns, "builder", "repo")
			pod := podWithVolume(t, env.kubelet, ns, "build", map[string]string{
				"connector.name":      "repo",
				"configuration.names": "settings,npmrc,yarnrc,pipconf,pypirc",
				"configuration.params": `{"settings": {"mirrorRepository": "maven-public"}, "npmrc": {"` + tc.npmParam + `": "npm-proxy"},` +
					`"yarnrc": {"` + tc.npmParam + `": "npm-proxy", "strictSSL": "false"}, "pipconf": {"repository": "pypi-proxy"},` +
					`"pypirc": {"deployRepository": "pypi-hosted"}}`,
			}, nil)
			if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
			files := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))
			token := files["context.token"]
			for name, data := range files {
				if strings.Contains(data, pass) {
					t.Errorf("the volume's %s holds the Connector's password", name)
				}
			}
			rev := env.proxyURL + "/namespaces/" + ns + "/connectors/repo"
			mirror := mavenMirrorThroughProxy(t, files["settings.xml"], rec.URL+tc.maven)
			npmRegistry, npmToken := npmrcRegistry(t, files[".npmrc"])
			npm := throughProxy(t, ".npmrc", files[".npmrc"], token, iniValue(t, files[".npmrc"], "proxy"), iniValue(t, files[".npmrc"], "https-proxy"))
			yarn := throughProxy(t, ".yarnrc.yml", files[".yarnrc.yml"], token,
				yamlValue(t, files[".yarnrc.yml"], "httpProxy"), yamlValue(t, files[".yarnrc.yml"], "httpsProxy"))
			if regexp.MustCompile(`(?m)^\s*npmAuthToken:`).MatchString(files[".yarnrc.yml"]) {
				t.Errorf(".yarnrc.yml has an npmAuthToken")
			}
			yarnRegistry := yamlValue(t, files[".yarnrc.yml"], "npmRegistryServer")
			pipIndex := iniValue(t, files["pip.conf"], "index-url")
			pypiRepo := iniValue(t, files[".pypirc"], "repository")
			for _, c := range []struct{ got, want string }{
				{npmRegistry, rec.URL + tc.npm}, {yarnRegistry, rec.URL + tc.npm}, {pypiRepo, rev + tc.pypiPost}, {npmToken, placeholder},
				{yamlValue(t, files[".yarnrc.yml"], "enableStrictSsl"), "false"},
			} {
				if c.got != c.want {
					t.Errorf("rendered %q, want %q", c.got, c.want)
				}
			}
			u, err := url.Parse(pipIndex)
			if err != nil {
				t.Fatalf("pip.conf index-url: %v", err)
			}
			pipPass, _ := u.User.Password()
			if u.User.Username() != ns+"/repo" || pipPass != token {
				t.Errorf("pip.conf index-url %s, want user %s/repo and the Pod token as password", u.Redacted(), ns)
			}
			plain := *u
			plain.User = nil
			if plain.String() != rev+tc.pypiGet {
				t.Errorf("pip.conf index-url %s, want %s", plain.String(), rev+tc.pypiGet)
			}
			// Each client's request, built from its file only.
			expectOK(t, mirror, http.MethodGet, rec.URL+tc.maven+"/com/example/a/1.0/a-1.0.pom", "")
			expectOK(t, npm, http.MethodGet, npmRegistry+"left-pad", "Bearer "+npmToken)
			expectOK(t, yarn, http.MethodGet, yarnRegistry+"left-pad", "Basic "+basic("connectors", "proxy-injects-the-credential"))
			expectOK(t, http.DefaultClient, http.MethodGet, pipIndex+"requests/", "")
			expectOK(t, http.DefaultClient, http.MethodPost, pypiRepo,
				"Basic "+basic(iniValue(t, files[".pypirc"], "username"), iniValue(t, files[".pypirc"], "password")))
			reqs := rec.proxied()
			if len(reqs) != 5 {
				t.Errorf("the stand-in saw %d requests, want 5", len(reqs))
			}
			for _, r := range reqs {
				if r.Authorization != want || r.ProxyAuthorization != "" || strings.Contains(r.RequestURI, token) {
					t.Errorf("%s %s reached the stand-in with Authorization %q, want only the Connector's Basic", r.Method, r.RequestURI, r.Authorization)
				}
			}
		})
	}
}

// TestToolRepositoryManagersMaven runs Debian's mvn with the settings.xml of the nexus and
// jfrog classes (mirrorRepository set) against a real Maven repository at the path each product
// serves one under (nginx WebDAV behind Basic auth, a Connector at the server's root): the
// mirror goes through the forward proxy of <proxies>, as documented, and fetches a jar that is
// in the repository, and mvn's plugins, with the Connector's credential only.
func TestToolRepositoryManagersMaven(t *testing.T) {
	mvn := requireMaven(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.ForwardPassthrough = proxy.PassthroughNone })
	for _, tc := range []struct{ file, path string }{
		{"nexus.yaml", "/repository/maven-public"},
		{"jfrog.yaml", "/artifactory/maven-public"},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			repo, err := mavenrepo.StartAt(t.TempDir(), tc.path, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(repo.Close)
			jar := filepath.Join(repo.Root, "com/example/lib/2.0/lib-2.0.jar")
			if err := os.MkdirAll(filepath.Dir(jar), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(jar, []byte("in "+tc.path), 0o644); err != nil {
				t.Fatal(err)
			}
			m := mavenVolume(t, env, repo, mavenConnector{class: tc.file, address: strings.TrimSuffix(repo.URL, tc.path),
				configurationParams: `{"settings": {"mirrorRepository": "maven-public"}}`})
			m.mvn = mvn
			local := m.run(t, mavenDependencyPlugin+":get", "-Dartifact=com.example:lib:2.0", "-Dtransitive=false")
			if got, err := os.ReadFile(filepath.Join(local, "com/example/lib/2.0/lib-2.0.jar")); err != nil || string(got) != "in "+tc.path {
				t.Fatalf("the local repository holds %q (%v), want the repository's jar", got, err)
			}
			checkMavenRepoRequests(t, repo, m.token, "GET /lib-2.0.jar")
		})
	}
}

// mavenMirrorThroughProxy checks settings.xml's mirror and returns a client that uses its
// <proxy> (the forward proxy) the way Maven's wagon does.
func mavenMirrorThroughProxy(t *testing.T, settingsXML, wantMirror string) *http.Client {
	t.Helper()
	var s struct {
		Mirrors []struct {
			URL      string `xml:"url"`
			MirrorOf string `xml:"mirrorOf"`
		} `xml:"mirrors>mirror"`
	}
	if err := xml.Unmarshal([]byte(settingsXML), &s); err != nil {
		t.Fatalf("settings.xml: %v\n%s", err, settingsXML)
	}
	if len(s.Mirrors) != 1 || s.Mirrors[0].URL != wantMirror || s.Mirrors[0].MirrorOf != "*" {
		t.Errorf("settings.xml mirrors %+v, want one of * at %s", s.Mirrors, wantMirror)
	}
	host := xmlElement(t, settingsXML, "host")
	proxyURL := &url.URL{Scheme: "http", Host: host + ":" + xmlElement(t, settingsXML, "port"),
		User: url.UserPassword(xmlElement(t, settingsXML, "username"), xmlElement(t, settingsXML, "password"))}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
}

// placeholder is the credential the npm clients' files hold for the proxy to replace.
const placeholder = "connectors-proxy-injects-the-credential"

// throughProxy checks that a client's file (name, its text doc) holds the Pod token only in the
// URLs of its proxies, both the forward proxy (npm and Yarn send an npm auth token with every
// request of the registry, npm 6 and Yarn also to a tarball URL on another host), and returns
// a client that uses them as the client does.
func throughProxy(t *testing.T, name, doc, token, httpProxy, httpsProxy string) *http.Client {
	t.Helper()
	proxyURL, err := url.Parse(httpProxy)
	if err != nil {
		t.Fatalf("%s's proxy: %v", name, err)
	}
	if pass, _ := proxyURL.User.Password(); pass != token || httpsProxy != httpProxy {
		t.Errorf("%s's proxies %s, want both the forward proxy with the Pod token", name, proxyURL.Redacted())
	}
	if n := strings.Count(doc, token); n != 2 {
		t.Errorf("%s holds the Pod token %d times, want twice (its two proxies):\n%s", name, n, doc)
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
}

// xmlElement is the text of the one element <name> of a rendered XML file.
func xmlElement(t *testing.T, doc, name string) string {
	t.Helper()
	m := regexp.MustCompile(`<`+name+`>([^<]*)</`+name+`>`).FindAllStringSubmatch(doc, -1)
	if len(m) != 1 {
		t.Fatalf("want one <%s> in\n%s", name, doc)
	}
	return m[0][1]
}

// npmrcRegistry is .npmrc's registry and the _authToken npm would send to it.
func npmrcRegistry(t *testing.T, npmrc string) (registry, token string) {
	t.Helper()
	registry = iniValue(t, npmrc, "registry")
	key := strings.TrimPrefix(strings.TrimPrefix(registry, "http:"), "https:") + ":_authToken"
	return registry, iniValue(t, npmrc, key)
}

// iniValue is the value of key in an ini-style file (key = value or key=value).
func iniValue(t *testing.T, doc, key string) string {
	t.Helper()
	for _, line := range strings.Split(doc, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in\n%s", key, doc)
	return ""
}

// yamlValue is the value of a top-level scalar key of a flat YAML file.
func yamlValue(t *testing.T, doc, key string) string {
	t.Helper()
	for _, line := range strings.Split(doc, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatalf("no %s in\n%s", key, doc)
	return ""
}

// expectOK sends one request and wants 200 (the stand-in answers 401 to a wrong credential).
func expectOK(t *testing.T, c *http.Client, method, target, authorization string) {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("%s %s: %s, want 200", method, req.URL.Redacted(), res.Status)
	}
}
