package e2e

// Tenant isolation (SPEC §4.7), tried as a hostile tenant: a user who may create Connectors,
// Pods and AccessPolicies in its own namespace, nothing more. Every test runs the real driver
// (its proxy, Connectors API and status controller) against the envtest API server and real
// servers that record what reached them.

import (
	"bufio"
	"context"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/forgingtool"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// recorder is an HTTP server on the tools' loopback address that records every request and
// answers with its handler (200 "ok" when nil).
type recorder struct {
	URL string
	mu  sync.Mutex
	got []recorded
}

type recorded struct {
	Method, RequestURI, Authorization, ProxyAuthorization, UserAgent string
}

func startRecorder(t *testing.T, handler http.HandlerFunc) *recorder {
	t.Helper()
	return startRecorderOn(t, gitserver.Host, handler)
}

// startRecorderOn is startRecorder on another loopback address.
func startRecorderOn(t *testing.T, host string, handler http.HandlerFunc) *recorder {
	t.Helper()
	lis, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{URL: "http://" + lis.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.got = append(rec.got, recorded{Method: r.Method, RequestURI: r.RequestURI, Authorization: r.Header.Get("Authorization"),
			ProxyAuthorization: r.Header.Get("Proxy-Authorization"), UserAgent: r.UserAgent()})
		rec.mu.Unlock()
		if handler == nil {
			_, _ = io.WriteString(w, "ok")
			return
		}
		handler(w, r)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return rec
}

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.got...)
}

// proxied are the requests that came through the proxy: the status controller's probes, which
// may land at any time, are left out.
func (r *recorder) proxied() []recorded {
	var out []recorded
	for _, req := range r.requests() {
		if req.UserAgent != connectorstatus.ProbeUserAgent {
			out = append(out, req)
		}
	}
	return out
}

// credentialsSeen lists the Authorization values that reached the recorder.
func (r *recorder) credentialsSeen() []string {
	var out []string
	for _, req := range r.requests() {
		if req.Authorization != "" {
			out = append(out, req.Method+" "+req.RequestURI+": "+req.Authorization)
		}
	}
	return out
}

// rawStatus sends one request exactly as written (request line and headers) to addr and
// returns the status code, so that no client library cleans or re-encodes the path.
func rawStatus(t *testing.T, addr, requestLine string, header map[string]string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var b strings.Builder
	b.WriteString(requestLine + "\r\nHost: " + addr + "\r\nConnection: close\r\n")
	for k, v := range header {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// proxyToken is a token for the proxy's audience of ServiceAccount sa, bound to a Pod of it on
// the tests' node (created here with the ServiceAccount), as a token it projects itself is.
func proxyToken(t *testing.T, ns, sa string) string {
	t.Helper()
	return podToken(t, ns, sa, "node-1")
}

// podToken is proxyToken for a Pod on node.
func podToken(t *testing.T, ns, sa, node string) string {
	t.Helper()
	token, err := kubelet.ProjectedToken(context.Background(), cp.Kube, ns, sa+"-on-"+node, sa, node, driverName)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// publishedToken creates a Pod of ServiceAccount builder with a volume of the Connectors,
// publishes it and returns the Pod and its volume's token.
func publishedToken(t *testing.T, env *proxyEnv, ns, podName, connectors string) (*corev1.Pod, string) {
	t.Helper()
	pod := podWithVolume(t, env.kubelet, ns, podName, map[string]string{"connectors": connectors}, nil)
	if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	return pod, visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
}

// classWith creates a class from the built-in git class, with changes, under a unique name.
func classWith(t *testing.T, prefix string, change func(*v1alpha1.ConnectorClass)) string {
	t.Helper()
	var c v1alpha1.ConnectorClass
	readDeployedClass(t, "git.yaml", &c)
	c.Name = prefix + "-" + rand.String(6)
	change(&c)
	create(t, &c)
	return c.Name
}

func TestTenancyForeignSecretIsNeverRead(t *testing.T) {
	tool := startGitServer(t, false)
	plugin := startRecorder(t, nil)
	env := startProxyDriver(t, nil)
	victim, attacker := newNamespace(t), newNamespace(t)
	createSecret(t, victim, "creds", corev1.SecretTypeBasicAuth, map[string]string{"username": "victim", "password": "victim-password-4711"})
	git := gitClass(t)
	pluginClass := classWith(t, "plugin", func(c *v1alpha1.ConnectorClass) {
		c.Spec.API = &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: plugin.URL},
			OpenAPI: openAPIGets(map[string]map[string]string{"/plugin/projects": {"x-provider-type": "api"}})}
	})
	foreign := func(name, class, secret string) {
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: attacker},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: tool.URL,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: secret, Namespace: victim}}}})
	}
	foreign("steal", git, "creds")
	foreign("steal-absent", git, "absent")
	foreign("steal-plugin", pluginClass, "creds")
	allowConnectors(t, attacker, "builder", "steal", "steal-absent", "steal-plugin")
	_, token := publishedToken(t, env, attacker, "thief", "steal")
	viewer := apiToken(t, attacker, "viewer")
	allowConnectors(t, attacker, "viewer", "steal", "steal-plugin")
	refs := "/repo.git/info/refs?service=git-upload-pack"
	api := func(connector, rest string) string { return connectorAPI(env, attacker, connector, rest) }
	const refusal = "may only use Secrets of its own namespace"

	t.Run("reverse proxy", func(t *testing.T) {
		code, body := do(t, noRedirects, newRequest(t, "GET", fmt.Sprintf("%s/namespaces/%s/connectors/steal%s", env.proxyURL, attacker, refs),
			map[string]string{"Authorization": "Bearer " + token}))
		if code != http.StatusForbidden || !strings.Contains(body, refusal) {
			t.Fatalf("status %d %q, want 403 naming the rule", code, body)
		}
	})
	t.Run("forward proxy", func(t *testing.T) {
		code, body := do(t, forwardClient(env.proxyURL, attacker+"/steal", token), newRequest(t, "GET", tool.URL+refs, nil))
		if code != http.StatusForbidden || !strings.Contains(body, refusal) {
			t.Fatalf("status %d %q, want 403", code, body)
		}
	})
	for _, tc := range []struct{ name, url string }{
		{"API passthrough", api("steal", refs)},
		{"API gitrefs", api("steal", "/git/gitrefs?repositoryUrl="+tool.URL+"/repo.git")},
		{"API plugin headers", api("steal-plugin", "/plugin/projects")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, st := apiCall(t, "GET", tc.url, viewer)
			if code != http.StatusForbidden || !strings.Contains(st.Message, refusal) {
				t.Fatalf("status %d %q, want 403", code, st.Message)
			}
		})
	}
	t.Run("status says so, alike for a Secret that exists and one that does not", func(t *testing.T) {
		got := map[string]string{}
		for _, c := range []string{"steal", "steal-absent"} {
			conn := waitCondition(t, attacker, c, v1alpha1.ConditionSecretReady, metav1.ConditionFalse, "SecretOutsideNamespace")
			for _, cond := range conn.Status.Conditions {
				if cond.Type == v1alpha1.ConditionSecretReady {
					got[c] = strings.ReplaceAll(strings.ReplaceAll(cond.Message, "absent", "X"), "creds", "X")
					got[c] = strings.ReplaceAll(got[c], "steal-X", "steal")
				}
			}
		}
		if got["steal"] != got["steal-absent"] {
			t.Fatalf("the messages tell the Secrets apart: %q vs %q", got["steal"], got["steal-absent"])
		}
	})
	for _, seen := range tool.Requests() {
		if seen.Authorization != "" {
			t.Errorf("the tool received a credential: %s %s", seen.Method, seen.Path)
		}
	}
	if n := len(plugin.proxied()); n != 0 {
		t.Errorf("the plugin service received %d requests", n)
	}
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.ObjectRef != nil && ev.ObjectRef.Namespace == victim && ev.ObjectRef.Resource == "secrets" && ev.Verb != "create"
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range reads {
		t.Errorf("the victim's Secret %s was read: %s by %s", ev.ObjectRef.Name, ev.Verb, ev.User.Username)
	}
}

// pushThroughVolume pushes a small random image to ref with only the volume's files.
func pushThroughVolume(t *testing.T, vol, ref string) error {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	return remote.Write(r, img, remote.WithTransport(volumeTransport(t, vol)))
}

func TestTenancyRegistryTokensArePerConnectorAndCredential(t *testing.T) {
	reg := startRegistry(t)
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	oci := deployedClass(t, "oci.yaml")
	owner, other := newNamespace(t), newNamespace(t)
	ociConnector(t, owner, "registry", oci, reg, reg.Password)
	ociConnector(t, other, "registry", oci, reg, "not-the-password") // the same username, a wrong password
	allowConnectors(t, owner, "builder", "registry")
	allowConnectors(t, other, "builder", "registry")
	ownerPod, _ := publishedToken(t, env, owner, "owner", "registry")
	otherPod, _ := publishedToken(t, env, other, "other", "registry")
	host := strings.TrimPrefix(reg.URL, "http://")

	if err := pushThroughVolume(t, env.kubelet.TargetPath(ownerPod, "connectors"), host+"/team/app:v1"); err != nil {
		t.Fatalf("the owner's push: %v", err)
	}
	if err := pushThroughVolume(t, env.kubelet.TargetPath(otherPod, "connectors"), host+"/team/app:v2"); err == nil {
		t.Fatal("a Connector with a wrong password pushed with the token another Connector earned")
	}
	r, _ := name.ParseReference(host+"/team/app:v1", name.Insecure)
	if _, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(volumeTransport(t, env.kubelet.TargetPath(otherPod, "connectors")))); err == nil {
		t.Fatal("a Connector with a wrong password pulled with the token another Connector earned")
	}
	wrong := "Basic " + basic(reg.Username, "not-the-password")
	asked := false
	for _, s := range reg.Requests() {
		asked = asked || (s.Server == "token" && s.Authorization == wrong)
	}
	if !asked {
		t.Error("the other Connector's own credential was never sent to the token service")
	}
}

func TestTenancyPathsStayUnderTheAddress(t *testing.T) {
	tool := startRecorder(t, nil)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	newConnector(t, ns, "org-a", gitClass(t), tool.URL+"/org-a")
	allowConnectors(t, ns, "builder", "org-a")
	_, token := publishedToken(t, env, ns, "paths", "org-a")
	viewer := apiToken(t, ns, "viewer")
	allowConnectors(t, ns, "viewer", "org-a")
	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	toolHost := strings.TrimPrefix(tool.URL, "http://")
	reverse := "/namespaces/" + ns + "/connectors/org-a"
	api := connectorsapi.ConnectorPath(ns, "org-a")
	bearer := map[string]string{"Authorization": "Bearer " + token}
	proxyAuth := map[string]string{"Proxy-Authorization": "Basic " + basic(ns+"/org-a", token)}
	apiAuth := map[string]string{"Authorization": "Bearer " + viewer}
	climbs := []string{"/../org-b/x", "/%2e%2e/org-b/x", "/..%2forg-b/x", "/x/..%2F..%2Forg-b", "/%252e%252e/org-b",
		`/..\org-b`, "/..;/org-b", "/x/%2E%2E/%2E%2E/org-b"}
	for _, climb := range climbs {
		for _, tc := range []struct {
			name, line string
			header     map[string]string
		}{
			{"reverse", "GET " + reverse + climb + " HTTP/1.1", bearer},
			{"forward", "GET " + tool.URL + "/org-a" + climb + " HTTP/1.1", proxyAuth},
			{"API passthrough", "GET " + api + climb + " HTTP/1.1", apiAuth},
			{"gitrefs repositoryUrl", "GET " + api + "/git/gitrefs?repositoryUrl=http://" + toolHost + "/org-a" + climb + " HTTP/1.1", apiAuth},
		} {
			t.Run(tc.name+" "+climb, func(t *testing.T) {
				if code, body := rawStatus(t, proxyAddr, tc.line, tc.header); code != http.StatusBadRequest {
					t.Errorf("status %d %q, want 400", code, body)
				}
			})
		}
	}
	for _, r := range tool.proxied() {
		t.Errorf("a climbing request reached the tool: %s %s", r.Method, r.RequestURI)
	}
	t.Run("encoded slashes pass unchanged", func(t *testing.T) {
		if code, body := rawStatus(t, proxyAddr, "GET "+reverse+"/group%2Fproject/x HTTP/1.1", bearer); code != http.StatusOK {
			t.Fatalf("status %d %q", code, body)
		}
		got := tool.proxied()
		if len(got) != 1 || got[0].RequestURI != "/org-a/group%2Fproject/x" {
			t.Fatalf("the tool saw %+v, want /org-a/group%%2Fproject/x", got)
		}
	})
}

