package e2e

// The harbor class of deploy/classes: its three configurations rendered and read the way their
// clients read them, and Harbor's own API reached three ways against a stand-in that takes only
// Basic with the robot account's credential (Harbor runs nowhere here): through the Connectors
// API, through the Connector's own proxy host with config.json's auth (as a Docker-style client
// sends it), and as harbor-cli does (the forward proxy, config.yaml's context and password).

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// harborCLIConfig is what harbor-cli reads of its config.yaml.
type harborCLIConfig struct {
	Current     string `json:"current-credential-name"`
	Credentials []struct {
		Name, Username, Password string
		ServerAddress            string `json:"serveraddress"`
	} `json:"credentials"`
}

// harborCLIPassword decrypts a config.yaml password as harbor-cli does: base64 of an AES-GCM
// nonce and sealed text, under the base64 key HARBOR_ENCRYPTION_KEY.
func harborCLIPassword(t *testing.T, keyB64, password string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keyB64))
	if err != nil {
		t.Fatalf("HARBOR_ENCRYPTION_KEY: %v", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatalf("HARBOR_ENCRYPTION_KEY: %v", err)
	}
	gcm, _ := cipher.NewGCM(block)
	data, err := base64.StdEncoding.DecodeString(password)
	if err != nil || len(data) < gcm.NonceSize() {
		t.Fatalf("config.yaml password is not base64 of a nonce and sealed text: %v", err)
	}
	plain, err := gcm.Open(nil, data[:gcm.NonceSize()], data[gcm.NonceSize():], nil)
	if err != nil {
		t.Fatalf("config.yaml password does not decrypt with HARBOR_ENCRYPTION_KEY: %v", err)
	}
	return string(plain)
}

// basicAccepts is Harbor's scheme for a user or robot account: Basic user:password, alone.
func basicAccepts(user, pass string) func(http.Header) bool {
	return func(h http.Header) bool {
		a := h.Values("Authorization")
		return len(a) == 1 && a[0] == "Basic "+basic(user, pass)
	}
}

func TestToolHarborConfigurationsAndAPI(t *testing.T) {
	robot, password := "robot$ci+builder", "robot-secret-"+rand.String(12)
	accept := basicAccepts(robot, password)
	harbor, seen := startSchemeStandIn(t, "/api/", accept, nil)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	vol := publishToolVolume(t, env, ns, toolConnector{name: "harbor", class: deployedClassCopy(t, "harbor.yaml").Name,
		address: harbor.URL, auth: "basicAuth", secretType: corev1.SecretTypeBasicAuth,
		secret: map[string]string{"username": robot, "password": password}, configurations: "registry-config,buildkitd,harbor-cli-config"})
	files, token := vol.files, vol.token
	waitCondition(t, ns, "harbor", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, "Accepted")

	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	_, proxyPort, _ := net.SplitHostPort(proxyAddr)
	host := "c-harbor." + ns + ".svc.cluster.local:" + proxyPort

	t.Run("buildkitd.toml marks the Connector's host as plain http", func(t *testing.T) {
		if b := files["buildkitd.toml"]; !strings.Contains(b, `[registry."`+host+`"]`+"\n  http = true") {
			t.Errorf("buildkitd.toml does not mark %s as http:\n%s", host, b)
		}
	})

	t.Run("config.json's auth for the Connector's host passes the proxy", func(t *testing.T) {
		var conf struct {
			Auths map[string]struct{ Auth string } `json:"auths"`
		}
		if err := json.Unmarshal([]byte(files["config.json"]), &conf); err != nil {
			t.Fatalf("config.json: %v\n%s", err, files["config.json"])
		}
		auth, ok := conf.Auths[host]
		if !ok {
			t.Fatalf("config.json has no auth for %s: %v", host, conf.Auths)
		}
		// A Docker-style client sends the auth of the registry host as Basic.
		client := resolvingClient(host, proxyAddr)
		// The stand-in answers its API's paths with its user when the robot's credential came.
		if answer := getJSON(t, client, "http://"+host+"/api/v2.0/projects", map[string]string{"Authorization": "Basic " + auth.Auth}); answer["username"] != "connectors-bot" {
			t.Errorf("GET /api/v2.0/projects: %v", answer)
		}
		// Under OIDC, the current user's answer holds its CLI secret, the Connector's password.
		if code, body := do(t, client, newRequest(t, "GET", "http://"+host+"/api/v2.0/users/current", map[string]string{"Authorization": "Basic " + auth.Auth})); code != http.StatusForbidden || !strings.Contains(body, "--proxy-denied-paths") {
			t.Errorf("GET /api/v2.0/users/current: %d %q, want 403 naming --proxy-denied-paths", code, body)
		}
	})

	t.Run("Harbor's API through the Connectors API", func(t *testing.T) {
		ui := apiToken(t, ns, "harbor-ui")
		allowConnectorsAs(t, ns, "harbor-ui", "harbor-ui-get", "harbor")
		client := &http.Client{Timeout: 20 * time.Second}
		getJSON(t, client, env.proxyURL+"/connectors/v1alpha1/"+ns+"/harbor/path/api/v2.0/projects?page=1&page_size=10",
			map[string]string{"Authorization": "Bearer " + ui})
		if got := seen.last(t); got.URL.Path != "/api/v2.0/projects" || got.URL.Query().Get("page_size") != "10" || carries(got, ui) {
			t.Errorf("the stand-in got %s?%s, or the caller's token", got.URL.Path, got.URL.RawQuery)
		}
	})

	t.Run("harbor-cli's config.yaml through the forward proxy", func(t *testing.T) {
		var conf harborCLIConfig
		if err := yaml.Unmarshal([]byte(files["config.yaml"]), &conf); err != nil {
			t.Fatalf("config.yaml: %v\n%s", err, files["config.yaml"])
		}
		if len(conf.Credentials) != 1 || conf.Current != ns+"/harbor" || conf.Credentials[0].Name != conf.Current ||
			conf.Credentials[0].ServerAddress != harbor.URL {
			t.Fatalf("config.yaml: %+v, want one context %s/harbor at %s", conf, ns, harbor.URL)
		}
		cred := conf.Credentials[0]
		placeholder := harborCLIPassword(t, files["HARBOR_ENCRYPTION_KEY"], cred.Password)
		proxy, err := url.Parse(strings.TrimSpace(files["http.proxy"]))
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
		getJSON(t, client, cred.ServerAddress+"/api/v2.0/projects?name=library",
			map[string]string{"Authorization": "Basic " + basic(cred.Username, placeholder)})
	})

	checkAPISawOnlyPAT(t, seen, accept, token)
	checkStandInRefuses(t, harbor.URL+"/api/v2.0/projects", map[string]string{"Authorization": "Bearer " + token})
	checkLogHoldsNone(t, password, token)
}
