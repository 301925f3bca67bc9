package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/cgi"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestTenancyClassAPIServiceKeepsTenantsApart: a class's API service (plugin) serves every
// tenant's Connectors of its class, each request carrying the Connector's credential in
// X-Plugin-Secret. Were its connections shared, a tenant's GET or OPTIONS with a body, which a
// service that ignores such bodies reads as the start of the next request on the connection,
// would join the next tenant's request and credential to a request of the first tenant's
// making. So a read goes without its body and without the caller's hop-by-hop headers, and
// each tenant's requests come on connections of their own: two tenants alternating never share
// one.
func TestTenancyClassAPIServiceKeepsTenantsApart(t *testing.T) {
	env := startProxyDriver(t, nil)
	plugin, seen := startPlugin(t)
	class := newClass(t, "plugin")
	setClassAPI(t, class, &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: plugin},
		OpenAPI: openAPIGets(map[string]map[string]string{"/plugin/projects": {"x-provider-type": "api"}})})
	tenants := map[string]string{} // namespace → its viewer's token
	for _, name := range []string{"tenant-a", "tenant-b"} {
		ns := newNamespace(t)
		createSecret(t, ns, "cred", corev1.SecretTypeBasicAuth, map[string]string{"username": name, "password": name + "-secret"})
		newConnectorWithSecret(t, ns, "plugged", class, "http://"+name+".example", "basicAuth", "cred")
		tenants[ns] = apiToken(t, ns, "viewer")
		allowConnectors(t, ns, "viewer", "plugged")
	}
	call := func(ns, method string, body string, header ...string) (int, string) {
		req, err := http.NewRequest(method, connectorAPI(env, ns, "plugged", "/plugin/projects"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body == "" {
			req.Body, req.ContentLength = nil, 0
		}
		req.Header.Set("Authorization", "Bearer "+tenants[ns])
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		return do(t, noRedirects, req)
	}
	namespaces := slices.Sorted(maps.Keys(tenants))
	for _, ns := range namespaces {
		if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := call(ns, http.MethodGet, ""); return code == http.StatusOK }) {
			t.Fatalf("%s's Connector never reached its class's API service", ns)
		}
	}
	for len(seen) > 0 {
		<-seen
	}

	// A read with a body, as a smuggler would send it, and a header it names hop-by-hop: the
	// service gets the read, without either.
	smuggled := "GET /plugin/projects HTTP/1.1\r\nHost: x\r\nX-Plugin-Meta: " + base64.StdEncoding.EncodeToString([]byte(`{"baseURL":"http://attacker"}`)) + "\r\nX-Pad: "
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		if code, body := call(namespaces[0], method, smuggled, "Connection", "X-Tenant-Hop", "X-Tenant-Hop", "1"); code != http.StatusOK {
			t.Fatalf("%s with a body: %d %q", method, code, body)
		}
		h := <-seen
		if h.Get("X-Body-Bytes") != "0" || h.Get("X-Tenant-Hop") != "" {
			t.Errorf("%s with a body: the service read %s bytes of body and X-Tenant-Hop %q, want none of either", method, h.Get("X-Body-Bytes"), h.Get("X-Tenant-Hop"))
		}
	}

	// Alternating tenants: each tenant's connections are its own.
	connections := map[string]map[string]bool{} // the tenant's username → the connections it came on
	for range 3 {
		for _, ns := range namespaces {
			if code, body := call(ns, http.MethodGet, ""); code != http.StatusOK {
				t.Fatalf("%s: %d %q", ns, code, body)
			}
			h := <-seen
			secret, _ := base64.StdEncoding.DecodeString(h.Get("X-Plugin-Secret"))
			var data map[string][]byte
			if err := json.Unmarshal(secret, &data); err != nil {
				t.Fatalf("X-Plugin-Secret: %v", err)
			}
			who := string(data["username"])
			if connections[who] == nil {
				connections[who] = map[string]bool{}
			}
			connections[who][h.Get("X-Connection")] = true
		}
	}
	for conn := range connections["tenant-a"] {
		if connections["tenant-b"][conn] {
			t.Errorf("connection %s carried both tenants' requests and credentials", conn)
		}
	}
	if len(connections) != 2 {
		t.Errorf("the service saw the credentials of %d tenants, want 2", len(connections))
	}
}