func TestTenancyNoCredentialFollowsARedirect(t *testing.T) {
	evil := startRecorder(t, nil)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	oci := deployedClass(t, "oci.yaml")
	registryConnector := func(name, address string) {
		createSecret(t, ns, name, v1alpha1.SecretTypeDistributionRegistryAuth, map[string]string{"username": "bot", "password": "registry-secret-" + name})
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: oci, Address: address,
				Auth: &v1alpha1.ConnectorAuth{Name: "registryToken", SecretRef: &v1alpha1.SecretRef{Name: name}}}})
	}
	challenge := func(realm string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/token") {
				http.Redirect(w, r, evil.URL+"/token", http.StatusTemporaryRedirect)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="x"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}
	// A registry whose own token service redirects elsewhere (same host name, other port).
	var redirecting *recorder
	redirecting = startRecorder(t, func(w http.ResponseWriter, r *http.Request) { challenge(redirecting.URL+"/token")(w, r) })
	registryConnector("redirecting", redirecting.URL)
	// A registry whose challenge names a realm outside the Connector's addresses, by a name
	// (go-containerregistry refuses private IP literals, not names).
	evilByName := startRecorderOn(t, "127.0.0.1", nil)
	registryConnector("foreign-realm", startRecorder(t, challenge(strings.Replace(evilByName.URL, "127.0.0.1", "localhost", 1)+"/token")).URL)
	// A tool whose auth probe answer is a redirect.
	probed := startRecorder(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, evil.URL+"/probe", http.StatusFound) })
	probeClass := classWith(t, "probe", func(c *v1alpha1.ConnectorClass) {
		c.Spec.LivenessProbe = nil
		c.Spec.AuthProbes = []v1alpha1.AuthProbe{{AuthName: "basicAuth", Probe: v1alpha1.Probe{HTTP: &v1alpha1.HTTPProbe{Path: "/user"}}}}
	})
	createSecret(t, ns, "probed", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "probe-secret"})
	newConnectorWithSecret(t, ns, "probed", probeClass, probed.URL, "basicAuth", "probed")
	allowConnectors(t, ns, "builder", "redirecting")
	pod, _ := publishedToken(t, env, ns, "puller", "redirecting")
	viewer := apiToken(t, ns, "viewer")
	allowConnectors(t, ns, "viewer", "foreign-realm")

	t.Run("registry token fetch", func(t *testing.T) {
		r, _ := name.ParseReference(strings.TrimPrefix(redirecting.URL, "http://")+"/team/app:v1", name.Insecure)
		_, _ = remote.Head(r, remote.WithTransport(volumeTransport(t, env.kubelet.TargetPath(pod, "connectors"))))
		asked := func() bool {
			for _, r := range redirecting.requests() {
				if strings.HasPrefix(r.RequestURI, "/token") {
					return true
				}
			}
			return false
		}
		if !kubelet.WaitUntil(5*time.Second, asked) {
			t.Fatal("the token service was never asked")
		}
	})
	t.Run("Connectors API registry list", func(t *testing.T) {
		code, _, st := apiCall(t, "GET", connectorAPI(env, ns, "foreign-realm", "/oci/repositories"), viewer)
		if code == http.StatusOK {
			t.Fatalf("listed through a foreign realm: %s", st.Message)
		}
	})
	t.Run("status auth probe", func(t *testing.T) {
		waitCondition(t, ns, "probed", v1alpha1.ConditionAuthReady, metav1.ConditionFalse, "Rejected")
	})
	if seen := append(evil.credentialsSeen(), evilByName.credentialsSeen()...); len(seen) > 0 {
		t.Fatalf("a credential reached the redirect target or foreign realm: %q", seen)
	}
}

// TestTenancyToolSessionsStayWithTheProxy: a session a tool opens for the credential the proxy
// injects (a cookie) is that credential's equivalent; a client who may use the Connector but not
// hold its credential would hold it past its grant. The proxy's answers carry none, through the
// fast lane's remembered route as through net/http's, in reverse and forward.
func TestTenancyToolSessionsStayWithTheProxy(t *testing.T) {
	tool := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "SESSION=derived-from-the-credential; Path=/")
		w.Header().Add("Set-Cookie2", "OLD=derived")
		_, _ = io.WriteString(w, "ok")
	})
	env, ns, token := basicAuthTool(t, tool.URL)
	// One kept-alive connection each: its later requests take the remembered route.
	reverse, forward := &http.Client{Timeout: 20 * time.Second}, forwardClient(env.proxyURL, ns+"/tool", token)
	for mode, send := range map[string]func() (*http.Response, error){
		"reverse": func() (*http.Response, error) {
			req := newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/x", map[string]string{"Authorization": "Bearer " + token})
			return reverse.Do(req)
		},
		"forward": func() (*http.Response, error) {
			return forward.Do(newRequest(t, "GET", tool.URL+"/x", nil))
		},
	} {
		for i := range 3 {
			res, err := send()
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || len(res.Header.Values("Set-Cookie")) != 0 || len(res.Header.Values("Set-Cookie2")) != 0 {
				t.Errorf("%s, request %d: %d with cookies %q %q, want 200 and none", mode, i, res.StatusCode, res.Header.Values("Set-Cookie"), res.Header.Values("Set-Cookie2"))
			}
		}
	}
	if n := len(tool.proxied()); n < 6 {
		t.Errorf("the tool answered %d requests, want the 6 sent", n)
	}
}

// TestTenancyToolChallengesStayWithTheProxy: the reverse proxy's client holds the Pod token as
// its credential for the proxy's address, and Docker-style clients send that credential where a
// Bearer challenge's realm points, any host the tool's owner names. A tool's 401 reaches the
// reverse client with the proxy's own Basic challenge only, through the fast lane's remembered
// route as through net/http's; the forward client, whose Pod token is its proxy's only, gets
// the tool's challenge (an anonymous registry's is its own to answer).
func TestTenancyToolChallengesStayWithTheProxy(t *testing.T) {
	const realm = `Bearer realm="http://token.elsewhere.example/token",service="registry"`
	tool := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/bare") { // a 401 without a challenge otherwise
			w.Header().Add("WWW-Authenticate", realm)
			w.Header().Add("WWW-Authenticate", "Negotiate")
		}
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, "who are you")
	})
	env, ns, token := basicAuthTool(t, tool.URL)
	reverse, forward := &http.Client{Timeout: 20 * time.Second}, forwardClient(env.proxyURL, ns+"/tool", token)
	for mode, tc := range map[string]struct {
		send func() (*http.Response, error)
		want []string
	}{
		"reverse": {func() (*http.Response, error) {
			return reverse.Do(newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/v2/", map[string]string{"Authorization": "Bearer " + token}))
		}, []string{`Basic realm="connectors-proxy"`}},
		"forward": {func() (*http.Response, error) {
			return forward.Do(newRequest(t, "GET", tool.URL+"/v2/", nil))
		}, []string{realm, "Negotiate"}},
		"reverse, a 401 without a challenge": {func() (*http.Response, error) {
			return reverse.Do(newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/bare", map[string]string{"Authorization": "Bearer " + token}))
		}, []string{`Basic realm="connectors-proxy"`}},
	} {
		for i := range 3 { // one kept-alive connection: the later requests take the remembered route
			res, err := tc.send()
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if got := res.Header.Values("WWW-Authenticate"); res.StatusCode != http.StatusUnauthorized || !slices.Equal(got, tc.want) {
				t.Errorf("%s, request %d: %d challenging %q, want 401 challenging %q", mode, i, res.StatusCode, got, tc.want)
			}
		}
	}
	if n := len(tool.proxied()); n < 9 {
		t.Errorf("the tool answered %d requests, want the 9 sent", n)
	}
}

func TestTenancyProxyLoopIsDetected(t *testing.T) {
	first, second := startProxyDriver(t, nil), startProxyDriver(t, nil)
	ns := newNamespace(t)
	// The Connectors' credential is a token the proxies accept: each points at the other proxy.
	loopToken := proxyToken(t, ns, "looper")
	allowConnectors(t, ns, "looper", "ping", "pong")
	bearerClass := classWith(t, "bearer", func(c *v1alpha1.ConnectorClass) {
		c.Spec.Auth = &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "token", SecretType: v1alpha1.SecretTypeBearerToken}}}
		c.Spec.LivenessProbe = nil
	})
	createSecret(t, ns, "loop", v1alpha1.SecretTypeBearerToken, map[string]string{"token": loopToken})
	newConnectorWithSecret(t, ns, "ping", bearerClass, second.proxyURL+"/namespaces/"+ns+"/connectors/pong", "token", "loop")
	newConnectorWithSecret(t, ns, "pong", bearerClass, first.proxyURL+"/namespaces/"+ns+"/connectors/ping", "token", "loop")
	client := &http.Client{Timeout: 20 * time.Second}
	code, body := do(t, client, newRequest(t, "GET", first.proxyURL+"/namespaces/"+ns+"/connectors/ping/x",
		map[string]string{"Authorization": "Bearer " + loopToken}))
	if code != http.StatusLoopDetected || !strings.Contains(body, "Connectors proxy") {
		t.Fatalf("status %d %q, want 508", code, body)
	}
}

// failingDial is a dialer that must never be called: every destination of its test is refused.
func failingDial(t *testing.T) func(context.Context, string, string) (net.Conn, error) {
	return func(_ context.Context, network, addr string) (net.Conn, error) {
		t.Errorf("the driver dialed %s %s", network, addr)
		return nil, errors.New("test: dialing is not allowed here")
	}
}

func TestTenancyDestinationsAreRefusedBeforeAnyDial(t *testing.T) {
	// No name is ever looked up for real: metadata.test stands for a name that resolves to the
	// metadata service, zoned.test for one that resolves to it with a zone (as /etc/hosts may
	// write an address), which netip compares unequal to it.
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "metadata.test":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		case "zoned.test":
			return []netip.Addr{netip.MustParseAddr("fd00:ec2::254%eth0")}, nil
		}
		return nil, fmt.Errorf("test: no lookup of %s", host)
	}
	enableMultiConnector(t)
	env := startProxyDriver(t, func(o *driver.Options) {
		o.AllowLoopbackDestinations = false
		o.Dial = failingDial(t)
		o.Resolve = resolve
		o.NAT64Prefixes = []netip.Prefix{netip.MustParsePrefix("64:ff9b:1:ab00::/56")} // the network's own (--nat64-prefixes)
	})
	ns := newNamespace(t)
	git := gitClass(t)
	addresses := map[string]string{
		"metadata": "http://169.254.169.254/latest", "metadata-name": "http://metadata.test/latest", "metadata-zoned": "http://zoned.test/latest",
		"metadata-mapped": "http://[::ffff:169.254.169.254]/latest", "link-local-v6": "http://[fe80::1]/x",
		"unspecified": "http://0.0.0.0:8080/x", "unspecified-v6": "http://[::]:8080/x",
		"multicast": "http://224.0.0.1/x", "broadcast": "http://255.255.255.255/x",
		"loopback": "http://127.0.0.2:9/x",
		// Cloud metadata and host services outside link-local, and the metadata service
		// through the NAT64 prefix.
		"alibaba-metadata": "http://100.100.100.200/latest", "aws-metadata-v6": "http://[fd00:ec2::254]/latest",
		"gcp-metadata-v6": "http://[fd20:ce::254]/computeMetadata", "azure-wireserver": "http://168.63.129.16/machine",
		"nat64-metadata": "http://[64:ff9b::a9fe:a9fe]/latest", "local-nat64-metadata": "http://[64:ff9b:1:aba9:fe:a9fe::]/latest",
	}
	// The operator's --refused-destinations, on loopback (which a second driver allows).
	const operatorRefused = "http://127.0.0.77:9/x"
	var names []string
	for n, a := range addresses {
		newConnector(t, ns, n, git, a)
		names = append(names, n)
	}
	newConnector(t, ns, "operator-refused", git, operatorRefused)
	names = append(names, "operator-refused")
	// Drivers of later tests probe every Connector of the cluster with the real dialer: none
	// of these is left for them.
	t.Cleanup(func() {
		for _, name := range names {
			_ = cp.Client.Delete(context.Background(), &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})
		}
	})
	allowConnectors(t, ns, "builder", names...)
	_, token := publishedToken(t, env, ns, "ssrf", strings.Join(names, ","))
	// refusedBy checks that the proxy at proxyURL refuses the Connector n at address a, reverse
	// and forward, saying why.
	refusedBy := func(t *testing.T, proxyURL, n, a, why string) {
		t.Helper()
		code, body := do(t, noRedirects, newRequest(t, "GET", proxyURL+"/namespaces/"+ns+"/connectors/"+n+"/y",
			map[string]string{"Authorization": "Bearer " + token}))
		if code != http.StatusForbidden || !strings.Contains(body, why) {
			t.Errorf("reverse: status %d %q, want 403 saying %q", code, body, why)
		}
		code, body = do(t, forwardClient(proxyURL, ns+"/"+n, token), newRequest(t, "GET", a, nil))
		if code != http.StatusForbidden || !strings.Contains(body, why) {
			t.Errorf("forward: status %d %q, want 403 saying %q", code, body, why)
		}
	}
	t.Run("operator-refused", func(t *testing.T) {
		platform := startProxyDriver(t, func(o *driver.Options) {
			// Its status controller probes the other Connectors too (127.0.0.2 is loopback,
			// which this driver allows): no dial is made, and only the operator's is a fault;
			// their names are looked up through the test's resolver, never for real.
			o.Resolve = resolve
			o.Dial = func(_ context.Context, network, addr string) (net.Conn, error) {
				if addr == "127.0.0.77:9" {
					t.Errorf("the driver dialed %s %s", network, addr)
				}
				return nil, errors.New("test: dialing is not allowed here")
			}
			o.RefusedDestinations = []netip.Prefix{netip.MustParsePrefix("127.0.0.77/32")}
		})
		refusedBy(t, platform.proxyURL, "operator-refused", operatorRefused, "--refused-destinations")
	})
	for n, a := range addresses {
		t.Run(n, func(t *testing.T) {
			refusedBy(t, env.proxyURL, n, a, "is not allowed")
			c := waitCondition(t, ns, n, v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "DestinationRefused")
			for _, cond := range c.Status.Conditions {
				if cond.Type == v1alpha1.ConditionLivenessReady && strings.Contains(cond.Message, "dial") {
					t.Errorf("the condition carries a dial error: %q", cond.Message)
				}
			}
		})
	}
	t.Run("the driver's own listener", func(t *testing.T) {
		var self string
		own := startProxyDriver(t, func(o *driver.Options) {
			o.Resolve = resolve
			o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == self {
					t.Errorf("the driver dialed its own listener %s", addr)
				}
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
		})
		self = strings.TrimPrefix(own.proxyURL, "http://")
		newConnector(t, ns, "self", git, own.proxyURL+"/namespaces/"+ns+"/connectors/self")
		allowConnectorsAs(t, ns, "builder", "use-self", "self")
		_, token := publishedToken(t, own, ns, "self-loop", "self")
		code, body := do(t, noRedirects, newRequest(t, "GET", own.proxyURL+"/namespaces/"+ns+"/connectors/self/y",
			map[string]string{"Authorization": "Bearer " + token}))
		if code != http.StatusForbidden || !strings.Contains(body, "a listener of this driver") {
			t.Fatalf("status %d %q, want 403", code, body)
		}
	})
}

