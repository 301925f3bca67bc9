package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/driver"
)

// deniedSpellings are spellings of denied paths a client could send: the node's default list's
// (each would answer with a JFrog Connector's credential, or rotate a GitLab Connector's token
// into one the caller holds, if the proxy sent it on), and one the class denies itself.
var deniedSpellings = []string{
	"/artifactory/api/security/apiKey",
	"/artifactory/api/security/encryptedPassword",
	"/artifactory/API/Security/apikey;x=1",
	"/artifactory/api%2Fsecurity%2FapiKey",
	"/artifactory//api/security/apiKey/",
	"/artifactory/api/npm/npm-remote/auth",
	"/access/api/v1/tokens",
	"/api/v4/personal_access_tokens/self/rotate.json",
	"/api/v2.0/users/current",
	"/artifactory/internal/credential",
}

// TestTenancyDeniedPathsKeepTheCredentialInTheProxy: a Pod allowed to use a Connector cannot
// read its credential back through the tool's own endpoints, nor mint one, whatever the
// Connector's class (here the generic git class, to a JFrog, a GitLab, a Harbor: the node's
// list holds for every class), nor through a path its class denies itself: every spelling is
// refused (403) through the reverse proxy (after the connection's route is remembered: the
// fast lane's requests read in place), the forward proxy, a CONNECT tunnel's requests and the
// Connectors API's pass-through, and none reaches the tool, while other paths along the same
// routes and connections are served.
func TestTenancyDeniedPathsKeepTheCredentialInTheProxy(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	record := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.UserAgent() != connectorstatus.ProbeUserAgent { // the controller's probes of the address
			reached = append(reached, r.Host+" "+r.URL.EscapedPath())
		}
		mu.Unlock()
		_, _ = io.WriteString(w, "what a tool answers: here the user's API key")
	}
	tool := startRecorder(t, record)
	authority, cert := loopbackCert(t)
	secure := httptest.NewUnstartedServer(http.HandlerFunc(record))
	secure.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	secure.StartTLS()
	t.Cleanup(secure.Close)

	enableMultiConnector(t)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	var git v1alpha1.ConnectorClass
	readDeployedClass(t, "git.yaml", &git)
	git.Name += "-" + rand.String(6)
	git.Spec.Proxy = &v1alpha1.ProxySpec{DeniedPaths: []string{"/internal/credential"}}
	create(t, &git)
	class := git.Name
	createSecret(t, ns, "cred", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "jfrog-secret"})
	createSecret(t, ns, "secure-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(authority.PEM)})
	for name, address := range map[string]string{"jfrog": tool.URL, "secure": secure.URL} {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: address,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "cred"}}}}
		if name == "secure" {
			c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: "secure-ca"}
		}
		create(t, c)
	}
	allowConnectors(t, ns, "builder", "jfrog", "secure")
	pod, token := publishedToken(t, env, ns, "client", "jfrog,secure")
	caPEM := []byte(visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["ca.crt"])
	allowed := "/artifactory/api/repositories"

	// expect sends allowed twice (the second along the remembered route), each denied
	// spelling, and allowed again, with send, and checks the answers.
	expect := func(mode string, send func(path string) (int, string)) {
		t.Helper()
		for i, path := range append([]string{allowed, allowed}, append(deniedSpellings, allowed)...) {
			code, body := send(path)
			want := http.StatusOK
			if path != allowed {
				want = http.StatusForbidden
			}
			if code != want || want == http.StatusForbidden && !strings.Contains(body, deniedBy(path)) {
				t.Errorf("%s, request %d (%s): %d %q, want %d", mode, i, path, code, body, want)
			}
		}
	}
	reverse := &http.Client{} // one kept-alive connection
	expect("reverse", func(path string) (int, string) {
		return do(t, reverse, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/jfrog"+path, map[string]string{"Authorization": "Bearer " + token}))
	})
	forward := forwardClient(env.proxyURL, ns+"/jfrog", token)
	expect("forward", func(path string) (int, string) {
		return do(t, forward, newRequest(t, "GET", tool.URL+path, nil))
	})
	tn, status := openTunnel(t, strings.TrimPrefix(env.proxyURL, "http://"), strings.TrimPrefix(secure.URL, "https://"), ns+"/secure", token, caPEM)
	if tn == nil {
		t.Fatalf("CONNECT: %s", status)
	}
	expect("tunnelled", func(path string) (int, string) {
		code, body, err := tn.getBody(path)
		if err != nil {
			t.Fatalf("in the tunnel, %s: %v", path, err)
		}
		return code, body
	})
	viewer := apiToken(t, ns, "viewer")
	allowConnectors(t, ns, "viewer", "jfrog")
	expect("the Connectors API's pass-through", func(path string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", connectorAPI(env, ns, "jfrog", path), map[string]string{"Authorization": "Bearer " + viewer}))
	})

	mu.Lock()
	defer mu.Unlock()
	served := 0
	for _, r := range reached {
		if strings.HasSuffix(r, allowed) {
			served++
			continue
		}
		t.Errorf("a denied path reached the tool: %s", r)
	}
	if served < 4*3 {
		t.Errorf("the tool served %d requests of %s, want the 12 sent", served, allowed)
	}
}

