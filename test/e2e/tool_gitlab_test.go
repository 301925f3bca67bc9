package e2e

// The gitlab class of deploy/classes, driven by its real clients. One address serves both, as
// GitLab does: git's paths go to the real Git server (test/gitserver), which takes the token
// the way GitLab does for git over HTTP (Basic, user oauth2, the token as the password), and
// /api/v4/ is a stand-in that takes only GitLab's PRIVATE-TOKEN header. Each Connector has its
// own host on the built-in proxy (the class's proxy-resolver: host); the test resolves that
// host to the proxy listener, as cluster DNS and the Connector's Service would.

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// glabConfig is what glab reads of the rendered config.yml.
type glabConfig struct {
	Host  string `json:"host"`
	Hosts map[string]struct {
		Token       string `json:"token"`
		APIHost     string `json:"api_host"`
		APIProtocol string `json:"api_protocol"`
	} `json:"hosts"`
}

// gitlabAccepts is GitLab's REST scheme for a personal access token: PRIVATE-TOKEN, alone.
func gitlabAccepts(pat string) func(http.Header) bool {
	return func(h http.Header) bool {
		v := h.Values("Private-Token")
		return len(v) == 1 && v[0] == pat && h.Get("Authorization") == ""
	}
}

// resolvingClient is an HTTP client (no proxy) that dials host (host:port) at addr instead.
func resolvingClient(host, addr string) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a == host {
				a = addr
			}
			return d.DialContext(ctx, network, a)
		}}}
}

func TestToolGitLabGitAndRESTThroughTheProxy(t *testing.T) {
	mustHaveTool(t, "git")
	pat := "glpat-" + rand.String(20)
	git := startGitServer(t, false)
	git.SetCredential("oauth2", pat) // GitLab: any user, the token as the password
	gitURL, _ := url.Parse(git.URL)
	accept := gitlabAccepts(pat)
	front, seen := startSchemeStandIn(t, "/api/v4/", accept, httputil.NewSingleHostReverseProxy(gitURL))
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	class := deployedClassCopy(t, "gitlab.yaml")

	createSecret(t, ns, "gitlab-secret", "connectors.cpaas.io/gitlab-pat-auth", map[string]string{"token": pat})
	create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "gitlab", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class.Name, Address: front.URL,
			Auth: &v1alpha1.ConnectorAuth{Name: "patAuth", SecretRef: &v1alpha1.SecretRef{Name: "gitlab-secret"}}}})
	allowConnectors(t, ns, "builder", "gitlab")
	waitCondition(t, ns, "gitlab", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, "Accepted")
	pod := podWithVolume(t, env.kubelet, ns, "glab", map[string]string{"connector.name": "gitlab", "configuration.names": "gitlabconfig,gitconfig"}, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	vol := env.kubelet.TargetPath(pod, "connectors")
	files := visibleFiles(t, vol)
	token := files["context.token"]
	checkVolumeHoldsNo(t, vol, pat)

	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	_, proxyPort, _ := net.SplitHostPort(proxyAddr)
	host := "c-gitlab." + ns + ".svc.cluster.local:" + proxyPort
	if got := files["connector.status.proxyAddress"]; got != "http://"+host {
		t.Fatalf("connector.status.proxyAddress = %q, want the Connector's own host http://%s", got, host)
	}

	t.Run("git clone and push with .gitconfig", func(t *testing.T) {
		hostname, _, _ := net.SplitHostPort(host)
		cloneAndPush(t, front.URL, []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig"),
			// What cluster DNS would do: the Connector's host leads to the proxy.
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.curloptResolve", "GIT_CONFIG_VALUE_0=" + hostname + ":" + proxyPort + ":127.0.0.1"})
		checkToolSawOnlyConnectorCredential(t, git, token)
	})
	t.Run("git clone and push through the forward proxy of .env", func(t *testing.T) {
		cloneAndPush(t, front.URL, envFile(t, filepath.Join(vol, ".env")))
		checkToolSawOnlyConnectorCredential(t, git, token)
	})

	t.Run("REST API as glab calls it: config.yml's host and token in PRIVATE-TOKEN", func(t *testing.T) {
		var conf glabConfig
		if err := yaml.Unmarshal([]byte(files["config.yml"]), &conf); err != nil {
			t.Fatalf("config.yml: %v\n%s", err, files["config.yml"])
		}
		h, ok := conf.Hosts[conf.Host]
		if conf.Host != host || !ok || h.Token != token {
			t.Fatalf("config.yml names host %q (want %s) without the Pod's token", conf.Host, host)
		}
		client := resolvingClient(host, proxyAddr)
		base := h.APIProtocol + "://" + h.APIHost + "/api/v4"
		if user := getJSON(t, client, base+"/user", map[string]string{"PRIVATE-TOKEN": h.Token}); user["username"] != "connectors-bot" {
			t.Errorf("GET /api/v4/user: %v", user)
		}
		checkAPISawOnlyPAT(t, seen, accept, token)
		// The stand-in takes nothing but the PAT in PRIVATE-TOKEN: the Pod's token sent
		// straight to it, or the PAT as a Bearer token, is refused.
		for _, header := range []map[string]string{{"PRIVATE-TOKEN": token}, {"Authorization": "Bearer " + pat}} {
			if code, _ := do(t, noRedirects, newRequest(t, http.MethodGet, front.URL+"/api/v4/user", header)); code != http.StatusUnauthorized {
				t.Errorf("the stand-in answered a request without PRIVATE-TOKEN <PAT> with %d, want 401", code)
			}
		}
	})

	if strings.Contains(logs.String(), pat) || strings.Contains(logs.String(), token) {
		t.Error("the driver log holds the PAT or the Pod token")
	}
}