// tunnel is a CONNECT tunnel through the proxy with TLS to the proxy's leaf inside.
type tunnel struct {
	conn *tls.Conn
	r    *bufio.Reader
	host string
}

// openTunnel sends CONNECT dest and, on 200, starts TLS trusting the proxy CA of caPEM.
func openTunnel(t *testing.T, proxyAddr, dest, connectors, token string, caPEM []byte) (*tunnel, string) {
	t.Helper()
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", dest, dest, basic(connectors, token))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		return nil, fmt.Sprintf("%d %s", res.StatusCode, body)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	host, _, _ := net.SplitHostPort(dest)
	tc := tls.Client(&prefixConn{Conn: conn, r: br}, &tls.Config{RootCAs: roots, ServerName: host})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return &tunnel{conn: tc, r: bufio.NewReader(tc), host: dest}, "200"
}

// prefixConn reads first what the CONNECT response's reader had buffered.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// get sends one GET inside the tunnel and returns its status code.
func (tn *tunnel) get(path string) (int, error) {
	code, _, err := tn.getBody(path)
	return code, err
}

// getBody is get, with the answer's body.
func (tn *tunnel) getBody(path string) (int, string, error) {
	return tn.send("GET", path, "", "")
}

// send sends one request inside the tunnel, with a body of contentType when body is not
// empty, and returns its answer's status and body.
func (tn *tunnel) send(method, path, contentType, body string) (int, string, error) {
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, tn.host)
	if contentType != "" {
		head += "Content-Type: " + contentType + "\r\n"
	}
	if body != "" {
		head += fmt.Sprintf("Content-Length: %d\r\n", len(body))
	}
	if _, err := io.WriteString(tn.conn, head+"\r\n"+body); err != nil {
		return 0, "", err
	}
	res, err := http.ReadResponse(tn.r, nil)
	if err != nil {
		return 0, "", err
	}
	answer, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	return res.StatusCode, string(answer), err
}

func TestTenancyConnectTunnels(t *testing.T) {
	secure := startGitServer(t, true)
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	gitConnector(t, ns, "secure", gitClass(t), secure)
	allowConnectors(t, ns, "builder", "secure")
	pod, token := publishedToken(t, env, ns, "tunneler", "secure")
	caPEM := []byte(visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["ca.crt"])
	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	dest := strings.TrimPrefix(secure.URL, "https://")
	refs := "/repo.git/info/refs?service=git-upload-pack"

	t.Run("CONNECT is authorized before a leaf is minted", func(t *testing.T) {
		stranger := proxyToken(t, ns, "stranger")
		if tn, status := openTunnel(t, proxyAddr, dest, ns+"/secure", stranger, caPEM); tn != nil || !strings.HasPrefix(status, "403") {
			t.Fatalf("a stranger's CONNECT: %s, want 403", status)
		}
	})
	t.Run("every request in a tunnel is authenticated", func(t *testing.T) {
		tn, status := openTunnel(t, proxyAddr, dest, ns+"/secure", token, caPEM)
		if tn == nil {
			t.Fatalf("CONNECT: %s", status)
		}
		if code, err := tn.get(refs); err != nil || code != http.StatusOK {
			t.Fatalf("first request: %d %v", code, err)
		}
		if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		if err := cp.Kube.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		if !kubelet.WaitUntil(20*time.Second, func() bool {
			code, _ := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/secure"+refs,
				map[string]string{"Authorization": "Bearer " + token}))
			return code == http.StatusUnauthorized
		}) {
			t.Fatal("the deleted Pod's token is still accepted outside the tunnel")
		}
		if !kubelet.WaitUntil(20*time.Second, func() bool { code, err := tn.get(refs); return err != nil || code == http.StatusProxyAuthRequired }) {
			t.Fatal("the deleted Pod's token still works inside its open tunnel")
		}
	})
	t.Run("a tunnel ends at its lifetime", func(t *testing.T) {
		short := startProxyDriver(t, func(o *driver.Options) { o.TunnelLifetime = 2 * time.Second })
		pod, token := publishedToken(t, short, ns, "short-lived", "secure")
		caPEM := []byte(visibleFiles(t, short.kubelet.TargetPath(pod, "connectors"))["ca.crt"])
		tn, status := openTunnel(t, strings.TrimPrefix(short.proxyURL, "http://"), dest, ns+"/secure", token, caPEM)
		if tn == nil {
			t.Fatalf("CONNECT: %s", status)
		}
		if code, err := tn.get(refs); err != nil || code != http.StatusOK {
			t.Fatalf("first request: %d %v", code, err)
		}
		_ = tn.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := tn.r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the tunnel was still open 30 s into a 2 s lifetime (%v)", err)
		}
	})
}

// grantPodProxyVerbs grants connectors/proxy with only the given verbs on a Connector, scoped
// to one Pod.
func grantPodProxyVerbs(t *testing.T, ns, pod, connector string, verbs ...string) {
	t.Helper()
	name := "proxy-verbs-" + pod
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors/proxy/v1/pod/" + ns + "/" + pod},
		ResourceNames: []string{connector}, Verbs: verbs,
	}}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns}}})
}

func TestTenancyMethodsNeedTheirVerb(t *testing.T) {
	tool := startGitServer(t, false)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	pod, token := publishedToken(t, env, ns, "reader", "tool")
	grantPodProxyVerbs(t, ns, pod.Name, "tool", "get")
	setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	url := env.proxyURL + "/namespaces/" + ns + "/connectors/tool/repo.git/info/refs?service=git-upload-pack"
	call := func(method string) (int, string) {
		return do(t, noRedirects, newRequest(t, method, url, map[string]string{"Authorization": "Bearer " + token}))
	}
	if !kubelet.WaitUntil(15*time.Second, func() bool { code, _ := call("GET"); return code == http.StatusOK }) {
		t.Fatal("a read grant does not let GET through")
	}
	if !kubelet.WaitUntil(15*time.Second, func() bool { code, _ := call("POST"); return code == http.StatusForbidden }) {
		t.Fatal("the flag did not take effect: POST passes with a read grant")
	}
	for _, method := range []string{"PROPFIND", "MKCOL", "LOCK", "FROBNICATE"} {
		if code, body := call(method); code != http.StatusForbidden || !strings.Contains(body, "may not create connectors/proxy") {
			t.Errorf("%s with a read grant: status %d %q, want 403", method, code, body)
		}
	}
	if code, body := call("TRACE"); code != http.StatusMethodNotAllowed {
		t.Errorf("TRACE: status %d %q, want 405 (it would echo the injected credential)", code, body)
	}
	// Some frameworks run the method a header names instead of the request's: a GET that says
	// DELETE needs delete. Both on the fast lane's connection and on net/http's. CGI, WSGI and
	// Rack servers read a header with '_' for '-' as the same, and Rack upper-cases the method.
	overridden := func(header, method string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + token, header: method}))
	}
	for _, header := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X_HTTP_METHOD_OVERRIDE", "x-http_method"} {
		if code, body := overridden(header, "delete"); code != http.StatusForbidden || !strings.Contains(body, "may not delete connectors/proxy") {
			t.Errorf("GET with %s: delete and a read grant: status %d %q, want 403", header, code, body)
		}
	}
	if code, body := overridden("X-HTTP-Method-Override", "GET, DELETE"); code != http.StatusForbidden || !strings.Contains(body, "may not delete connectors/proxy") {
		t.Errorf("GET with X-HTTP-Method-Override: GET, DELETE and a read grant: status %d %q, want 403", code, body)
	}
	if code, body := overridden("X-HTTP-Method-Override", "TRACE"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET with X-HTTP-Method-Override: TRACE: status %d %q, want 405", code, body)
	}
	if code, body := overridden("X-HTTP-Method-Override", "HEAD"); code != http.StatusOK {
		t.Errorf("GET with X-HTTP-Method-Override: HEAD and a read grant: status %d %q, want 200", code, body)
	}
	// Others take it from a _method query parameter (Express's method-override, Symfony,
	// Laravel), read as loosely as PHP reads names.
	for _, query := range []string{"&_method=DELETE", "&%5Fmethod=delete", "&.method=DELETE"} {
		code, body := do(t, noRedirects, newRequest(t, "GET", url+query, map[string]string{"Authorization": "Bearer " + token}))
		if code != http.StatusForbidden || !strings.Contains(body, "may not delete connectors/proxy") || !strings.Contains(body, "_method query parameter") {
			t.Errorf("GET with %s and a read grant: status %d %q, want 403 naming the parameter", query, code, body)
		}
	}
	// On one kept-alive connection, after a plain GET the fast lane remembers the route by.
	host := strings.TrimPrefix(env.proxyURL, "http://")
	conn := dialProxy(t, host)
	br := bufio.NewReader(conn)
	for i, extra := range []struct{ query, header string }{{"", ""}, {"", "X-HTTP-Method-Override: DELETE\r\n"},
		{"", "X_HTTP_METHOD_OVERRIDE: DELETE\r\n"}, {"&_method=DELETE", ""}} {
		writeRaw(t, conn, "GET "+strings.TrimPrefix(url, env.proxyURL)+extra.query+" HTTP/1.1\r\nHost: "+host+
			"\r\nAuthorization: Bearer "+token+"\r\n"+extra.header+"\r\n")
		res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		want := http.StatusForbidden
		if i == 0 {
			want = http.StatusOK
		}
		if res.StatusCode != want {
			t.Errorf("kept-alive request %d (%q): status %d, want %d", i, extra, res.StatusCode, want)
		}
	}
	// A POST's body is not read for a _method (a form's, or Laravel's JSON): a tool may do any
	// write from a POST anyway, and write verbs are no boundary between each other. A POST of a
	// form (curl's -d) passes with create.
	writer, writerToken := publishedToken(t, env, ns, "writer", "tool")
	grantPodProxyVerbs(t, ns, writer.Name, "tool", "get", "create")
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		req, err := http.NewRequest("POST", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/repo.git/git-upload-pack", strings.NewReader("a=b"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+writerToken)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		code, body := do(t, noRedirects, req)
		return code != http.StatusForbidden && !strings.Contains(body, "connectors/proxy")
	}) {
		t.Error("a create grant does not let a POST of a form through")
	}
	// An upgrade needs create, and an override's verb all the same.
	req := newRequest(t, "GET", url+"&_method=DELETE", map[string]string{"Authorization": "Bearer " + writerToken,
		"Connection": "Upgrade", "Upgrade": "websocket"})
	if code, body := do(t, noRedirects, req); code != http.StatusForbidden || !strings.Contains(body, "may not delete connectors/proxy") {
		t.Errorf("an upgrade with _method=DELETE and a create grant: status %d %q, want 403", code, body)
	}
}

// apiCallerWithFlags starts a driver, a Git server and a Connector of it, named connector, in a
// new namespace, whose ServiceAccount sa may get it and calls the API with the token returned;
// the feature flags are set until the test ends.
func apiCallerWithFlags(t *testing.T, connector, sa string, flags map[string]string) (tool *gitserver.Server, env *proxyEnv, ns, token string) {
	t.Helper()
	tool = startGitServer(t, false)
	env = startProxyDriver(t, nil)
	ns = newNamespace(t)
	gitConnector(t, ns, connector, gitClass(t), tool)
	token = apiToken(t, ns, sa)
	allowConnectors(t, ns, sa, connector)
	setFlags(t, flags)
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	return tool, env, ns, token
}

