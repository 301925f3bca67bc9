package e2e

// The github class of deploy/classes, driven by its real clients: git (Debian's) clones and
// pushes through the reverse proxy with the rendered .gitconfig against the real Git server,
// which takes the PAT the way GitHub does for git over HTTPS (Basic, the PAT as the password);
// and the REST API, reached as gh reaches it (the forward proxy of .env, hosts.yml's placeholder
// token), is a stand-in that takes only GitHub's scheme (Authorization: Bearer or token <PAT>).

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
)

// mustHaveTool fails the test when a tool the test drives is not installed.
func mustHaveTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed: run hack/tools.sh (%v)", name, err)
	}
}

// startSchemeStandIn starts a recording stand-in for a tool's REST API under apiPrefix that
// answers 200 (a small JSON user) only to requests accept takes, and 401 to any other, as the
// tool would; other paths go to rest (a real server behind the same address), or get 404.
// Requests from the proxy to the API are kept in the returned headerRecorder.
func startSchemeStandIn(t *testing.T, apiPrefix string, accept func(http.Header) bool, rest http.Handler) (*recorder, *headerRecorder) {
	t.Helper()
	seen := &headerRecorder{}
	rec := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, apiPrefix) {
			if rest == nil {
				http.NotFound(w, r)
				return
			}
			rest.ServeHTTP(w, r)
			return
		}
		if r.UserAgent() != connectorstatus.ProbeUserAgent {
			seen.mu.Lock()
			seen.got = append(seen.got, r.Clone(context.Background()))
			seen.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		if !accept(r.Header) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"message":"401 Unauthorized"}`)
			return
		}
		_, _ = io.WriteString(w, `{"login":"connectors-bot","username":"connectors-bot"}`)
	})
	return rec, seen
}

// checkAPISawOnlyPAT asserts the stand-in saw requests, none of them with the Pod's token or
// a proxy credential, each accepted.
func checkAPISawOnlyPAT(t *testing.T, seen *headerRecorder, accept func(http.Header) bool, token string) {
	t.Helper()
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.got) == 0 {
		t.Fatal("no request reached the API stand-in")
	}
	for _, r := range seen.got {
		if !accept(r.Header) || carries(r, token) || r.Header.Get("Proxy-Authorization") != "" {
			t.Errorf("%s %s reached the API without the PAT in its scheme, or with the Pod token or a proxy credential", r.Method, r.URL.Path)
		}
	}
}

// toolConnector is a tool's Connector (in the test's namespace, with its Secret) and the
// configurations a Pod's volume of it renders.
type toolConnector struct {
	name, class, address, auth string
	extensions                 []v1alpha1.NamedAddress
	secretType                 corev1.SecretType
	secret                     map[string]string
	configurations             string
}

// toolVolume is a published volume: its directory, its files by name and the Pod's token.
type toolVolume struct {
	dir   string
	files map[string]string
	token string
}

// publishToolVolume creates the Connector, lets ServiceAccount builder get it, and publishes a
// Pod's volume of it (unpublished at cleanup). The test fails if a file of the volume holds a
// value of the Connector's Secret.
func publishToolVolume(t *testing.T, env *proxyEnv, ns string, c toolConnector) toolVolume {
	t.Helper()
	createSecret(t, ns, c.name+"-secret", c.secretType, c.secret)
	create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: c.class, Address: c.address, AddressExtensions: c.extensions,
			Auth: &v1alpha1.ConnectorAuth{Name: c.auth, SecretRef: &v1alpha1.SecretRef{Name: c.name + "-secret"}}}})
	allowConnectors(t, ns, "builder", c.name)
	pod := podWithVolume(t, env.kubelet, ns, c.name+"-pod", map[string]string{"connector.name": c.name, "configuration.names": c.configurations}, nil)
	if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	v := toolVolume{dir: env.kubelet.TargetPath(pod, "connectors")}
	v.files = visibleFiles(t, v.dir)
	v.token = v.files["context.token"]
	for _, secret := range c.secret {
		for name, content := range v.files {
			if strings.Contains(content, secret) {
				t.Errorf("the volume's %s holds the Connector's credential", name)
			}
		}
	}
	return v
}

// checkStandInRefuses asserts the stand-in answers 401 to a request with header sent straight
// to it (the Pod's token, or a credential in another scheme than the tool's).
func checkStandInRefuses(t *testing.T, url string, header map[string]string) {
	t.Helper()
	if code, _ := do(t, noRedirects, newRequest(t, http.MethodGet, url, header)); code != http.StatusUnauthorized {
		t.Errorf("the stand-in answered a request without the tool's credential in its scheme with %d, want 401", code)
	}
}

// checkLogHoldsNone asserts the driver log holds none of the secrets.
func checkLogHoldsNone(t *testing.T, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Error("the driver log holds a credential or the Pod token")
		}
	}
}

// getJSON sends GET url with header through c and decodes a 200 answer's JSON.
func getJSON(t *testing.T, c *http.Client, url string, header map[string]string) map[string]any {
	t.Helper()
	code, body := do(t, c, newRequest(t, http.MethodGet, url, header))
	if code != http.StatusOK {
		t.Fatalf("GET %s: status %d %q", url, code, body)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("GET %s: %v in %q", url, err, body)
	}
	return out
}

// githubAccepts is GitHub's REST scheme for a PAT: Authorization: Bearer <PAT> or token <PAT>.
func githubAccepts(pat string) func(http.Header) bool {
	return func(h http.Header) bool {
		a := h.Values("Authorization")
		return len(a) == 1 && (a[0] == "Bearer "+pat || a[0] == "token "+pat)
	}
}

func TestToolGitHubGitAndRESTThroughTheProxy(t *testing.T) {
	mustHaveTool(t, "git")
	pat := "ghp_" + rand.String(36)
	tool := startGitServer(t, false)
	tool.SetCredential("x-access-token", pat) // GitHub: any user, the PAT as the password
	accept := githubAccepts(pat)
	api, seen := startSchemeStandIn(t, "/", accept, nil)
	env := startProxyDriver(t, nil)
	vol := publishToolVolume(t, env, newNamespace(t), toolConnector{name: "github", class: deployedClassCopy(t, "github.yaml").Name,
		address: tool.URL, extensions: []v1alpha1.NamedAddress{{Name: "api", Value: api.URL}}, auth: "patAuth",
		secretType: corev1.SecretTypeOpaque, secret: map[string]string{"token": pat}, configurations: "gitconfig,githubconfig"})
	files, token := vol.files, vol.token

	t.Run("git clone and push with .gitconfig", func(t *testing.T) {
		cloneAndPush(t, tool.URL, []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol.dir, ".gitconfig")})
		checkToolSawOnlyConnectorCredential(t, tool, token)
	})
	t.Run("git clone and push through the forward proxy of .env", func(t *testing.T) {
		cloneAndPush(t, tool.URL, envFile(t, filepath.Join(vol.dir, ".env")))
		checkToolSawOnlyConnectorCredential(t, tool, token)
	})

	t.Run("REST API as gh calls it: forward proxy, hosts.yml", func(t *testing.T) {
		var hosts map[string]struct {
			OAuthToken string `json:"oauth_token"`
		}
		if err := yaml.Unmarshal([]byte(files["hosts.yml"]), &hosts); err != nil {
			t.Fatalf("hosts.yml: %v\n%s", err, files["hosts.yml"])
		}
		toolURL, _ := url.Parse(tool.URL)
		placeholder := hosts[toolURL.Host].OAuthToken
		if placeholder == "" || strings.Contains(files["config.yml"]+files["hosts.yml"], token) {
			t.Fatalf("hosts.yml has no placeholder token for %s, or gh's files hold the Pod token:\n%s", toolURL.Host, files["hosts.yml"])
		}
		proxy, err := url.Parse(strings.TrimSpace(files["http.proxy"]))
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
		user := getJSON(t, client, api.URL+"/user", map[string]string{"Authorization": "token " + placeholder, "Accept": "application/vnd.github+json"})
		if user["login"] != "connectors-bot" {
			t.Errorf("GET /user: %v", user)
		}
		checkAPISawOnlyPAT(t, seen, accept, token)
		checkStandInRefuses(t, api.URL+"/user", map[string]string{"Authorization": "Bearer " + token})
	})

	checkLogHoldsNone(t, pat, token)
}