// TestClassDeniedPathsAreValidated: the API server refuses a denied path that is not a
// sequence of plain segments (no leading slash, an escape, a query, a parameter), naming the
// field, and takes one that is, with "*" segments and a trailing slash.
func TestClassDeniedPathsAreValidated(t *testing.T) {
	for entry, valid := range map[string]bool{
		"/api/security/apiKey":             true,
		"/personal_access_tokens/*/rotate": true,
		"/api/npm/auth/":                   true,
		"api/security/apiKey":              false,
		"/api%2Fsecurity":                  false,
		"/api/security?x=1":                false,
		"/api;x/security":                  false,
		`/api\security`:                    false,
		"/":                                false,
		"/*":                               false,
		"/*/*/":                            false,
		"/api/caf\u00e9":                   false,
	} {
		c := &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "denying-" + rand.String(6)},
			Spec: v1alpha1.ConnectorClassSpec{Proxy: &v1alpha1.ProxySpec{DeniedPaths: []string{entry}}}}
		err := cp.Client.Create(context.Background(), c)
		if valid && err != nil {
			t.Errorf("%q refused: %v", entry, err)
		}
		if !valid && (err == nil || !strings.Contains(err.Error(), "spec.proxy.deniedPaths")) {
			t.Errorf("%q: %v, want a refusal naming spec.proxy.deniedPaths", entry, err)
		}
	}
}

// deniedBy is what the refusal of a deniedSpellings path names: the class's list for the one it
// denies, the node's for the others.
func deniedBy(path string) string {
	if strings.HasSuffix(path, "/internal/credential") {
		return "spec.proxy.deniedPaths"
	}
	return "--proxy-denied-paths"
}

// TestTenancyAnOperatorsDeniedPathsReplaceTheDefaults: --proxy-denied-paths replaces the
// node's list: its entries are refused, the defaults' are served (an operator who lets Pods
// use an endpoint the defaults deny).
func TestTenancyAnOperatorsDeniedPathsReplaceTheDefaults(t *testing.T) {
	tool := startRecorder(t, nil)
	env := startProxyDriver(t, func(o *driver.Options) {
		o.ProxyDeniedPaths = []string{"/api/v1/namespaces/*/serviceaccounts/*/token", "/only/this"}
	})
	ns := newNamespace(t)
	createSecret(t, ns, "cred", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "secret"})
	newConnectorWithSecret(t, ns, "tool", gitClass(t), tool.URL, "basicAuth", "cred")
	allowConnectors(t, ns, "builder", "tool")
	token := proxyToken(t, ns, "builder")
	for path, want := range map[string]int{
		"/x/only/this": http.StatusForbidden,
		"/api/v1/namespaces/a/serviceaccounts/b/token": http.StatusForbidden,
		"/artifactory/api/security/apiKey":             http.StatusOK,
		"/api/v2.0/users/current":                      http.StatusOK,
	} {
		code, body := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool"+path, map[string]string{"Authorization": "Bearer " + token}))
		if code != want || want == http.StatusForbidden && !strings.Contains(body, "--proxy-denied-paths") {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}
}