func TestTenancyConnectorsAPINeedsApisUnderApproval(t *testing.T) {
	// get is what a gated workload holds, to mount the Connector.
	tool, env, ns, viewer := apiCallerWithFlags(t, "git", "gated",
		map[string]string{"enable-connector-proxy-permissions": "true", "enable-connectors-approval": "true"})
	gitrefs := connectorAPI(env, ns, "git", "/git/gitrefs?repositoryUrl="+tool.URL+"/repo.git")
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		code, _, st := apiCall(t, "GET", gitrefs, viewer)
		return code == http.StatusForbidden && strings.Contains(st.Message, "connectors/apis")
	}) {
		t.Fatal("with approval on, get on the Connector alone opened the tool through the API")
	}
	grantAPIs(t, ns, "gated", "git")
	if !kubelet.WaitUntil(15*time.Second, func() bool { code, _, _ := apiCall(t, "GET", gitrefs, viewer); return code == http.StatusOK }) {
		t.Fatal("connectors/apis did not let the call through")
	}
}

func TestTenancyForbiddenAndMissingConnectorsLookAlike(t *testing.T) {
	secure := startGitServer(t, true)
	env := startProxyDriver(t, nil)
	owner, strangerNS := newNamespace(t), newNamespace(t)
	gitConnector(t, owner, "tool", gitClass(t), secure)
	stranger := proxyToken(t, strangerNS, "stranger")
	strangerAPI := apiToken(t, strangerNS, "stranger-ui")
	same := func(a, b string) bool {
		return strings.ReplaceAll(a, "/tool", "/X") == strings.ReplaceAll(b, "/missing", "/X")
	}
	t.Run("reverse proxy", func(t *testing.T) {
		req := func(name string) (int, string) {
			return do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+owner+"/connectors/"+name+"/repo.git",
				map[string]string{"Authorization": "Bearer " + stranger}))
		}
		c1, b1 := req("tool")
		c2, b2 := req("missing")
		if c1 != http.StatusForbidden || c2 != c1 || !same(b1, b2) {
			t.Fatalf("existing: %d %q; missing: %d %q; want both 403 alike", c1, b1, c2, b2)
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		dest := strings.TrimPrefix(secure.URL, "https://")
		_, s1 := openTunnel(t, strings.TrimPrefix(env.proxyURL, "http://"), dest, owner+"/tool", stranger, nil)
		_, s2 := openTunnel(t, strings.TrimPrefix(env.proxyURL, "http://"), dest, owner+"/missing", stranger, nil)
		if !strings.HasPrefix(s1, "403") || !same(s1, s2) {
			t.Fatalf("existing: %q; missing: %q; want both 403 alike", s1, s2)
		}
	})
	t.Run("volume", func(t *testing.T) {
		publish := func(name string) error {
			pod := podWithVolume(t, env.kubelet, strangerNS, "names-"+name, map[string]string{"connectors": owner + "/" + name}, nil)
			return env.kubelet.Publish(context.Background(), pod, "connectors")
		}
		e1, e2 := status.Convert(publish("tool")), status.Convert(publish("missing"))
		quoted := func(m, name string) string { return strings.ReplaceAll(m, `"`+name+`"`, `"X"`) }
		if e1.Code() != codes.PermissionDenied || e2.Code() != e1.Code() || !same(quoted(e1.Message(), "tool"), quoted(e2.Message(), "missing")) {
			t.Fatalf("existing: %v %q; missing: %v %q; want both PermissionDenied alike", e1.Code(), e1.Message(), e2.Code(), e2.Message())
		}
	})
	t.Run("Connectors API", func(t *testing.T) {
		api := func(name string) string {
			return connectorAPI(env, owner, name, "/x")
		}
		c1, _, s1 := apiCall(t, "GET", api("tool"), strangerAPI)
		c2, _, s2 := apiCall(t, "GET", api("missing"), strangerAPI)
		if c1 != http.StatusForbidden || c2 != c1 || !same(s1.Message, s2.Message) {
			t.Fatalf("existing: %d %q; missing: %d %q", c1, s1.Message, c2, s2.Message)
		}
	})
}

// TestTenancyAProxyTakesOnlyItsNodesPodsTokens: a Pod's requests reach its own node's proxy
// (the connectors-proxy Service routes node-locally). A tenant reaching other nodes' proxies
// directly, with a token of a Pod elsewhere or of no Pod, is refused from the token's claims,
// before any review or lookup: otherwise it could make every node of the cluster review its
// tokens, watch its Connectors, read their Secrets and spend the limits other tenants' Pods
// there wait on. Nor is one token many: a spelling of it the API server's JWT library would
// also take (the unused bits of a part's last character set) is refused without a review. The
// node runs as deployed (its reviews and reads in the audit log).
func TestTenancyAProxyTakesOnlyItsNodesPodsTokens(t *testing.T) {
	tool := startGitServer(t, false)
	env := startDeployedDrivers(t, nil) // node-1
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	refs := "/repo.git/info/refs?service=git-upload-pack"
	reverse := func(token string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool"+refs,
			map[string]string{"Authorization": "Bearer " + token}))
	}
	forward := func(token string) (int, string) {
		return do(t, forwardClient(env.proxyURL, ns+"/tool", token), newRequest(t, "GET", tool.URL+refs, nil))
	}
	elsewhere := podToken(t, ns, "builder", "node-2")
	unbound, err := cp.Kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "builder", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{driverName}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	here := proxyToken(t, ns, "builder")
	since := time.Now()
	for _, c := range []struct{ name, token, want string }{
		{"a Pod of another node", elsewhere, "the token's Pod runs on node node-2, not this proxy's"},
		{"no Pod", unbound.Status.Token, "this proxy takes only the tokens of its node's Pods, and this token is bound to no Pod"},
	} {
		for mode, send := range map[string]func(string) (int, string){"reverse": reverse, "forward": forward} {
			if code, body := send(c.token); code != http.StatusForbidden || !strings.Contains(body, c.want) || strings.Contains(body, "node-1") {
				t.Errorf("%s, %s: %d %q, want 403 saying %q, not naming this node", c.name, mode, code, body, c.want)
			}
		}
		if status := connectStatus(t, strings.TrimPrefix(env.proxyURL, "http://"), strings.TrimPrefix(tool.URL, "http://"), ns+"/tool", c.token); !strings.Contains(status, " 403 ") {
			t.Errorf("%s, CONNECT: %q, want 403", c.name, status)
		}
	}
	variants := respellings(here)
	if len(variants) == 0 {
		t.Fatal("no other spelling of the token: its parts' lengths leave no unused bits")
	}
	for i, variant := range variants {
		if code, body := reverse(variant); code != http.StatusUnauthorized {
			t.Errorf("spelling %d of a token of this node's Pod: %d %q, want 401", i, code, body)
		}
	}
	reads := func() []auditv1.Event {
		events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.NodeUser && ev.ObjectRef != nil && ev.ObjectRef.Namespace == ns && ev.ObjectRef.Name == "tool-auth" &&
				!ev.RequestReceivedTimestamp.Time.Before(since)
		})
		if err != nil {
			t.Fatal(err)
		}
		return events
	}
	if got, reviews := reads(), nodeCreates(t, "tokenreviews", since); len(got) != 0 || len(reviews) != 0 {
		t.Errorf("refused tokens cost %d TokenReviews and %d reads of the Connector's Secret by the node", len(reviews), len(got))
	}
	// The control: the token of a Pod of this node, in its one spelling, is reviewed and served.
	if code, body := reverse(here); code != http.StatusOK {
		t.Fatalf("a Pod of the proxy's node: %d %q", code, body)
	}
	if got, reviews := reads(), nodeCreates(t, "tokenreviews", since); len(got) == 0 || len(reviews) != 1 {
		t.Errorf("a served request cost %d TokenReviews and %d Secret reads by the node, want 1 and some: the checks above prove nothing", len(reviews), len(got))
	}
}

// TestTenancyConnectorsAPIStartsNoWatch: the Connectors API takes any token the cluster
// accepts, at any node. A Connector it reads that the node does not watch for its volumes or
// its proxy is listed (once per --connectors-api-connector-ttl), with the API's own client, as
// its Secret is read, never watched: otherwise one
// tenant calling every node's API could make every node of the cluster watch each Connector it
// may get, fan each write out to all of them, and push out the watches of their volumes. A
// Connector the node watches is read from its watch (the node as deployed, its requests in the
// audit log).
func TestTenancyConnectorsAPIStartsNoWatch(t *testing.T) {
	tool := startGitServer(t, false)
	env, _ := startDeployedNode(t, func(o *driver.Options) { o.APIConnectorTTL = time.Minute })
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	viewer := apiToken(t, ns, "viewer")
	allowConnectors(t, ns, "viewer", "tool")
	allowConnectors(t, ns, "builder", "tool")
	call := func() {
		t.Helper()
		url := connectorAPI(env, ns, "tool", "/repo.git/info/refs?service=git-upload-pack")
		if code, body := do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + viewer})); code != http.StatusOK {
			t.Fatalf("the API: %d %q", code, body)
		}
	}
	since := time.Now()
	for range 3 {
		call()
	}
	if verbs := nodeConnectorVerbs(t, ns, since); verbs["watch"] != 0 || verbs["list"] != 1 {
		t.Errorf("3 API calls within the TTL: %v, want one list and no watch", verbs)
	}
	// Both the list and the Secret's read went with the API's client and rate limit, not the
	// proxy's, which the node's Pods wait on.
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.ObjectRef != nil && ev.ObjectRef.Namespace == ns &&
			(ev.ObjectRef.Resource == "connectors" || ev.ObjectRef.Name == "tool-auth") && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(reads) != 2 {
		t.Errorf("the API's reads: %d, want the Connector's list and the Secret's get", len(reads))
	}
	for _, ev := range reads {
		if !strings.HasSuffix(ev.UserAgent, " connectors-api") {
			t.Errorf("the API's %s of %s went with the client %q, not the API's", ev.Verb, ev.ObjectRef.Resource, ev.UserAgent)
		}
	}
	// A volume of a Pod of the node uses it: the node watches it, and the API reads the watch.
	published := time.Now()
	publishedToken(t, env, ns, "user", "tool")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return nodeConnectorVerbs(t, ns, published)["watch"] == 1 }) {
		t.Fatalf("the volume's Connector is not watched: %v", nodeConnectorVerbs(t, ns, published))
	}
	since = time.Now()
	call()
	if verbs := nodeConnectorVerbs(t, ns, since); len(verbs) != 0 {
		t.Errorf("an API call for a Connector the node watches: %v, want no request", verbs)
	}
}

// respellings are the other spellings of a JWT the API server's JWT library decodes alike: its
// parts' last characters with their unused low bits set.
func respellings(token string) []string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var out []string
	parts := strings.Split(token, ".")
	for i, part := range parts {
		unused := map[int]int{2: 4, 3: 2}[len(part)%4]
		if unused == 0 {
			continue
		}
		last := strings.IndexByte(alphabet, part[len(part)-1])
		changed := slices.Clone(parts)
		changed[i] = part[:len(part)-1] + string(alphabet[last|1<<unused-1])
		out = append(out, strings.Join(changed, "."))
	}
	return out
}

// TestTenancyConnectorsAPIPassthroughNeedsWhatTheProxyNeeds: with
// enable-connector-proxy-permissions, using a Connector through the proxy needs connectors/proxy;
// so does the Connectors API's passthrough (the tool's own API with the Connector's credential),
// or the API's own grant, connectors/apis: get alone, which every ServiceAccount may hold on a
// shared Connector, would open through the API what the flag closes at the proxy. The API's own
// lists (gitrefs) need get, as before.
func TestTenancyConnectorsAPIPassthroughNeedsWhatTheProxyNeeds(t *testing.T) {
	tool, env, ns, viewer := apiCallerWithFlags(t, "tool", "viewer", map[string]string{"enable-connector-proxy-permissions": "true"})
	call := func(rest string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", connectorAPI(env, ns, "tool", rest), map[string]string{"Authorization": "Bearer " + viewer}))
	}
	passthrough := "/repo.git/info/refs?service=git-upload-pack"
	want := "may not get connectors/proxy nor connectors/apis"
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		code, body := call(passthrough)
		return code == http.StatusForbidden && strings.Contains(body, want)
	}) {
		code, body := call(passthrough)
		t.Fatalf("the API's passthrough with get only: %d %q, want 403 saying %q", code, body, want)
	}
	if code, body := call("/git/gitrefs?repositoryUrl=" + tool.URL + "/repo.git"); code != http.StatusOK {
		t.Errorf("the API's gitrefs with get: %d %q", code, body)
	}
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "use-tool", Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors/proxy"}, ResourceNames: []string{"tool"}, Verbs: []string{"get"}}}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "use-tool", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "use-tool"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "viewer", Namespace: ns}}})
	if !kubelet.WaitUntil(15*time.Second, func() bool { code, _ := call(passthrough); return code == http.StatusOK }) {
		code, body := call(passthrough)
		t.Fatalf("the API's passthrough with connectors/proxy: %d %q, want 200", code, body)
	}
}

