package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/test/mavenrepo"
)

// Plugins the Maven test runs by full coordinates, in the versions Debian packages (hack/tools/maven.sh).
const (
	mavenDeployPlugin     = "org.apache.maven.plugins:maven-deploy-plugin:3.0.0"
	mavenDependencyPlugin = "org.apache.maven.plugins:maven-dependency-plugin:3.5.0"
)

// TestToolMaven drives Debian's mvn with only the maven class's settings.xml (and, for https,
// the volume's ca.cert in a truststore made with keytool, as the documentation does) and the Pod
// token against real Maven repositories (nginx WebDAV behind Basic auth, over http and https):
// deploy:deploy-file to the Connector's own address through the forward proxy of <proxies>
// (the documented form) and to its reverse-proxy address with the <server> of the Connector,
// and dependency:get through the useAsMirror mirror at the reverse proxy, each with an empty
// local repository, so that mvn's plugins come through the Connector too. The driver's
// pass-through is off and the JVM's proxies lead nowhere: a request for any other host fails
// the run.
func TestToolMaven(t *testing.T) {
	mvn := requireMaven(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.ForwardPassthrough = proxy.PassthroughNone })
	for _, tc := range []struct {
		name  string
		start func(string) (*mavenrepo.Server, error)
	}{{"http", mavenrepo.Start}, {"https", mavenrepo.StartTLS}} {
		t.Run(tc.name, func(t *testing.T) {
			repo, err := tc.start(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(repo.Close)
			m := mavenVolume(t, env, repo, mavenConnector{class: "maven.yaml", address: repo.URL,
				params: []v1alpha1.Param{{Name: "useAsMirror", Value: *jsonValue("true")}}})
			m.mvn = mvn
			jar := filepath.Join(t.TempDir(), "hello.jar")
			content := "built by the pod " + rand.String(8)
			if err := os.WriteFile(jar, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			deploy := func(t *testing.T, version, repositoryID, url string) {
				m.run(t, mavenDeployPlugin+":deploy-file", "-Dfile="+jar, "-DgroupId=com.example",
					"-DartifactId=hello", "-Dversion="+version, "-Dpackaging=jar", "-DrepositoryId="+repositoryID, "-Durl="+url)
				got, err := os.ReadFile(filepath.Join(repo.Root, "com/example/hello", version, "hello-"+version+".jar"))
				if err != nil || string(got) != content {
					t.Fatalf("the repository holds %q (%v), want the deployed jar", got, err)
				}
			}
			// "releases" has no <server>: only the forward proxy of <proxies> can have added the
			// credential nginx requires (and over https the JVM trusts only the proxy's CA, so
			// the tunnel was the proxy's, intercepted with its leaf certificate).
			t.Run("deploy to the Connector's address through the forward proxy", func(t *testing.T) {
				deploy(t, "1.0", "releases", repo.URL)
			})
			// The <server> named after the Connector answers the reverse proxy's Basic challenge
			// with the Pod token.
			t.Run("deploy to the reverse-proxy address with the Connector's server", func(t *testing.T) {
				deploy(t, "1.1", "maven", env.proxyURL+"/namespaces/"+m.ns+"/connectors/maven")
			})
			t.Run("dependency:get through the mirror", func(t *testing.T) {
				local := m.run(t, mavenDependencyPlugin+":get", "-Dartifact=com.example:hello:1.0", "-Dtransitive=false")
				got, err := os.ReadFile(filepath.Join(local, "com/example/hello/1.0/hello-1.0.jar"))
				if err != nil || string(got) != content {
					t.Fatalf("the local repository holds %q (%v), want the deployed jar", got, err)
				}
			})
			checkMavenRepoRequests(t, repo, m.token, "PUT /hello-1.0.jar", "PUT /hello-1.1.jar", "GET /hello-1.0.jar")
			if strings.Contains(logs.String(), repo.Password) || strings.Contains(logs.String(), m.token) {
				t.Error("the driver log holds the repository's password or the Pod token")
			}
		})
	}
}

// mavenPod is a Pod's maven volume and how its mvn runs.
type mavenPod struct {
	mvn, ns, settings, token string
	// javaOpts trust the proxy's CA: the volume's ca.cert in a truststore, as keytool makes it.
	javaOpts string
}

// mavenConnector is the Connector mavenVolume creates: its class's file in deploy/classes, its
// address and params, and the volume's configuration.params.
type mavenConnector struct {
	class, address, configurationParams string
	params                              []v1alpha1.Param
}

// mavenVolume creates a Connector named maven for repo, with its credential and CA, and
// publishes its settings volume for a Pod exactly as the documentation's Pods ask for it.
func mavenVolume(t *testing.T, env *proxyEnv, repo *mavenrepo.Server, mc mavenConnector) *mavenPod {
	t.Helper()
	ctx := context.Background()
	ns := newNamespace(t)
	class := deployedClass(t, mc.class)
	createSecret(t, ns, "maven-auth", corev1.SecretTypeBasicAuth, map[string]string{"username": repo.Username, "password": repo.Password})
	c := &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: "maven", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: mc.address, Params: mc.params,
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "maven-auth"}}},
	}
	if repo.CA != nil {
		createSecret(t, ns, "maven-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(repo.CA.PEM)})
		c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: "maven-ca"}
	}
	create(t, c)
	allowConnectors(t, ns, "builder", "maven")
	attrs := map[string]string{"connector.name": "maven", "configuration.names": "settings"}
	if mc.configurationParams != "" {
		attrs["configuration.params"] = mc.configurationParams
	}
	pod := podWithVolume(t, env.kubelet, ns, "mvn", attrs, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
			t.Error(err)
		}
	})
	vol := env.kubelet.TargetPath(pod, "connectors")
	files := visibleFiles(t, vol)
	m := &mavenPod{ns: ns, settings: filepath.Join(vol, "settings.xml"), token: files["context.token"]}
	checkMavenVolume(t, files, repo, m.token)
	store := filepath.Join(t.TempDir(), "cacerts.jks")
	if out, err := exec.Command("keytool", "-importcert", "-noprompt", "-trustcacerts", "-keystore", store,
		"-storepass", "changeit", "-alias", "connectors-proxy", "-file", filepath.Join(vol, "ca.cert")).CombinedOutput(); err != nil {
		t.Fatalf("keytool: %v\n%s", err, out)
	}
	m.javaOpts = "-Djavax.net.ssl.trustStore=" + store + " -Djavax.net.ssl.trustStorePassword=changeit"
	return m
}

