package e2e

// The sonarqube class of deploy/classes: sonar-project.properties rendered and used the way
// sonar-scanner uses it (sonar.host.url through the sonar.scanner.proxy* forward proxy, the
// proxy user sent as written, %2F and all), against a stand-in that takes only SonarQube's
// token schemes (the token as the Basic user name with an empty password, or Bearer), and the
// class's liveness and auth probes against the same stand-in. sonar-scanner itself (a Java
// program Debian does not ship) is not run here.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
)

// sonarAccepts is SonarQube's scheme for a token: Basic <token>: (empty password), or Bearer.
func sonarAccepts(tok string) func(http.Header) bool {
	return func(h http.Header) bool {
		a := h.Values("Authorization")
		return len(a) == 1 && (a[0] == "Basic "+basic(tok, "") || a[0] == "Bearer "+tok)
	}
}

// startSonarStandIn answers as SonarQube does: /api/system/status without a credential,
// /api/authentication/validate with {"valid": <whether the credential is the token>}, any other
// /api/ path only with the token (401 otherwise). Requests other than probes are recorded.
func startSonarStandIn(t *testing.T, accept func(http.Header) bool) (*recorder, *headerRecorder) {
	t.Helper()
	seen := &headerRecorder{}
	rec := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.UserAgent() != connectorstatus.ProbeUserAgent {
			seen.mu.Lock()
			seen.got = append(seen.got, r.Clone(context.Background()))
			seen.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/api/system/status":
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "UP"})
		case r.URL.Path == "/api/authentication/validate":
			_ = json.NewEncoder(w).Encode(map[string]bool{"valid": accept(r.Header)})
		case !accept(r.Header):
			w.WriteHeader(http.StatusUnauthorized)
		default:
			_ = json.NewEncoder(w).Encode(map[string]string{"version": "10.7"})
		}
	})
	return rec, seen
}

// properties reads key=value lines of a Java properties file (no continuations or escapes).
func properties(s string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func TestToolSonarQubeScannerPropertiesAndProbes(t *testing.T) {
	tok := "sqa_" + rand.String(40)
	accept := sonarAccepts(tok)
	sonar, seen := startSonarStandIn(t, accept)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	vol := publishToolVolume(t, env, ns, toolConnector{name: "sonarqube", class: deployedClassCopy(t, "sonarqube.yaml").Name,
		address: sonar.URL, auth: "tokenAuth", secretType: "connectors.cpaas.io/bearer-token", secret: map[string]string{"token": tok},
		configurations: "sonar-scanner"})
	files, token := vol.files, vol.token

	t.Run("liveness and auth probes as SonarQube answers them", func(t *testing.T) {
		waitCondition(t, ns, "sonarqube", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
		waitCondition(t, ns, "sonarqube", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, "Accepted")
	})

	t.Run("sonar-project.properties through the forward proxy", func(t *testing.T) {
		p := properties(files["sonar-project.properties"])
		proxyURL, _ := url.Parse(env.proxyURL)
		if p["sonar.host.url"] != sonar.URL || p["sonar.scanner.proxyHost"] != proxyURL.Hostname() || p["sonar.scanner.proxyPort"] != proxyURL.Port() ||
			p["sonar.scanner.proxyUser"] != ns+"%2Fsonarqube" || p["sonar.scanner.proxyPassword"] != token {
			t.Fatalf("sonar-project.properties: host %q proxy %q:%q user %q, want %s via %s as %s%%2Fsonarqube with the Pod token",
				p["sonar.host.url"], p["sonar.scanner.proxyHost"], p["sonar.scanner.proxyPort"], p["sonar.scanner.proxyUser"], sonar.URL, proxyURL.Host, ns)
		}
		// As the scanner's HTTP client does: the proxy from the properties, and Basic proxy
		// authentication with the user and password exactly as written there.
		proxy := &url.URL{Scheme: "http", Host: p["sonar.scanner.proxyHost"] + ":" + p["sonar.scanner.proxyPort"]}
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
		proxyAuth := map[string]string{"Proxy-Authorization": "Basic " + basic(p["sonar.scanner.proxyUser"], p["sonar.scanner.proxyPassword"])}
		if v := getJSON(t, client, p["sonar.host.url"]+"/api/server/version", proxyAuth); v["version"] != "10.7" {
			t.Errorf("GET /api/server/version: %v", v)
		}
		if v := getJSON(t, client, p["sonar.host.url"]+"/api/authentication/validate", proxyAuth); v["valid"] != true {
			t.Errorf("GET /api/authentication/validate through the proxy: %v", v)
		}
		checkAPISawOnlyPAT(t, seen, accept, token)
	})

	checkStandInRefuses(t, sonar.URL+"/api/server/version", map[string]string{"Authorization": "Bearer " + token})
	checkLogHoldsNone(t, tok, token)
}