func TestTenancyCachesAreBounded(t *testing.T) {
	reg := startRegistry(t)
	enableMultiConnector(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.RegistryTokenCacheSize, o.LeafCacheSize = 3, 2 })
	ns := newNamespace(t)
	ociConnector(t, ns, "registry", deployedClass(t, "oci.yaml"), reg, reg.Password)
	newConnector(t, ns, "named", gitClass(t), "https://localhost:9")
	allowConnectors(t, ns, "builder", "registry", "named")
	pod, token := publishedToken(t, env, ns, "scopes", "registry,named")
	vol := env.kubelet.TargetPath(pod, "connectors")
	host := strings.TrimPrefix(reg.URL, "http://")
	for i := range 8 { // a client chooses its scopes: one token each
		r, _ := name.ParseReference(fmt.Sprintf("%s/scope-%d/app:v1", host, i), name.Insecure)
		_, _ = remote.Head(r, remote.WithTransport(volumeTransport(t, vol)))
	}
	if n, ok := cachemetrics.Entries("registry_tokens"); !ok || n == 0 || n > 3 {
		t.Errorf("registry tokens cached: %d (registered %v), want 1..3", n, ok)
	}
	proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
	caPEM := []byte(visibleFiles(t, vol)["ca.crt"])
	for _, spelling := range []string{"localhost:9", "LOCALHOST:9", "LocalHost:9"} {
		_, _ = openTunnel(t, proxyAddr, spelling, ns+"/named", token, caPEM)
	}
	if n, ok := cachemetrics.Entries("leaf_certificates"); !ok || n != 1 {
		t.Errorf("leaf certificates for three spellings of one host: %d (registered %v), want 1", n, ok)
	}
	for _, c := range []string{"secrets", "transports", "registry_realms", "rego_node", "rego_node_answers"} {
		if _, ok := cachemetrics.Entries(c); !ok {
			t.Errorf("no size is exported for the %s cache", c)
		}
	}
}

// fakeJWT is an unsigned token with the given claims: well-formed enough to look at, never
// accepted by the API server.
func fakeJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

func TestTenancyUnauthenticatedLoadIsCheap(t *testing.T) {
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	url := env.proxyURL + "/namespaces/" + ns + "/connectors/any/x"
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	junk := []string{"not-a-token", "a.b.c", fakeJWT(`{"exp":` + fmt.Sprint(future) + `,"aud":["someone-else"]}`),
		fakeJWT(`{"exp":` + fmt.Sprint(past) + `,"aud":["` + driverName + `"]}`), fakeJWT(`{"aud":"` + driverName + `"}`)}
	reviewsBefore, _ := access.Reviews()
	for i := range 40 {
		token := junk[i%len(junk)] + strings.Repeat("x", i) // each one new to every cache
		code, _ := do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + token}))
		if code != http.StatusUnauthorized {
			t.Fatalf("junk token %q: status %d, want 401", token, code)
		}
	}
	if reviewsAfter, _ := access.Reviews(); reviewsAfter != reviewsBefore {
		t.Errorf("junk tokens cost %v TokenReviews, want none", reviewsAfter-reviewsBefore)
	}
	t.Run("oversized headers", func(t *testing.T) {
		code, _ := rawStatus(t, strings.TrimPrefix(env.proxyURL, "http://"), "GET /namespaces/x/connectors/y/z HTTP/1.1",
			map[string]string{"X-Padding": strings.Repeat("p", 200<<10)})
		if code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", code)
		}
	})
	t.Run("connection limit", func(t *testing.T) {
		limited := startProxyDriver(t, func(o *driver.Options) { o.ProxyMaxConnections = 4 })
		addr := strings.TrimPrefix(limited.proxyURL, "http://")
		var held []net.Conn
		for range 4 {
			// A finished request proves the connection was accepted and counted. A 503 here
			// is the place of startProxyDriver's probe connection, closed by the client and
			// not yet seen closed by the proxy: that one is tried again.
			var c net.Conn
			if !kubelet.WaitUntil(10*time.Second, func() bool {
				c = heldConnection(t, addr)
				return c != nil
			}) {
				t.Fatal("a connection within the limit was not served")
			}
			held = append(held, c)
		}
		if code, body := rawStatus(t, addr, "GET /nothing HTTP/1.1", nil); code != http.StatusServiceUnavailable {
			t.Fatalf("over the limit: status %d %q, want 503", code, body)
		}
		_ = held[0].Close()
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			code, _ := rawStatus(t, addr, "GET /nothing HTTP/1.1", nil)
			return code == http.StatusNotFound
		}) {
			t.Fatal("a closed connection did not give its place back")
		}
		for _, c := range held[1:] {
			_ = c.Close()
		}
	})
}

// heldConnection is a connection to addr on which a request was answered 404 (accepted and
// counted by the connection limit), or nil after a 503 (over the limit; closed).
func heldConnection(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	switch {
	case err == nil && res.StatusCode == http.StatusNotFound:
		return c
	case err == nil && res.StatusCode == http.StatusServiceUnavailable:
		_ = c.Close()
		return nil
	}
	t.Fatalf("held connection: %v %v", res, err)
	return nil
}

// upgradingTool is a tool that switches to an echo protocol (a stand-in for WebSocket: kubectl
// exec, a CLI's stream) when asked with the Connector's credential (bot/<password>), and
// echoes each line it then reads.
func upgradingTool(t *testing.T, password string) *httptest.Server {
	t.Helper()
	tool := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Basic "+basic("bot", password) || r.Header.Get("Upgrade") != "echo" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		for brw.Flush() == nil {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString("echo: " + line)
		}
	}))
	t.Cleanup(tool.Close)
	return tool
}

// TestTenancyUpgradesNeedCreateAndAreChecked: a request that switches protocols becomes a
// connection that carries writes whatever its method (a GET) and outlives any one check. With
// enable-connector-proxy-permissions a read grant does not open one (403 naming create); a
// create grant does, with the Connector's credential; the connection is closed once the grant
// is removed (checked again every 500 ms through caches of 1 s), and at the tunnel lifetime.
// The Connectors API never switches protocols.
func TestTenancyUpgradesNeedCreateAndAreChecked(t *testing.T) {
	tool := upgradingTool(t, "ws-secret")
	const ttl = time.Second
	env := startProxyDriver(t, func(o *driver.Options) {
		o.AuthzAllowTTL, o.TokenCacheTTL, o.ProxyPermissionTTL, o.UpgradeRecheck = ttl, ttl, ttl, 500*time.Millisecond
	})
	ns, _, files := basicTool(t, env, tool.URL, "ws-secret")
	token, host := files["context.token"], strings.TrimPrefix(env.proxyURL, "http://")
	upgrade := func(t *testing.T, host, path, token string) (conn net.Conn, br *bufio.Reader, code int, body string) {
		t.Helper()
		conn = dialProxy(t, host)
		writeRaw(t, conn, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nAuthorization: Bearer "+token+
			"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br = bufio.NewReader(conn)
		res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(res.Body)
			body = string(b)
		}
		return conn, br, res.StatusCode, body
	}
	echoes := func(t *testing.T, conn net.Conn, br *bufio.Reader) bool {
		writeRaw(t, conn, "rm -rf /data\n")
		line, err := br.ReadString('\n')
		return err == nil && line == "echo: rm -rf /data\n"
	}
	closedWithin := func(conn net.Conn, br *bufio.Reader, d time.Duration) error {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		for {
			if _, err := br.ReadByte(); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return err
				}
				return nil
			}
		}
	}
	exec := "/namespaces/" + ns + "/connectors/tool/exec"
	// upgraded waits for an upgrade through the proxy at host, and checks that it carries the stream.
	upgraded := func(t *testing.T, host string) (conn net.Conn, br *bufio.Reader) {
		t.Helper()
		if !kubelet.WaitUntil(15*time.Second, func() bool {
			var code int
			conn, br, code, _ = upgrade(t, host, exec, token)
			return code == http.StatusSwitchingProtocols
		}) {
			t.Fatal("the upgrade was never let through")
		}
		if !echoes(t, conn, br) {
			t.Fatal("the upgraded connection does not carry the stream")
		}
		return conn, br
	}

	grantPodProxyVerbs(t, ns, "client", "tool", "get")
	setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		_, _, code, body := upgrade(t, host, exec, token)
		return code == http.StatusForbidden && strings.Contains(body, "may not create connectors/proxy")
	}) {
		t.Fatal("a read grant switched protocols (or the flag never took effect)")
	}

	role := "proxy-verbs-client"
	r, err := cp.Kube.RbacV1().Roles(ns).Get(context.Background(), role, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Rules[0].Verbs = []string{"get", "create"}
	if _, err := cp.Kube.RbacV1().Roles(ns).Update(context.Background(), r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	conn, br := upgraded(t, host)
	if err := cp.Kube.RbacV1().RoleBindings(ns).Delete(context.Background(), role, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := closedWithin(conn, br, 30*time.Second); err != nil {
		t.Fatalf("the upgraded connection stayed open 30 s after its grant was removed (caches of %v)", ttl)
	}

	t.Run("the Connectors API does not switch protocols", func(t *testing.T) {
		viewer := apiToken(t, ns, "ui")
		grantAPIs(t, ns, "ui", "tool")
		_, _, code, body := upgrade(t, host, strings.TrimPrefix(connectorAPI(env, ns, "tool", "/exec"), env.proxyURL), viewer)
		if code != http.StatusMethodNotAllowed || !strings.Contains(body, "does not switch protocols") {
			t.Fatalf("an upgrade through the Connectors API: %d %q, want 405", code, body)
		}
	})
	t.Run("an upgraded connection ends at the tunnel lifetime", func(t *testing.T) {
		setFlags(t, map[string]string{})
		short := startProxyDriver(t, func(o *driver.Options) { o.TunnelLifetime = 2 * time.Second })
		host := strings.TrimPrefix(short.proxyURL, "http://")
		// The Pod's get grant is still there: without the flag, it is all an upgrade needs.
		conn, br := upgraded(t, host)
		if err := closedWithin(conn, br, 30*time.Second); err != nil {
			t.Fatal("the upgraded connection was still open 30 s into a 2 s lifetime")
		}
	})
}

// TestTenancyAStreamedAnswerEndsWithItsGrant: a request is checked when it starts, and an
// answer that streams on (a watch, a followed log, server-sent events) would carry what the
// tool sends, got with its credential, for as long as the tool sends. The proxy checks the
// caller again while the answer lasts (every --proxy-answer-recheck-interval, through caches
// of 1 s here): once the Pod's grant is removed, each stream ends, on the fast lane's first
// request of a connection, its remembered route, and net/http's path alike, and when the
// request asked to switch protocols and the tool did not. A stream through the Connectors API
// is checked for its own caller, with the grants that allowed it: it goes on past the Pod's
// checks, and ends once its caller may no longer get the Connector.
func TestTenancyAStreamedAnswerEndsWithItsGrant(t *testing.T) {
	tool := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/watch") {
			_, _ = io.WriteString(w, "short")
			return
		}
		streamEvents(w, r)
	})
	const ttl = time.Second
	env := startProxyDriver(t, func(o *driver.Options) {
		o.AuthzAllowTTL, o.TokenCacheTTL, o.ProxyPermissionTTL, o.AnswerRecheck = ttl, ttl, ttl, 500*time.Millisecond
	})
	ns, _, files := basicTool(t, env, tool.URL, "stream-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	head := func(path, extra string) string {
		return "GET /namespaces/" + ns + "/connectors/tool/" + path + " HTTP/1.1\r\nHost: " + host +
			"\r\nAuthorization: Bearer " + files["context.token"] + "\r\n" + extra + "\r\n"
	}
	// streaming sends the heads on a new connection to the proxy and returns the last answer's
	// body once its first event came.
	streaming := func(t *testing.T, heads ...string) io.Reader {
		t.Helper()
		conn := dialProxy(t, host)
		br := bufio.NewReader(conn)
		var res *http.Response
		for _, h := range heads {
			writeRaw(t, conn, h)
			var err error
			if res, err = http.ReadResponse(br, &http.Request{Method: "GET"}); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusOK {
				t.Fatalf("%q: %d", h, res.StatusCode)
			}
			if !strings.Contains(h, "/watch ") {
				_, _ = io.Copy(io.Discard, res.Body)
			}
		}
		event := make([]byte, len("event: change\n\n"))
		if _, err := io.ReadFull(res.Body, event); err != nil {
			t.Fatalf("no event streamed: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		return res.Body
	}
	streams := map[string]io.Reader{
		"the fast lane":                    streaming(t, head("watch", "")),
		"the fast lane's remembered route": streaming(t, head("short", ""), head("watch", "")),
		// A Connection header naming another header is net/http's to read.
		"net/http's path":                  streaming(t, head("watch", "Connection: keep-alive, X-Trace\r\nX-Trace: 1\r\n")),
		"an upgrade the tool did not take": streaming(t, head("watch", "Connection: Upgrade\r\nUpgrade: websocket\r\n")),
	}
	// Through the Connectors API, past a few of the proxy's rechecks: still streaming.
	viewer := apiToken(t, ns, "ui")
	allowConnectors(t, ns, "ui", "tool")
	grantAPIs(t, ns, "ui", "tool")
	apiCtx, apiCancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer apiCancel()
	apiRequest := newRequest(t, "GET", connectorAPI(env, ns, "tool", "/watch"), map[string]string{"Authorization": "Bearer " + viewer}).WithContext(apiCtx)
	apiAnswer, err := http.DefaultClient.Do(apiRequest)
	if err != nil || apiAnswer.StatusCode != http.StatusOK {
		t.Fatalf("a stream through the Connectors API: %v %v", apiAnswer, err)
	}
	defer apiAnswer.Body.Close()
	apiStreams := func(d time.Duration) {
		t.Helper()
		for until := time.Now().Add(d); time.Now().Before(until); {
			event := make([]byte, len("event: change\n\n"))
			if _, err := io.ReadFull(apiAnswer.Body, event); err != nil {
				t.Fatalf("the Connectors API's stream ended: %v", err)
			}
		}
	}
	apiStreams(2 * time.Second)
	if err := cp.Kube.RbacV1().RoleBindings(ns).Delete(context.Background(), "use-connectors-builder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for path, body := range streams {
		_, err := io.Copy(io.Discard, body)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the answer still streamed a minute after its grant was removed (caches of %v)", path, ttl)
		}
	}
	// The Pod's grant is not the API caller's: its stream goes on, past a few more checks.
	apiStreams(2 * time.Second)
	if err := cp.Kube.RbacV1().RoleBindings(ns).Delete(context.Background(), "use-connectors-ui", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Cut, not ended as if whole: the client sees the answer break off.
	if _, err := io.Copy(io.Discard, apiAnswer.Body); errors.Is(err, context.DeadlineExceeded) || err == nil {
		t.Errorf("the Connectors API's stream after its caller's get grant was removed: %v, want it cut", err)
	}
}

// streamEvents answers with an event every 20 ms until the client or the server ends it.
func streamEvents(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	for {
		if _, err := io.WriteString(w, "event: change\n\n"); err != nil || http.NewResponseController(w).Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestTenancyToolAnswerHeadsAreBounded: a Connector's tool is whatever server its owner runs,
// and one answering with a head of endless header lines would have the node's proxy hold it
// all (every tenant's proxy, API and publishes on that node go with the process): the proxy
// reads at most --proxy-max-header-bytes of it and answers 502 naming the bound.
func TestTenancyToolAnswerHeadsAreBounded(t *testing.T) {
	tool := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\n")
		for range 16 << 10 { // 16 MiB of header lines, then an answer
			_, _ = bw.WriteString("X-Pad: " + strings.Repeat("a", 1017) + "\r\n")
		}
		_, _ = bw.WriteString("Content-Length: 2\r\n\r\nok")
		_ = bw.Flush()
	})
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	createSecret(t, ns, "padded", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "padded-secret"})
	newConnectorWithSecret(t, ns, "padded", gitClass(t), tool.URL, "basicAuth", "padded")
	allowConnectors(t, ns, "builder", "padded")
	_, token := publishedToken(t, env, ns, "client", "padded")
	for _, path := range []string{"/first", "/second"} {
		code, body := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/padded"+path,
			map[string]string{"Authorization": "Bearer " + token}))
		if code != http.StatusBadGateway || !strings.Contains(body, "larger than 65536 bytes") {
			t.Errorf("GET %s: status %d %.200q, want 502 naming the bound", path, code, body)
		}
	}
	if n := len(tool.proxied()); n != 2 {
		t.Errorf("the tool saw %d requests through the proxy, want 2", n)
	}
}

