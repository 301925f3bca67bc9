package e2e

import (
	"cmp"
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
	"github.com/kube-connectors/connectors-csi/features"
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
	"/gitlab/-/cable",
	"/repos/acme/tool/actions/runners/registration-token",
	"/service/token",
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
	ways := startPodWays(t, &v1alpha1.ProxySpec{DeniedPaths: []string{"/internal/credential"}})
	allowed := toolRequest{method: "GET", path: "/artifactory/api/repositories"}
	var denied []toolRequest
	for _, path := range deniedSpellings {
		denied = append(denied, toolRequest{method: "GET", path: path, refusal: deniedBy(path)})
	}
	ways.expectEach(t, allowed, denied)
}

// toolRequest is a request a test's Pod sends to a Connector, and the refusal it expects ("":
// served) with its status (0: 403).
type toolRequest struct {
	method, path, contentType, body string
	refusal                         string
	status                          int
}

// podWays are a Pod's ways to two Connectors of one class (the git class, with a proxy spec of
// the test's), "jfrog" at a recording tool over HTTP and "secure" at one over TLS: each sends a
// request and returns the answer's status and body. reached is what the tools received (host,
// path and body), but for the controller's probes.
type podWays struct {
	ways    []podWay
	mu      sync.Mutex
	reached []string
}

type podWay struct {
	name string
	send func(toolRequest) (int, string)
}

// startPodWays starts the tools, a proxy driver (with enable-multi-connector and the test's
// flags on) and the Connectors, and a Pod's ways to them: the reverse proxy on one kept-alive
// connection, the forward proxy, requests inside a CONNECT tunnel (TLS terminated by the
// proxy) and the Connectors API's pass-through.
func startPodWays(t *testing.T, proxySpec *v1alpha1.ProxySpec, flags ...string) *podWays {
	pw := &podWays{}
	record := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		pw.mu.Lock()
		if r.UserAgent() != connectorstatus.ProbeUserAgent { // the controller's probes of the address
			pw.reached = append(pw.reached, strings.TrimSpace(r.Host+" "+r.URL.EscapedPath()+" "+string(body)))
		}
		pw.mu.Unlock()
		_, _ = io.WriteString(w, "what a tool answers: here the user's API key")
	}
	tool := startRecorder(t, record)
	authority, cert := loopbackCert(t)
	secure := httptest.NewUnstartedServer(http.HandlerFunc(record))
	secure.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	secure.StartTLS()
	t.Cleanup(secure.Close)

	on := map[string]string{features.KeyMultiConnector: "true"}
	for _, flag := range flags {
		on[flag] = "true"
	}
	setFlags(t, on)
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	var git v1alpha1.ConnectorClass
	readDeployedClass(t, "git.yaml", &git)
	git.Name += "-" + rand.String(6)
	git.Spec.Proxy = proxySpec
	create(t, &git)
	createSecret(t, ns, "cred", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "jfrog-secret"})
	createSecret(t, ns, "secure-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(authority.PEM)})
	for name, address := range map[string]string{"jfrog": tool.URL, "secure": secure.URL} {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: git.Name, Address: address,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "cred"}}}}
		if name == "secure" {
			c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: "secure-ca"}
		}
		create(t, c)
	}
	allowConnectors(t, ns, "builder", "jfrog", "secure")
	pod, token := publishedToken(t, env, ns, "client", "jfrog,secure")
	caPEM := []byte(visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["ca.crt"])

	reverse := &http.Client{} // one kept-alive connection
	forward := forwardClient(env.proxyURL, ns+"/jfrog", token)
	tn, status := openTunnel(t, strings.TrimPrefix(env.proxyURL, "http://"), strings.TrimPrefix(secure.URL, "https://"), ns+"/secure", token, caPEM)
	if tn == nil {
		t.Fatalf("CONNECT: %s", status)
	}
	viewer := apiToken(t, ns, "viewer")
	allowConnectors(t, ns, "viewer", "jfrog")
	send := func(c *http.Client, url, auth string) func(toolRequest) (int, string) {
		return func(r toolRequest) (int, string) {
			header := map[string]string{}
			if auth != "" {
				header["Authorization"] = auth
			}
			if r.contentType != "" {
				header["Content-Type"] = r.contentType
			}
			req := newRequest(t, r.method, url+r.path, header)
			if r.body != "" {
				req.Body, req.ContentLength = io.NopCloser(strings.NewReader(r.body)), int64(len(r.body))
			}
			return do(t, c, req)
		}
	}
	pw.ways = []podWay{
		{"reverse", send(reverse, env.proxyURL+"/namespaces/"+ns+"/connectors/jfrog", "Bearer "+token)},
		{"forward", send(forward, tool.URL, "")},
		{"tunnelled", func(r toolRequest) (int, string) {
			code, body, err := tn.send(r.method, r.path, r.contentType, r.body)
			if err != nil {
				t.Fatalf("in the tunnel, %s %s: %v", r.method, r.path, err)
			}
			return code, body
		}},
		{"the Connectors API's pass-through", send(noRedirects, connectorAPI(env, ns, "jfrog", ""), "Bearer "+viewer)},
	}
	return pw
}