// requireMaven fails the test, naming the install step, when mvn or the repository's parts are missing.
func requireMaven(t *testing.T) string {
	t.Helper()
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		t.Fatal("mvn is not installed: run hack/tools.sh (hack/tools/maven.sh)")
	}
	if missing := mavenrepo.Missing(); missing != "" {
		t.Fatalf("%s is not installed: run hack/tools.sh (hack/tools/maven.sh)", missing)
	}
	return mvn
}

// checkMavenVolume asserts the volume holds settings.xml and ca.cert, the Pod token, and never
// the repository's credential.
func checkMavenVolume(t *testing.T, files map[string]string, repo *mavenrepo.Server, token string) {
	t.Helper()
	for _, name := range []string{"settings.xml", "ca.cert"} {
		if files[name] == "" {
			t.Errorf("the volume has no %s", name)
		}
	}
	if !strings.Contains(files["settings.xml"], token) {
		t.Error("settings.xml does not carry the Pod token")
	}
	for name, data := range files {
		if strings.Contains(data, repo.Password) || strings.Contains(data, basic(repo.Username, repo.Password)) {
			t.Errorf("the volume's %s holds the repository's credential", name)
		}
	}
}

// run runs mvn in batch mode with the volume's settings.xml and a new, empty local
// repository, which it returns.
func (m *mavenPod) run(t *testing.T, args ...string) string {
	t.Helper()
	local := filepath.Join(t.TempDir(), "m2")
	if out, err := m.runWith(t, local, args...); err != nil {
		t.Fatalf("mvn %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return local
}

// runWith runs mvn in batch mode with the volume's settings.xml and the local repository.
// HOME is empty, and the JVM's own proxies point at a closed port, so that only settings.xml
// leads anywhere.
func (m *mavenPod) runWith(t *testing.T, local string, args ...string) ([]byte, error) {
	t.Helper()
	nowhere := freeLoopbackAddr(t)
	host, port, _ := strings.Cut(nowhere, ":")
	cmd := exec.Command(m.mvn, append([]string{"-B", "-s", m.settings, "-Dmaven.repo.local=" + local}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"MAVEN_OPTS=-Dmaven.resolver.transport=wagon -Dhttp.proxyHost=" + host + " -Dhttp.proxyPort=" + port +
			" -Dhttps.proxyHost=" + host + " -Dhttps.proxyPort=" + port + " -Dhttp.nonProxyHosts=none " + m.javaOpts}
	return cmd.CombinedOutput()
}

// TestToolMavenServersAreOnlyMirrors: Maven gives a <server>'s credential to any repository of
// its id, also one that a dependency's POM declares at a host of its own; a Connector that is not
// a mirror therefore gets no <server>. mvn resolves, through a Connector that is not a mirror, a
// dependency whose POM declares a repository named after the Connector, at a server of the
// test's (reached without the proxy, as a pass-through would reach it) that asks for Basic
// credentials: it asks that server, and sends it none.
func TestToolMavenServersAreOnlyMirrors(t *testing.T) {
	mvn := requireMaven(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.ForwardPassthrough = proxy.PassthroughNone })
	repo, err := mavenrepo.StartTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	foreign := startRecorderOn(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="foreign"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
	writeMavenArtifact(t, repo.Root, "base", "<project><modelVersion>4.0.0</modelVersion><groupId>com.example</groupId><artifactId>base</artifactId><version>1.0</version></project>")
	writeMavenArtifact(t, repo.Root, "app", `<project><modelVersion>4.0.0</modelVersion><groupId>com.example</groupId><artifactId>app</artifactId><version>1.0</version>
<repositories><repository><id>maven</id><url>`+foreign.URL+`/repo</url></repository></repositories>
<dependencies><dependency><groupId>com.example</groupId><artifactId>elsewhere</artifactId><version>1.0</version></dependency></dependencies></project>`)
	// mvn's plugins come first through a mirror Connector's volume (its <server> is the
	// mirror's): the volume under test has no mirror, and mvn would ask Maven Central for them.
	warm := mavenVolume(t, env, repo, mavenConnector{class: "maven.yaml", address: repo.URL,
		params: []v1alpha1.Param{{Name: "useAsMirror", Value: *jsonValue("true")}}})
	warm.mvn = mvn
	local := warm.run(t, mavenDependencyPlugin+":get", "-Dartifact=com.example:base:1.0", "-Dtransitive=false")

	m := mavenVolume(t, env, repo, mavenConnector{class: "maven.yaml", address: repo.URL})
	m.mvn = mvn
	settings, err := os.ReadFile(m.settings)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(settings), "<server>") || strings.Count(string(settings), m.token) != 1 {
		t.Errorf("settings.xml of a Connector that is not a mirror has a <server>, or the Pod token other than in <proxies>:\n%s", settings)
	}
	// A project of the Pod's that reads its dependencies from the Connector (through the forward
	// proxy) and needs app; -llr: the plugins came from the mirror's id, which this run's
	// repositories do not have.
	pom := filepath.Join(t.TempDir(), "pom.xml")
	if err := os.WriteFile(pom, []byte(`<project><modelVersion>4.0.0</modelVersion><groupId>com.example</groupId><artifactId>build</artifactId><version>1.0</version>
<repositories><repository><id>connector</id><url>`+repo.URL+`</url></repository></repositories>
<dependencies><dependency><groupId>com.example</groupId><artifactId>app</artifactId><version>1.0</version></dependency></dependencies></project>`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := m.runWith(t, local, "-llr", "-f", pom, mavenDependencyPlugin+":resolve")
	if err == nil {
		t.Fatalf("mvn resolved a dependency that no repository has:\n%s", out)
	}
	asked := 0
	for _, r := range foreign.requests() {
		asked++
		if r.Authorization != "" || strings.Contains(r.RequestURI, m.token) {
			t.Errorf("the repository a dependency's POM declares got %s %s with an Authorization header (holding the Pod token: %v), want no credential",
				r.Method, r.RequestURI, strings.Contains(r.Authorization, basic(m.ns+"/maven", m.token)))
		}
	}
	if asked == 0 {
		t.Fatalf("mvn never asked the repository the dependency's POM declares:\n%s", out)
	}
}

// writeMavenArtifact writes com.example:<artifact>:1.0, its POM and a jar, into a repository.
func writeMavenArtifact(t *testing.T, root, artifact, pom string) {
	t.Helper()
	dir := filepath.Join(root, "com/example", artifact, "1.0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{artifact + "-1.0.pom": pom, artifact + "-1.0.jar": "jar of " + artifact} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkMavenRepoRequests asserts the repository was reached, for mvn's plugins and for each of
// want ("<method> <path suffix>"), only with the Connector's credential, never with the Pod
// token or a proxy header.
func checkMavenRepoRequests(t *testing.T, repo *mavenrepo.Server, token string, want ...string) {
	t.Helper()
	reqs, err := repo.Requests()
	if err != nil {
		t.Fatal(err)
	}
	credential := "Basic " + basic(repo.Username, repo.Password)
	missing := map[string]bool{"GET /maven-dependency-plugin-3.5.0.jar": true}
	for _, w := range want {
		missing[w] = true
	}
	for _, r := range reqs {
		if r.Authorization != credential {
			t.Errorf("%s %s reached the repository with Authorization %q, want the Connector's", r.Method, r.URI, r.Authorization)
		}
		if r.ProxyAuthorization != "" || r.Contains(token) {
			t.Errorf("%s %s reached the repository with the Pod token or a proxy header", r.Method, r.URI)
		}
		for w := range missing {
			method, suffix, _ := strings.Cut(w, " ")
			if r.Method == method && strings.HasSuffix(r.URI, suffix) {
				delete(missing, w)
			}
		}
	}
	for w := range missing {
		t.Errorf("the repository saw no %s among %d requests", w, len(reqs))
	}
}