// TestTenancySharedConnectorsKeepTenantsConnectionsApart: tenants that share a Connector
// (kube-public's, a project's, one granted across namespaces) share its credential, never the
// proxy's connections to its tool. A tool that sends bytes past an answer (a body after a
// HEAD's head) once the connection is idle would otherwise have them read as the answer to
// another tenant's next request: what one tenant can make the tool send (a file it uploaded)
// another would get for its own.
func TestTenancySharedConnectorsKeepTenantsConnectionsApart(t *testing.T) {
	tool := forgingtool.Start(t, gitserver.Host)
	env := startProxyDriver(t, nil)
	owner, other := newNamespace(t), newNamespace(t)
	createSecret(t, owner, "shared", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "shared-secret"})
	newConnectorWithSecret(t, owner, "shared", gitClass(t), "http://"+tool.Addr, "basicAuth", "shared")
	allowConnectors(t, owner, "builder", "shared")
	shareConnector(t, owner, "shared", other, "builder")
	_, ownerToken := publishedToken(t, env, owner, "a", "shared")
	_, otherToken := publishedToken(t, env, other, "b", owner+"/shared")
	url := env.proxyURL + "/namespaces/" + owner + "/connectors/shared/file"
	if code, _ := do(t, noRedirects, newRequest(t, "HEAD", url, map[string]string{"Authorization": "Bearer " + ownerToken})); code != http.StatusOK {
		t.Fatalf("HEAD of the owner: status %d", code)
	}
	close(tool.Forge)
	<-tool.Forged
	if code, body := do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + otherToken})); code != http.StatusOK || body != "real" {
		t.Fatalf("GET of the other tenant: status %d %q, want the tool's own answer", code, body)
	}
}

// TestTenancyOtherMethodsKeepTenantsConnectionsApart: what the proxy's own pools do not take
// (OPTIONS and WebDAV methods, a body it cannot send again, an upgrade, a tool that speaks
// only HTTP/2) goes through an http.Transport, whose pools are by host alone. Those too are
// kept per Connector and caller namespace: a tool that reads an OPTIONS request's body as the
// next request would otherwise join one tenant's request head to another's credential on one
// connection. Each tenant's requests reuse a connection of their own (the control), never the
// other's.
func TestTenancyOtherMethodsKeepTenantsConnectionsApart(t *testing.T) {
	var mu sync.Mutex
	var peers []string
	tool := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			mu.Lock()
			peers = append(peers, r.RemoteAddr)
			mu.Unlock()
		}
		w.Header().Set("Allow", "GET, OPTIONS")
	})
	env := startProxyDriver(t, nil)
	owner, other := newNamespace(t), newNamespace(t)
	createSecret(t, owner, "shared", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "shared-secret"})
	newConnectorWithSecret(t, owner, "shared", gitClass(t), tool.URL, "basicAuth", "shared")
	allowConnectors(t, owner, "builder", "shared")
	shareConnector(t, owner, "shared", other, "builder")
	_, ownerToken := publishedToken(t, env, owner, "a", "shared")
	_, otherToken := publishedToken(t, env, other, "b", owner+"/shared")
	url := env.proxyURL + "/namespaces/" + owner + "/connectors/shared/repo"
	for i, token := range []string{ownerToken, ownerToken, otherToken, otherToken} {
		if code, body := do(t, noRedirects, newRequest(t, "OPTIONS", url, map[string]string{"Authorization": "Bearer " + token})); code != http.StatusOK {
			t.Fatalf("OPTIONS %d: status %d %q", i, code, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(peers) != 4 {
		t.Fatalf("the tool saw %d OPTIONS, want 4", len(peers))
	}
	if peers[0] != peers[1] || peers[2] != peers[3] {
		t.Errorf("a tenant's requests did not reuse its connection (the control): %q", peers)
	}
	if peers[0] == peers[2] {
		t.Errorf("two tenants' OPTIONS went over one tool connection: %q", peers)
	}
}

// TestTenancyPublishReviewsTakeTurns: a publish asks the API server whether the Pod may get
// each Connector its volume names, within the node's one client rate limit. A tenant's
// thousands of volumes naming Connectors it may not get, each asked again at kubelet's every
// retry, would queue every other tenant's publishes behind them: each namespace's questions
// take turns of their own (--publish-review-qps-per-namespace). Past its turns the tenant is
// told to come back (Unavailable, kubelet retries); its neighbour publishes at once.
func TestTenancyPublishReviewsTakeTurns(t *testing.T) {
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.PublishReviewQPS = 0.01 }) // a burst of 1
	k := newKubelet(t, d)
	tenant, neighbour := newNamespace(t), newNamespace(t)
	newConnector(t, neighbour, "git", gitClass(t), "https://github.com")
	allowConnectors(t, neighbour, "builder", "git")
	publish := func(ns, name, connectors string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pod := podWithVolume(t, k, ns, name, map[string]string{"connectors": connectors}, nil)
		err := k.Publish(ctx, pod, "connectors")
		if err == nil {
			t.Cleanup(func() { _ = k.Unpublish(context.Background(), pod, "connectors") })
		}
		return err
	}
	if err := publish(tenant, "first", neighbour+"/git"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the tenant's first volume naming a Connector it may not get: %v, want PermissionDenied", err)
	}
	err := publish(tenant, "second", neighbour+"/other")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "reviews of "+tenant+" are paced") {
		t.Fatalf("the tenant's second question past its turns: %v, want Unavailable saying its reviews are paced", err)
	}
	if err := publish(neighbour, "neighbour", "git"); err != nil {
		t.Fatalf("the neighbour's publish while the tenant is out of turns: %v", err)
	}
}

// TestTenancyNodeVolumesAreBounded: a volume's files are tmpfs pages the driver writes, which
// count against the driver's memory limit, not the Pod's nor its namespace's quota. A tenant's
// many volumes would take the driver, and every Pod of the node with it, past its limit: the
// node's volumes hold at most --node-volumes-max-bytes together, a namespace's half of it. A tenant past its share gets ResourceExhausted naming the flag (kubelet retries); its
// neighbour still publishes; an unpublish frees the share.
func TestTenancyNodeVolumesAreBounded(t *testing.T) {
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.VolumeSizeLimit, o.VolumesMaxBytes = "64Ki", "128Ki" })
	k := newKubelet(t, d)
	ctx := context.Background()
	tenant, neighbour := newNamespace(t), newNamespace(t)
	git := gitClass(t)
	for _, ns := range []string{tenant, neighbour} {
		newConnector(t, ns, "git", git, "https://github.com")
		allowConnectors(t, ns, "builder", "git")
	}
	publish := func(pod *corev1.Pod) error {
		err := k.Publish(ctx, pod, "connectors")
		if err == nil {
			t.Cleanup(func() { _ = k.Unpublish(context.Background(), pod, "connectors") })
		}
		return err
	}
	attrs := map[string]string{"connectors": "git"}
	first := podWithVolume(t, k, tenant, "first", attrs, nil)
	if err := publish(first); err != nil {
		t.Fatal(err)
	}
	second := podWithVolume(t, k, tenant, "second", attrs, nil)
	want := "the Connectors volumes of namespace " + tenant + " on this node would hold"
	if err := publish(second); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), "--node-volumes-max-bytes") {
		t.Fatalf("a second volume past the namespace's share: %v, want ResourceExhausted naming %q and the flag", err, want)
	}
	if err := publish(podWithVolume(t, k, neighbour, "neighbour", attrs, nil)); err != nil {
		t.Fatalf("the neighbour's volume: %v", err)
	}
	if err := k.Unpublish(ctx, first, "connectors"); err != nil {
		t.Fatal(err)
	}
	if err := publish(second); err != nil {
		t.Fatalf("the second volume once the first is gone: %v", err)
	}
}

// TestTenancyAMountedVolumeGrowsWithinTheBounds: a mounted volume's renewal (its new token, a
// class an administrator changed) is written whatever the budget says, but content its
// Connector grows (or an approval, after a rejection's small error file) grows only within the
// namespace's share, as a new volume's: otherwise a tenant mounts many small volumes and then
// grows them all past every bound, in memory charged to the driver. A refused growth keeps the
// volume's files.
func TestTenancyAMountedVolumeGrowsWithinTheBounds(t *testing.T) {
	// A namespace's share: 128 KiB, about two volumes with their built-in files (the growth of
	// either then goes past it, while each volume's tmpfs holds its old and new files at once).
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.VolumeSizeLimit, o.VolumesMaxBytes = "128Ki", "256Ki" })
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	class := paramsClass(t)
	newConnector(t, ns, "params", class, "https://tool.example.com")
	newConnector(t, ns, "other", constantClass(t), "https://git.example.com")
	allowConnectors(t, ns, "builder", "params", "other")
	publish := func(pod *corev1.Pod) {
		t.Helper()
		if err := k.Publish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k.Unpublish(context.Background(), pod, "connectors") })
	}
	pod := podWithVolume(t, k, ns, "grows", map[string]string{"connectors": "params", "configuration.names": "settings",
		"configuration.params": `{"settings": {"depth": "1"}}`}, nil)
	publish(pod)
	publish(podWithVolume(t, k, ns, "beside", map[string]string{"connectors": "other"}, nil))
	settings := filepath.Join(k.TargetPath(pod, "connectors"), "settings.txt")
	read := func() string {
		b, err := os.ReadFile(settings)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := read()
	setPad := func(bytes int) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var c v1alpha1.Connector
			if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "params"}, &c); err != nil {
				return err
			}
			c.Spec.Params = []v1alpha1.Param{{Name: "pad", Value: *jsonValue(strings.Repeat("x", bytes))}}
			return cp.Client.Update(ctx, &c)
		}); err != nil {
			t.Fatal(err)
		}
	}

	setPad(56 << 10)
	var err error
	want := "the Connectors volumes of namespace " + ns + " on this node would hold"
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		err = k.Publish(ctx, pod, "connectors")
		return status.Code(err) == codes.ResourceExhausted
	}) || !strings.Contains(err.Error(), want) {
		t.Fatalf("a republish growing the volume past its namespace's share: %v, want ResourceExhausted naming %q", err, want)
	}
	if read() != before {
		t.Error("the refused republish changed the volume's files")
	}
	setPad(1 << 10)
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		return k.Publish(ctx, pod, "connectors") == nil && strings.Contains(read(), "pad="+strings.Repeat("x", 1<<10))
	}) {
		t.Error("a republish within the share did not write the grown content")
	}
	// What an administrator's class change grows is a renewal: written past the share, as the
	// Pod's token must be.
	updateClass(t, class, func(c *v1alpha1.ConnectorClass) {
		c.Spec.Configurations[0].Data["settings.txt"] = paramsTemplate + "# " + strings.Repeat("y", 40<<10) + "\n"
	})
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		return k.Publish(ctx, pod, "connectors") == nil && strings.Contains(read(), strings.Repeat("y", 40<<10))
	}) {
		t.Error("a republish of a class grown by its administrator past the share was not written")
	}
}