// TestTenancyClassAPIServiceNeedsWhatTheProxyNeeds: with enable-connector-proxy-permissions, a
// class's API service, which is given the Connector's credential whole, is called only for a
// caller who may use the Connector (connectors/proxy, or connectors/apis), as the API's
// pass-through to the tool is: get alone, which every ServiceAccount may hold on a shared
// Connector, is refused naming both, and the service gets nothing.
func TestTenancyClassAPIServiceNeedsWhatTheProxyNeeds(t *testing.T) {
	env := startProxyDriver(t, nil)
	plugin, seen := startPlugin(t)
	ns, viewer := pluggedConnector(t, "plugin", plugin, "bot", "viewer") // get
	setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	call := func() (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", connectorAPI(env, ns, "plugged", "/plugin/projects"), map[string]string{"Authorization": "Bearer " + viewer}))
	}
	want := "may not get connectors/proxy nor connectors/apis"
	if !kubelet.WaitUntil(15*time.Second, func() bool { code, body := call(); return code == http.StatusForbidden && strings.Contains(body, want) }) {
		code, body := call()
		t.Fatalf("the class's API service with get only: %d %q, want 403 saying %q", code, body, want)
	}
	for len(seen) > 0 { // calls before the flag was read
		<-seen
	}
	if code, body := call(); code != http.StatusForbidden {
		t.Fatalf("again: %d %q", code, body)
	}
	select {
	case h := <-seen:
		t.Fatalf("the service was called for a caller with get only (X-Plugin-Secret %d bytes)", len(h.Get("X-Plugin-Secret")))
	default:
	}
	grantResource(t, ns, "viewer", "plugged", "connectors/proxy")
	if !kubelet.WaitUntil(15*time.Second, func() bool { code, _ := call(); return code == http.StatusOK }) {
		code, body := call()
		t.Fatalf("the class's API service with connectors/proxy: %d %q, want 200", code, body)
	}
}

// TestTenancyClassAPIServiceStreamEndsWithItsGrant: a class's API service that streams its
// answer (a long poll, events) is given the Connector's credential for the call, and what it
// sends is got with it. The call is checked again while it lasts, for its caller, with the
// grants that allowed it: once the caller may no longer get the Connector, the answer is cut
// off, not ended as if it were whole.
func TestTenancyClassAPIServiceStreamEndsWithItsGrant(t *testing.T) {
	const ttl = time.Second
	env := startProxyDriver(t, func(o *driver.Options) {
		o.AuthzAllowTTL, o.TokenCacheTTL, o.AnswerRecheck = ttl, ttl, 500*time.Millisecond
	})
	service := serveTool(t, http.HandlerFunc(streamEvents))
	ns, token := pluggedConnector(t, "streaming-plugin", service, "bot", "viewer")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var answer *http.Response
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		req := newRequest(t, http.MethodGet, connectorAPI(env, ns, "plugged", "/plugin/projects"), map[string]string{"Authorization": "Bearer " + token})
		res, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err == nil && res.StatusCode != http.StatusOK {
			_ = res.Body.Close()
		}
		answer = res
		return err == nil && res.StatusCode == http.StatusOK
	}) {
		t.Fatal("the Connector never reached its class's API service")
	}
	defer answer.Body.Close()
	event := make([]byte, len("event: change\n\n"))
	for until := time.Now().Add(2 * time.Second); time.Now().Before(until); {
		if _, err := io.ReadFull(answer.Body, event); err != nil {
			t.Fatalf("the service's stream ended while its caller was allowed: %v", err)
		}
	}
	if err := cp.Kube.RbacV1().RoleBindings(ns).Delete(context.Background(), "use-connectors-viewer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, answer.Body); errors.Is(err, context.DeadlineExceeded) || err == nil {
		t.Errorf("the service's stream after its caller's get grant was removed: %v, want it cut", err)
	}
}

