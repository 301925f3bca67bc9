package e2e

// The gitlab class of deploy/classes, driven by its real clients. One address serves both, as
// GitLab does: git's paths go to the real Git server (test/gitserver), which takes the token
// the way GitLab does for git over HTTP (Basic, user oauth2, the token as the password), and
// /api/v4/ is a stand-in that takes only GitLab's PRIVATE-TOKEN header. Each Connector has its
// own host on the built-in proxy (the class's proxy-resolver: host); the test resolves that
// host to the proxy listener, as cluster DNS and the Connector's Service would.

import (
	"context"
	"io"
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
	ns := newNamespace(t)
	vol := publishToolVolume(t, env, ns, toolConnector{name: "gitlab", class: deployedClassCopy(t, "gitlab.yaml").Name,
		address: front.URL, auth: "patAuth", secretType: "connectors.cpaas.io/gitlab-pat-auth", secret: map[string]string{"token": pat},
		configurations: "gitlabconfig,gitconfig"})
	files, token := vol.files, vol.token
	waitCondition(t, ns, "gitlab", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, "Accepted")

	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	_, proxyPort, _ := net.SplitHostPort(proxyAddr)
	host := "c-gitlab." + ns + ".svc.cluster.local:" + proxyPort
	if got := files["connector.status.proxyAddress"]; got != "http://"+host {
		t.Fatalf("connector.status.proxyAddress = %q, want the Connector's own host http://%s", got, host)
	}

	t.Run("git clone and push with .gitconfig", func(t *testing.T) {
		hostname, _, _ := net.SplitHostPort(host)
		cloneAndPush(t, front.URL, []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol.dir, ".gitconfig"),
			// What cluster DNS would do: the Connector's host leads to the proxy.
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.curloptResolve", "GIT_CONFIG_VALUE_0=" + hostname + ":" + proxyPort + ":127.0.0.1"})
		checkToolSawOnlyConnectorCredential(t, git, token)
	})
	t.Run("git clone and push through the forward proxy of .env", func(t *testing.T) {
		cloneAndPush(t, front.URL, envFile(t, filepath.Join(vol.dir, ".env")))
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
		checkStandInRefuses(t, front.URL+"/api/v4/user", map[string]string{"PRIVATE-TOKEN": token})
		checkStandInRefuses(t, front.URL+"/api/v4/user", map[string]string{"Authorization": "Bearer " + pat})
	})

	checkLogHoldsNone(t, pat, token)
}

// TestToolGitLabRedirectsAndLinksKeepThePodToken: glab sends the Pod token as PRIVATE-TOKEN,
// a header Go's client sends again to a redirect on another host (only Authorization and
// cookies are dropped), and follows a Link header's next page as given. Through the proxy, a
// redirect outside the Connector's address is a 502 (and the other host gets nothing), Link
// targets within it lead to the proxy, and a Link header naming another host is dropped.
func TestToolGitLabRedirectsAndLinksKeepThePodToken(t *testing.T) {
	elsewhere := startRecorderOn(t, "127.0.0.3", nil)
	var front *recorder
	front = startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v4/away":
			http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
			return
		case "/api/v4/projects":
			w.Header().Set("Link", `<`+front.URL+`/api/v4/projects?page=2>; rel="next", </api/v4/projects?page=9>; rel="last"`)
		case "/api/v4/groups":
			w.Header().Set("Link", `<`+elsewhere.URL+`/api/v4/groups?page=2>; rel="next"`)
		}
		_, _ = io.WriteString(w, "[]")
	})
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	vol := publishToolVolume(t, env, ns, toolConnector{name: "gitlab", class: deployedClassCopy(t, "gitlab.yaml").Name,
		address: front.URL, auth: "patAuth", secretType: "connectors.cpaas.io/gitlab-pat-auth", secret: map[string]string{"token": "glpat-x"},
		configurations: "gitlabconfig"})
	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	_, proxyPort, _ := net.SplitHostPort(proxyAddr)
	host := "c-gitlab." + ns + ".svc.cluster.local:" + proxyPort
	client := resolvingClient(host, proxyAddr)
	get := func(path string) *http.Response {
		t.Helper()
		res, err := client.Do(newRequest(t, "GET", "http://"+host+path, map[string]string{"PRIVATE-TOKEN": vol.token}))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	if res := get("/api/v4/away"); res.StatusCode != http.StatusBadGateway {
		t.Errorf("a redirect to another host: %s, want 502", res.Status)
	}
	if got := elsewhere.requests(); len(got) != 0 {
		t.Errorf("the host redirected to got %s %s", got[0].Method, got[0].RequestURI)
	}
	want := `<http://` + host + `/api/v4/projects?page=2>; rel="next", <http://` + host + `/api/v4/projects?page=9>; rel="last"`
	if got := get("/api/v4/projects").Header.Values("Link"); len(got) != 1 || got[0] != want {
		t.Errorf("Link within the address: %q, want %q", got, want)
	}
	if got := get("/api/v4/groups").Header.Values("Link"); len(got) != 0 {
		t.Errorf("Link to another host: %q, want none", got)
	}
}