// TestTenancyAPIListsReadBoundedAnswers: the Connectors API's list calls hand a tool's
// answers to libraries that read them whole (go-git a ref advertisement, go-containerregistry
// every next page). A tenant's Connector may name a tool that never ends either: the call
// stops at --api-call-max-answer-bytes, with a 502 naming it, where the driver every tenant on the
// node shares would otherwise grow until it is killed.
func TestTenancyAPIListsReadBoundedAnswers(t *testing.T) {
	endless := startEndlessTool(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.APICallAnswerBytes, o.RegistryPageSize = 1<<20, 2 })
	ns := newNamespace(t)
	newConnector(t, ns, "refs", gitClass(t), endless)
	newConnector(t, ns, "pages", deployedClass(t, "oci.yaml"), endless)
	caller := apiToken(t, ns, "ui")
	allowConnectors(t, ns, "ui", "refs", "pages")
	for _, call := range []struct{ connector, rest string }{
		{"refs", "/git/gitrefs?repositoryUrl=" + endless + "/r.git"},
		{"pages", "/oci/repositories"},
		{"pages", "/oci/tags?repository=team/app"},
	} {
		url, path := connectorAPI(env, ns, call.connector, call.rest), call.rest
		var code int
		var st metav1.Status
		if !kubelet.WaitUntil(15*time.Second, func() bool {
			code, _, st = apiCall(t, "GET", url, caller)
			return code != http.StatusForbidden && code != http.StatusNotFound
		}) {
			t.Fatalf("%s: status %d %q", path, code, st.Message)
		}
		if code != http.StatusBadGateway || !strings.Contains(st.Message, "--api-call-max-answer-bytes") {
			t.Errorf("%s: status %d %q, want 502 naming --api-call-max-answer-bytes", path, code, st.Message)
		}
	}
}

// TestTenancyAPIListsOfASharedConnectorAreBoundedByCaller: the bytes list calls hold from
// tools are bounded per caller's namespace, not per Connector's: a tenant whose calls of a
// shared Connector (kube-public's, a project's) hold their share, a tool stalling mid-answer,
// does not refuse another tenant's calls of the same Connector.
func TestTenancyAPIListsOfASharedConnectorAreBoundedByCaller(t *testing.T) {
	tool := startStallingRefsTool(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.APICallAnswerBytes, o.APINodeAnswerBytes = 512<<10, 2<<20 })
	shared := newNamespace(t)
	newConnector(t, shared, "refs", gitClass(t), tool)
	callers := map[string]string{} // namespace → its ui's token
	for range 2 {
		ns := newNamespace(t)
		shareConnector(t, shared, "refs", ns, "ui")
		callers[ns] = apiToken(t, ns, "ui")
	}
	namespaces := slices.Sorted(maps.Keys(callers))
	holder, other := namespaces[0], namespaces[1]
	refs := func(repo string) string {
		return connectorAPI(env, shared, "refs", "/git/gitrefs?repositoryUrl="+tool+"/"+repo+".git")
	}
	if code, list, st := apiCall(t, "GET", refs("small"), callers[other]); code != http.StatusOK || len(list.Items) == 0 {
		t.Fatalf("the shared Connector's refs: %d %q", code, st.Message)
	}

	// The holder's call reads 500 KiB of its share's 512 and then waits on the stalling tool
	// until the test ends.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		req := newRequest(t, "GET", refs("stall"), map[string]string{"Authorization": "Bearer " + callers[holder]})
		if res, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
			res.Body.Close()
		}
	}()
	var st metav1.Status
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		var code int
		code, _, st = apiCall(t, "GET", refs("small"), callers[holder])
		return code == http.StatusServiceUnavailable
	}) {
		t.Fatalf("the holder's calls never filled its share: %q", st.Message)
	}
	if !strings.Contains(st.Message, "namespace "+holder) {
		t.Errorf("the refusal %q does not name the caller's namespace %s", st.Message, holder)
	}
	if code, list, st := apiCall(t, "GET", refs("small"), callers[other]); code != http.StatusOK || len(list.Items) == 0 {
		t.Errorf("another tenant's call of the shared Connector while the first holds its share: %d %q, want its refs", code, st.Message)
	}
}

// startStallingRefsTool serves Git ref advertisements: small.git's, of 20 KiB, and stall.git's,
// 500 KiB of refs and then nothing until the client leaves.
func startStallingRefsTool(t *testing.T) string {
	t.Helper()
	hash := strings.Repeat("a", 40)
	advertise := func(w http.ResponseWriter, refBytes int) {
		refsHead(w, hash)
		for i := 0; refBytes > 0; i++ {
			line := fmt.Sprintf("%s refs/heads/b%d-%s\n", hash, i, strings.Repeat("x", 1000))
			_ = pktLine(w, line)
			refBytes -= len(line) + 4
		}
		w.(http.Flusher).Flush()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/small.git/info/refs", func(w http.ResponseWriter, _ *http.Request) {
		advertise(w, 20<<10)
		_, _ = io.WriteString(w, "0000")
	})
	mux.HandleFunc("/stall.git/info/refs", func(w http.ResponseWriter, r *http.Request) {
		advertise(w, 500<<10)
		<-r.Context().Done()
	})
	mux.HandleFunc("/large.git/info/refs", func(w http.ResponseWriter, _ *http.Request) {
		advertise(w, 7<<20)
		_, _ = io.WriteString(w, "0000")
	})
	return serveTool(t, mux)
}

// TestTenancyAnAPIAnswerNotReadStaysCounted: a built-in list holds what it read until its
// answer is written (a page of a list of the tool's refs); a caller that does not read its
// answers would otherwise hold the node's memory uncounted, a stalled call at a time. The
// call's bytes stay its caller's until its answer is written (or it gives up), so that the
// caller's next call is refused past its share, and served once the first is gone.
func TestTenancyAnAPIAnswerNotReadStaysCounted(t *testing.T) {
	tool := startStallingRefsTool(t)
	env := startProxyDriver(t, nil) // the API's default bounds: 8 MiB a call, the node's a quarter each caller
	ns := newNamespace(t)
	newConnector(t, ns, "refs", gitClass(t), tool)
	allowConnectors(t, ns, "ui", "refs")
	token := apiToken(t, ns, "ui")
	large := connectorAPI(env, ns, "refs", "/git/gitrefs?itemsPerPage=1000000&repositoryUrl="+tool+"/large.git")
	conn := dialProxy(t, strings.TrimPrefix(env.proxyURL, "http://"))
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4 << 10) // and never read: the answer, some MiB, waits in its write
	}
	u, err := url.Parse(large)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", u.RequestURI(), u.Host, token); err != nil {
		t.Fatal(err)
	}
	// Its answer has begun (a few hundred bytes read of some MiB): the call is writing it.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	head := make([]byte, 256)
	if n, err := io.ReadFull(conn, head); err != nil || !strings.HasPrefix(string(head[:n]), "HTTP/1.1 200 OK") {
		t.Fatalf("the unread call's answer begins %q (%v), want a 200", head[:n], err)
	}
	code, _, st := apiCall(t, "GET", large, token)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("a call while the caller's unread answer holds its share: %d %q, want 503", code, st.Message)
	}
	if !strings.Contains(st.Message, "namespace "+ns) {
		t.Errorf("the refusal %q does not name the caller's namespace %s", st.Message, ns)
	}
	conn.Close()
	if !kubelet.WaitUntil(40*time.Second, func() bool { code, _, _ := apiCall(t, "GET", large, token); return code == http.StatusOK }) {
		t.Error("the caller's calls were still refused after its unread answer's client left")
	}
}

// refsHead starts a Git ref advertisement: the service line, a flush, HEAD at hash with
// capabilities.
func refsHead(w http.ResponseWriter, hash string) {
	w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
	_ = pktLine(w, "# service=git-upload-pack\n")
	_, _ = io.WriteString(w, "0000")
	_ = pktLine(w, hash+" HEAD\x00side-band-64k\n")
}

// pktLine writes line as one Git pkt-line (its length, with the 4 of the length, in hex first).
func pktLine(w io.Writer, line string) error {
	_, err := fmt.Fprintf(w, "%04x%s", len(line)+4, line)
	return err
}

// startEndlessTool serves a Git ref advertisement that never ends, and registry catalogs and
// tag lists whose every page links to another.
func startEndlessTool(t *testing.T) string {
	t.Helper()
	hash := strings.Repeat("a", 40)
	page := func(w http.ResponseWriter, r *http.Request, key string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Link", fmt.Sprintf("<%s?n=2&last=%s>; rel=\"next\"", r.URL.Path, rand.String(8)))
		names := make([]string, 2)
		for i := range names {
			names[i] = fmt.Sprintf("%q", "team/"+strings.Repeat("x", 20000)+rand.String(8))
		}
		fmt.Fprintf(w, `{"name":"team/app",%q:[%s]}`, key, strings.Join(names, ","))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/r.git/info/refs", func(w http.ResponseWriter, r *http.Request) {
		refsHead(w, hash)
		for i := 0; r.Context().Err() == nil; i++ {
			if pktLine(w, fmt.Sprintf("%s refs/heads/b%d-%s\n", hash, i, strings.Repeat("x", 60000))) != nil {
				return
			}
		}
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			_, _ = io.WriteString(w, "{}")
		case r.URL.Path == "/v2/_catalog":
			page(w, r, "repositories")
		case strings.HasSuffix(r.URL.Path, "/tags/list"):
			page(w, r, "tags")
		default:
			http.NotFound(w, r)
		}
	})
	return serveTool(t, mux)
}

// TestTenancyAMissingSecretIsReadOnce: a Connector naming a Secret its owner has not made
// costs the API server one read per --secret-cache-ttl however many requests go through it
// (each read it before): from the API server's watch cache, and, the cache finding none (it
// may lag a Secret just made), from etcd (the node as deployed, its reads from the audit log).
func TestTenancyAMissingSecretIsReadOnce(t *testing.T) {
	tool := startGitServer(t, false)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.SecretCacheTTL = time.Hour })
	ns := newNamespace(t)
	newConnectorWithSecret(t, ns, "tool", gitClass(t), tool.URL, "basicAuth", "not-made")
	allowConnectors(t, ns, "builder", "tool")
	token := proxyToken(t, ns, "builder")
	since := time.Now()
	url := env.proxyURL + "/namespaces/" + ns + "/connectors/tool/repo.git/info/refs?service=git-upload-pack"
	for i := range 20 {
		code, body := do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + token}))
		if code == http.StatusOK || !strings.Contains(body, "not-made") {
			t.Fatalf("request %d: %d %q, want a failure naming the Secret", i, code, body)
		}
	}
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.Verb == "get" && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == "secrets" && ev.ObjectRef.Namespace == ns && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(reads) != 2 || !strings.Contains(reads[0].RequestURI, "resourceVersion=0") || strings.Contains(reads[1].RequestURI, "resourceVersion") {
		var uris []string
		for _, ev := range reads {
			uris = append(uris, ev.RequestURI)
		}
		t.Errorf("20 requests read the missing Secret %q, want once from the watch cache (resourceVersion=0) and, the cache finding none, once from etcd", uris)
	}
}

// TestTenancyMadeUpConnectorNamesAreNotWatched: the proxy and the Connectors API are asked for
// whatever names their callers make up (any ServiceAccount may get kube-public's); a node
// lists such a name once and watches it only if the Connector exists (the node as deployed,
// its requests from the audit log).
func TestTenancyMadeUpConnectorNamesAreNotWatched(t *testing.T) {
	env := startDeployedDrivers(t, func(o *driver.Options) { o.ConnectorMissingTTL = time.Hour })
	ns := newNamespace(t)
	allowConnectors(t, ns, "builder")
	allowConnectors(t, ns, "ui")
	token, ui := proxyToken(t, ns, "builder"), apiToken(t, ns, "ui")
	since := time.Now()
	for i := range 20 {
		for range 2 {
			code, body := do(t, noRedirects, newRequest(t, "GET", fmt.Sprintf("%s/namespaces/%s/connectors/made-up-%d/x", env.proxyURL, ns, i),
				map[string]string{"Authorization": "Bearer " + token}))
			if code != http.StatusNotFound {
				t.Fatalf("the proxy, a made-up name: %d %q, want 404", code, body)
			}
			if code, _, st := apiCall(t, "GET", connectorAPI(env, ns, fmt.Sprintf("api-made-up-%d", i), "/git/gitrefs?repositoryUrl=x"), ui); code != http.StatusNotFound {
				t.Fatalf("the Connectors API, a made-up name: %d %q, want 404", code, st.Message)
			}
		}
	}
	verbs := nodeConnectorVerbs(t, ns, since)
	if verbs["watch"] != 0 || verbs["list"] != 40 {
		t.Errorf("40 made-up names asked for twice each: %v, want 40 lists and no watch", verbs)
	}
}