// TestTenancyClassAPIServiceBehindCGIReadsOnlyTheDriversPluginHeaders: a class's API service
// behind CGI (as WSGI and Rack servers do too) reads X_Plugin_Meta and X-Plugin-Meta as one
// variable, and keeps one of them. A caller who may use a Connector but not read its credential
// sends its own, naming its server as baseURL: had the service kept the caller's, it would send
// the Connector's credential there. The service (net/http/cgi running a shell script) must
// see the driver's headers only, on every try (CGI's pick among the two is random).
func TestTenancyClassAPIServiceBehindCGIReadsOnlyTheDriversPluginHeaders(t *testing.T) {
	env := startProxyDriver(t, nil)
	// The script answers a List whose one item is named by the variables it was given.
	script := `printf 'Content-Type: application/json\r\n\r\n{"listMeta":{"totalItems":1},"items":[{"name":"%s %s"}]}' "$HTTP_X_PLUGIN_META" "$HTTP_X_PLUGIN_AUTH"`
	service := serveTool(t, &cgi.Handler{Path: "/bin/sh", Args: []string{"-c", script}})

	ns, token := pluggedConnector(t, "cgi-plugin", service, "shared", "user")

	b64 := base64.StdEncoding.EncodeToString
	want := b64([]byte(`{"baseURL":"http://tool.example"}`)) + " " + b64([]byte(corev1.SecretTypeBasicAuth))
	forged := b64([]byte(`{"baseURL":"http://attacker.example"}`))
	list := func(header map[string]string) (int, string) {
		req := newRequest(t, http.MethodGet, connectorAPI(env, ns, "plugged", "/plugin/projects"), header)
		req.Header.Set("Authorization", "Bearer "+token)
		code, body := do(t, noRedirects, req)
		var answer struct {
			Items []struct{ Name string } `json:"items"`
		}
		if code == http.StatusOK && (json.Unmarshal([]byte(body), &answer) != nil || len(answer.Items) != 1) {
			t.Fatalf("the service's answer: %q", body)
		}
		if code == http.StatusOK {
			body = answer.Items[0].Name
		}
		return code, body
	}
	if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := list(nil); return code == http.StatusOK }) {
		t.Fatal("the Connector never reached its class's API service")
	}
	for i := range 20 {
		code, seen := list(map[string]string{"X_Plugin_Meta": forged, "X-PLUGIN_AUTH": b64([]byte("forged")), "x_plugin_secret": forged})
		if code != http.StatusOK || seen != want {
			t.Fatalf("try %d: status %d, the service read X-Plugin-Meta and X-Plugin-Auth as %q, want the driver's %q", i, code, seen, want)
		}
	}
}

// pluggedConnector is a class named class whose API service at service serves
// /plugin/projects (x-provider-type: api), and its Connector "plugged" at http://tool.example
// in a new namespace, with a basic-auth Secret of username (its password username-secret);
// sa, whose API token it returns, may get the Connector.
func pluggedConnector(t *testing.T, class, service, username, sa string) (ns, token string) {
	t.Helper()
	c := newClass(t, class)
	setClassAPI(t, c, &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: service},
		OpenAPI: openAPIGets(map[string]map[string]string{"/plugin/projects": {"x-provider-type": "api"}})})
	ns = newNamespace(t)
	createSecret(t, ns, "cred", corev1.SecretTypeBasicAuth, map[string]string{"username": username, "password": username + "-secret"})
	newConnectorWithSecret(t, ns, "plugged", c, "http://tool.example", "basicAuth", "cred")
	token = apiToken(t, ns, sa)
	allowConnectors(t, ns, sa, "plugged")
	return ns, token
}