// expectEach sends, each way, allowed twice (the second along the remembered route), each of
// denied, and allowed again, and checks the answers: allowed served, each denied one refused
// (403, naming its refusal) without reaching a tool.
func (pw *podWays) expectEach(t *testing.T, allowed toolRequest, denied []toolRequest) {
	t.Helper()
	for _, way := range pw.ways {
		for i, r := range append([]toolRequest{allowed, allowed}, append(denied, allowed)...) {
			code, body := way.send(r)
			want := http.StatusOK
			if r.refusal != "" {
				want = cmp.Or(r.status, http.StatusForbidden)
			}
			if code != want || !strings.Contains(body, r.refusal) {
				t.Errorf("%s, request %d (%s %s %q): %d %q, want %d", way.name, i, r.method, r.path, r.body, code, body, want)
			}
		}
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	served := 0
	for _, r := range pw.reached {
		if strings.HasSuffix(r, strings.TrimSpace(allowed.path+" "+allowed.body)) {
			served++
			continue
		}
		t.Errorf("a denied request reached the tool: %s", r)
	}
	if want := 3 * len(pw.ways); served < want {
		t.Errorf("the tools served %d requests of %s, want the %d sent", served, allowed.path, want)
	}
}

// TestClassDeniedPathsAreValidated: the API server refuses a denied path that is not a
// sequence of plain segments (no leading slash, an escape, a query, a parameter), naming the
// field, and takes one that is, with "*" segments and a trailing slash; and a denied GraphQL
// field that is not a GraphQL name.
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
		"/service/token$":                  true,
		"/*$":                              false,
		"/$":                               false,
		"/api/caf\u00e9":                   false,
	} {
		expectClassValidation(t, entry, valid, "spec.proxy.deniedPaths", &v1alpha1.ProxySpec{DeniedPaths: []string{entry}})
	}
	for field, valid := range map[string]bool{"projectSecretCreate": true, "_x9": true, "field-name": false, "1field": false, "a.b": false, "": false} {
		expectClassValidation(t, field, valid, "spec.proxy.deniedGraphQLFields", &v1alpha1.ProxySpec{DeniedGraphQLFields: []string{field}})
	}
}

// expectClassValidation creates a class of spec, which holds value, and checks that the API
// server takes it when valid, and refuses it naming field otherwise.
func expectClassValidation(t *testing.T, value string, valid bool, field string, spec *v1alpha1.ProxySpec) {
	t.Helper()
	c := &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "denying-" + rand.String(6)}, Spec: v1alpha1.ConnectorClassSpec{Proxy: spec}}
	err := cp.Client.Create(context.Background(), c)
	if valid && err != nil {
		t.Errorf("%s %q refused: %v", field, value, err)
	}
	if !valid && (err == nil || !strings.Contains(err.Error(), field)) {
		t.Errorf("%s %q: %v, want a refusal naming the field", field, value, err)
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