// TestTenancyMadeUpConnectorNamesOfVolumesAreNotWatched: a Pod's author names its volumes'
// Connectors, made-up ones too, by the thousand (kubelet retries each publish). A new volume's
// Connector is listed once and watched only if it exists, a missing one remembered for
// --connector-missing-ttl, as for the proxy (the node as deployed, its reads from the audit
// log); an existing one is watched, as ever.
func TestTenancyMadeUpConnectorNamesOfVolumesAreNotWatched(t *testing.T) {
	env := startDeployedDrivers(t, func(o *driver.Options) { o.ConnectorMissingTTL = time.Hour })
	ns := newNamespace(t)
	allowConnectors(t, ns, "builder")
	newConnector(t, ns, "real", gitClass(t), "https://github.com")
	since := time.Now()
	for i := range 10 {
		pod := podWithVolume(t, env.kubelet, ns, fmt.Sprintf("made-up-%d", i), map[string]string{"connectors": fmt.Sprintf("made-up-%d", i)}, nil)
		for range 2 {
			if err := env.kubelet.Publish(context.Background(), pod, "connectors"); status.Code(err) != codes.NotFound {
				t.Fatalf("a volume of a made-up Connector: %v, want NotFound", err)
			}
		}
	}
	real := podWithVolume(t, env.kubelet, ns, "real", map[string]string{"connectors": "real"}, nil)
	if err := env.kubelet.Publish(context.Background(), real, "connectors"); err != nil {
		t.Fatalf("a volume of a real Connector: %v", err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), real, "connectors") })
	verbs := nodeConnectorVerbs(t, ns, since)
	if verbs["watch"] != 1 || verbs["list"] != 11 {
		t.Errorf("10 made-up names published twice each and a real one: %v, want 11 lists and the real one's watch", verbs)
	}
}

// TestTenancyForgedTokensCostNoReview: a token for the driver's audience, not expired and well
// formed, is anyone's to make; one that none of the ServiceAccount issuer's keys signed is
// refused by the node before any TokenReview (the node as deployed, its keys read from the
// API server's /openid/v1/jwks, its reviews from the audit log), and a real one still passes.
func TestTenancyForgedTokensCostNoReview(t *testing.T) {
	tool := startGitServer(t, false)
	env := startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	url := env.proxyURL + "/namespaces/" + ns + "/connectors/tool/repo.git/info/refs?service=git-upload-pack"
	get := func(token string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + token}))
	}
	if code, body := get(proxyToken(t, ns, "builder")); code != http.StatusOK {
		t.Fatalf("a real token: %d %q", code, body)
	}
	since := time.Now()
	for i, token := range forgedTokens(t, 30, "system:serviceaccount:"+ns+":builder", driverName) {
		if code, body := get(token); code != http.StatusUnauthorized {
			t.Fatalf("forged token %d: %d %q, want 401", i, code, body)
		}
	}
	// The control: a real token the node has not seen is reviewed, and the audit log shows it.
	allowConnectors(t, ns, "control", "tool")
	if code, body := get(proxyToken(t, ns, "control")); code != http.StatusOK {
		t.Fatalf("a real token after the forged ones: %d %q", code, body)
	}
	if reviews := nodeCreates(t, "tokenreviews", since); len(reviews) != 1 {
		t.Errorf("30 forged tokens and a real one cost %d TokenReviews, want one (the real one's)", len(reviews))
	}
}

// forgedTokens makes n well-formed ServiceAccount tokens of subject for audience, unexpired,
// each unlike the others, claiming a Pod of the tests' node, signed by a key no issuer holds:
// anyone can make them.
func forgedTokens(t *testing.T, n int, subject, audience string) []string {
	t.Helper()
	forger, err := rsa.GenerateKey(cryptorand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: forger, KeyID: "forged"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, n)
	for i := range tokens {
		if tokens[i], err = jwt.Signed(signer).Claims(map[string]any{"iss": "https://kubernetes.default.svc.cluster.local",
			"sub": subject, "aud": []string{audience}, "exp": time.Now().Add(time.Hour).Unix(), "jti": strconv.Itoa(i),
			// Bound, as it claims, to a Pod of the tests' node: only the signature gives it away.
			"kubernetes.io": map[string]any{"pod": map[string]string{"name": "forged", "uid": "forged"}, "node": map[string]string{"name": "node-1", "uid": "forged"}}}).Serialize(); err != nil {
			t.Fatal(err)
		}
	}
	return tokens
}

// TestTenancyConnectorsAPIReviewsHaveTheirOwnLimit: the Connectors API takes any token the
// cluster accepts (a console user's, an OIDC issuer's: no audience, no key of its own to check
// them with), so a well-formed token with a future exp, which anyone can make, costs it a
// TokenReview. Its reviews have a client and rate limit of their own
// (--connectors-api-auth-qps): here one review in all, which the first made-up token spends.
// The next is answered 503 (the limiter would not send its review in time: a failure to ask,
// neither a rejection nor kept as one), while a Pod's request through the proxy, which shared
// that limit before, is reviewed and served.
func TestTenancyConnectorsAPIReviewsHaveTheirOwnLimit(t *testing.T) {
	tool := startGitServer(t, false)
	env := startProxyDriver(t, func(o *driver.Options) { o.APIAuthQPS, o.APIAuthBurst = 1e-6, 1 })
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	api := env.proxyURL + proxy.APIPrefix + ns + "/tool/path/"
	madeUp := func(i int) string {
		return fakeJWT(fmt.Sprintf(`{"exp":%d,"jti":"%d"}`, time.Now().Add(time.Hour).Unix(), i))
	}
	if code, body := do(t, noRedirects, newRequest(t, "GET", api, map[string]string{"Authorization": "Bearer " + madeUp(0)})); code != http.StatusUnauthorized {
		t.Fatalf("the first made-up token at the API: %d %q, want 401 (reviewed)", code, body)
	}
	code, body := do(t, noRedirects, newRequest(t, "GET", api, map[string]string{"Authorization": "Bearer " + madeUp(1)}))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot review the token now") {
		t.Fatalf("the second made-up token at the API: %d %q, want 503 while its reviews' limit is spent", code, body)
	}
	refs := env.proxyURL + "/namespaces/" + ns + "/connectors/tool/repo.git/info/refs?service=git-upload-pack"
	if code, body := do(t, noRedirects, newRequest(t, "GET", refs, map[string]string{"Authorization": "Bearer " + proxyToken(t, ns, "builder")})); code != http.StatusOK {
		t.Fatalf("a Pod's request through the proxy, the API's limit spent: %d %q", code, body)
	}
}

// nodeCreates is what the node, as deployed, created of a resource since a time, from the
// audit log.
func nodeCreates(t *testing.T, resource string, since time.Time) []auditv1.Event {
	t.Helper()
	events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.Verb == "create" && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == resource && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// nodeConnectorVerbs counts, by verb, what the node as deployed asked of the Connectors of ns
// since a time, from the audit log.
func nodeConnectorVerbs(t *testing.T, ns string, since time.Time) map[string]int {
	t.Helper()
	verbs := map[string]int{}
	for _, ev := range nodeConnectorRequests(t, ns, since) {
		verbs[ev.Verb]++
	}
	return verbs
}

// nodeConnectorRequests are the node's requests for Connectors of ns since a time, from the
// audit log.
func nodeConnectorRequests(t *testing.T, ns string, since time.Time) []auditv1.Event {
	t.Helper()
	events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.ObjectRef != nil && ev.ObjectRef.Resource == "connectors" &&
			ev.ObjectRef.Namespace == ns && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// TestTenancyAGitRedirectDoesNotTakeThePodToken: git follows a redirect of its first request
// (a ref advertisement) and takes its target as the repository's base for what follows, sending
// those requests the http.extraHeader it matched to the proxy's address, the Pod token. A Git
// server a Connector's owner runs redirects to a server of its own that serves the repository
// to anyone: through the proxy, git's clone fails naming the redirect, and that server gets
// nothing; a redirect within the Connector's address (a renamed repository) is followed.
func TestTenancyAGitRedirectDoesNotTakeThePodToken(t *testing.T) {
	elsewhere, err := gitserver.Start(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(elsewhere.Close)
	elsewhere.SetCredential("", "") // serves anyone: git goes on to its upload-pack
	tool := startGitServer(t, false)
	toolURL, err := url.Parse(tool.URL)
	if err != nil {
		t.Fatal(err)
	}
	toTool := httputil.NewSingleHostReverseProxy(toolURL)
	var front *recorder
	front = startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch rest, _ := strings.CutPrefix(r.URL.RequestURI(), "/"); {
		case strings.HasPrefix(rest, "away/"):
			http.Redirect(w, r, elsewhere.URL+strings.TrimPrefix(rest, "away"), http.StatusFound)
		case strings.HasPrefix(rest, "moved/"):
			http.Redirect(w, r, front.URL+"/served"+strings.TrimPrefix(rest, "moved"), http.StatusMovedPermanently)
		case strings.HasPrefix(rest, "served/"):
			r.URL.Path = strings.TrimPrefix(r.URL.Path, "/served")
			toTool.ServeHTTP(w, r)
		}
	})
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	createSecret(t, ns, "front", corev1.SecretTypeBasicAuth, map[string]string{"username": tool.Username, "password": tool.Password})
	newConnectorWithSecret(t, ns, "front", gitClass(t), front.URL, "basicAuth", "front")
	allowConnectors(t, ns, "builder", "front")
	pod := podWithVolume(t, env.kubelet, ns, "git", map[string]string{"connector.name": "front", "configuration.names": "gitconfig"}, nil)
	if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	vol := env.kubelet.TargetPath(pod, "connectors")
	gitEnv := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")}
	out, err := gitserver.Git("", gitEnv, "clone", front.URL+"/away/repo.git", filepath.Join(t.TempDir(), "clone"))
	if err == nil || !strings.Contains(out, "502") {
		t.Errorf("git clone redirected away: %v, want a failure naming the proxy's 502\n%s", err, out)
	}
	if got := elsewhere.Requests(); len(got) != 0 {
		t.Errorf("the server the Git server redirected to got %d requests (the first %s %s)", len(got), got[0].Method, got[0].Path)
	}
	// Within the Connector's address: the proxy rewrites it onto itself, and git follows.
	if out, err := gitserver.Git("", gitEnv, "clone", front.URL+"/moved/repo.git", filepath.Join(t.TempDir(), "renamed")); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
}

// TestTenancyABodyAToolMayIgnoreEndsItsConnection: a tool that ignores the body of a GET or a
// DELETE (a CL.0 server) reads it as the next request on the connection, and the next
// request's head, its injected credential with it, as that one's headers: a caller allowed
// only reads would write, and a caller's smuggled POST would store the credential where the
// caller reads it back. The proxy closes a connection after a GET, HEAD, OPTIONS or DELETE that
// carried a body, so that the head it smuggles is never completed.
func TestTenancyABodyAToolMayIgnoreEndsItsConnection(t *testing.T) {
	lis, err := net.Listen("tcp", gitserver.Host+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var mu sync.Mutex
	var heads []string
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // every head on the connection, bodies ignored
					var head []string
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line = strings.TrimRight(line, "\r\n"); line == "" {
							break
						}
						head = append(head, line)
					}
					mu.Lock()
					heads = append(heads, strings.Join(head, " | "))
					mu.Unlock()
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	env, ns, token := basicAuthTool(t, "http://"+lis.Addr().String())
	client := &http.Client{Timeout: 20 * time.Second}
	// A DELETE's body a tool may ignore as well; the second request carries a body too: it
	// takes the same pool of connections.
	for _, method := range []string{"GET", "DELETE"} {
		for _, body := range []string{"POST /api/v4/projects/1/snippets HTTP/1.1\r\nHost: t\r\nX-Pad: ", "x"} {
			req := newRequest(t, method, env.proxyURL+"/namespaces/"+ns+"/connectors/tool/x", map[string]string{"Authorization": "Bearer " + token})
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range heads {
		if strings.HasPrefix(h, "POST") {
			t.Errorf("the tool read a request smuggled in a GET's or DELETE's body: %.120s", h)
		}
	}
	if len(heads) < 4 {
		t.Errorf("the tool read %d requests, want the 2 GETs and 2 DELETEs", len(heads))
	}
}

// basicAuthTool starts a proxy driver and a namespace whose git Connector tool, at url, has a
// Basic credential (bot, tool-secret) and may be used by builder, whose token it returns.
func basicAuthTool(t *testing.T, url string) (env *proxyEnv, ns, token string) {
	t.Helper()
	env = startProxyDriver(t, nil)
	ns = newNamespace(t)
	createSecret(t, ns, "tool", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": "tool-secret"})
	newConnectorWithSecret(t, ns, "tool", gitClass(t), url, "basicAuth", "tool")
	allowConnectors(t, ns, "builder", "tool")
	return env, ns, proxyToken(t, ns, "builder")
}
