package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/test/registry"
)

// apiToken is a token of a ServiceAccount for the API server's own audience, as a UI holds.
func apiToken(t *testing.T, ns, sa string) string {
	t.Helper()
	ctx := context.Background()
	create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}})
	tr, err := cp.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// apiCall calls the Connectors API and decodes a List, or returns the Status.
func apiCall(t *testing.T, method, url, token string) (int, connectorsapi.List, metav1.Status) {
	t.Helper()
	req := newRequest(t, method, url, map[string]string{"Authorization": "Bearer " + token})
	code, body := do(t, noRedirects, req)
	var list connectorsapi.List
	var st metav1.Status
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("%s: not a List: %v\n%s", url, err, body)
		}
	} else if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" {
		t.Fatalf("%s: status %d without a Kubernetes Status: %s", url, code, body)
	}
	return code, list, st
}

func names(l connectorsapi.List) string {
	var out []string
	for _, it := range l.Items {
		out = append(out, it.Name)
	}
	return strings.Join(out, ",")
}

// pushImages fills the registry with repositories and tags, as its own user.
func pushImages(t *testing.T, reg *registry.Server, tags map[string][]string) {
	t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})
	for repo, ts := range tags {
		for _, tag := range ts {
			ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/"+repo+":"+tag, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img, auth); err != nil {
				t.Fatalf("push %s: %v", ref, err)
			}
		}
	}
}

func TestConnectorsAPI(t *testing.T) {
	tool := startGitServer(t, false)
	if err := tool.AddRefs([]string{"feature-a", "feature-b"}, []string{"v1.0", "v1.1"}); err != nil {
		t.Fatal(err)
	}
	head, err := tool.Head()
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t)
	pushImages(t, reg, map[string][]string{"team/app": {"v1", "v2", "v3", "v4", "v5"}, "team/web": {"latest"}, "lib/base": {"1"}})
	garbage := startGarbageServer(t)

	env := startProxyDriver(t, func(o *driver.Options) { o.RegistryPageSize = 2 })
	ns := newNamespace(t)
	git, oci := gitClass(t), deployedClass(t, "oci.yaml")
	gitConnector(t, ns, "git", git, tool)
	ociConnector(t, ns, "registry", oci, reg, reg.Password)
	newConnector(t, ns, "down", git, "http://127.0.0.2:9")
	createSecret(t, ns, "wrong", corev1.SecretTypeBasicAuth, map[string]string{"username": "x", "password": "wrong"})
	newConnectorWithSecret(t, ns, "badcred", git, tool.URL, "basicAuth", "wrong")
	newConnector(t, ns, "garbage", git, garbage)

	viewer := apiToken(t, ns, "viewer")
	stranger := apiToken(t, ns, "stranger")
	allowConnectors(t, ns, "viewer", "git", "registry", "down", "badcred", "garbage", "plugged")
	// A UI builds URLs from the Connector's status.api.path.
	gitPath := waitAPIPath(t, ns, "git")
	if want := "/connectors/v1alpha1/" + ns + "/git/path"; gitPath != want {
		t.Fatalf("status.api.path %q, want %q", gitPath, want)
	}
	api := func(connector, rest string) string { return connectorAPI(env, ns, connector, rest) }
	gitrefs := env.proxyURL + gitPath + "/git/gitrefs?repositoryUrl=" + tool.URL + "/repo.git"

	t.Run("gitrefs", func(t *testing.T) {
		code, list, st := apiCall(t, "GET", gitrefs, viewer)
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, st.Message)
		}
		want := "refs/heads/feature-a,refs/heads/feature-b,refs/heads/main,refs/tags/v1.0,refs/tags/v1.1"
		if names(list) != want || list.ListMeta.TotalItems != 5 {
			t.Fatalf("items %s (total %d), want %s", names(list), list.ListMeta.TotalItems, want)
		}
		for _, it := range list.Items {
			if it.Commit != head {
				t.Errorf("%s has commit %q, want %s", it.Name, it.Commit, head)
			}
		}
		_, list, _ = apiCall(t, "GET", gitrefs+"&search=feature", viewer)
		if names(list) != "refs/heads/feature-a,refs/heads/feature-b" || list.ListMeta.TotalItems != 2 {
			t.Errorf("search: %s", names(list))
		}
		_, list, _ = apiCall(t, "GET", gitrefs+"&itemsPerPage=2&page=2", viewer)
		if names(list) != "refs/heads/main,refs/tags/v1.0" || list.ListMeta.TotalItems != 5 {
			t.Errorf("page 2: %s (total %d)", names(list), list.ListMeta.TotalItems)
		}
	})
	t.Run("registry repositories and tags across pages", func(t *testing.T) {
		requests := func(path string) int {
			n := 0
			for _, r := range reg.Requests() {
				if r.Path == path && strings.HasPrefix(r.Authorization, "Bearer ") {
					n++
				}
			}
			return n
		}
		catalogBefore, tagsBefore := requests("/v2/_catalog"), requests("/v2/team/app/tags/list")
		defer func() {
			// Page size 2: 3 repositories take 2 pages, 5 tags 3, each followed through Link.
			if n := requests("/v2/_catalog") - catalogBefore; n < 2 {
				t.Errorf("%d authorized catalog pages fetched, want at least 2", n)
			}
			if n := requests("/v2/team/app/tags/list") - tagsBefore; n < 3 {
				t.Errorf("%d authorized tag pages fetched, want at least 3", n)
			}
		}()
		code, list, st := apiCall(t, "GET", api("registry", "/oci/repositories"), viewer)
		if code != http.StatusOK || names(list) != "lib/base,team/app,team/web" {
			t.Fatalf("repositories: %d %s %s", code, names(list), st.Message)
		}
		code, list, st = apiCall(t, "GET", api("registry", "/oci/tags?repository=team/app"), viewer)
		if code != http.StatusOK || names(list) != "v1,v2,v3,v4,v5" {
			t.Fatalf("tags: %d %s %s", code, names(list), st.Message)
		}
	})
	t.Run("passthrough keeps the query and injects the credential", func(t *testing.T) {
		code, body := do(t, noRedirects, newRequest(t, "GET", api("registry", "/v2/_catalog?n=1"),
			map[string]string{"Authorization": "Bearer " + viewer}))
		var catalog struct{ Repositories []string }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &catalog) != nil || len(catalog.Repositories) != 1 {
			t.Fatalf("status %d body %s", code, body)
		}
	})
	statusCases := []struct {
		name, method, url, token string
		code                     int
		msg                      string
	}{
		{"no token", "GET", gitrefs, "", 401, "Bearer token"},
		{"no get on the Connector", "GET", gitrefs, stranger, 403, "may not get connectors of Connector " + ns + "/git"},
		{"write without passthrough", "POST", api("git", "/repo.git/git-upload-pack"), viewer, 405, "enable-connector-apis-write-passthrough"},
		{"old path form", "GET", env.proxyURL + "/connectors/v1alpha1/namespaces/" + ns + "/connectors/git/api/gitrefs", viewer, 404, "status.api.path"},
		{"repository outside the Connector", "GET", api("git", "/git/gitrefs?repositoryUrl=http://elsewhere.example.com/r.git"), viewer, 400, "not under the Connector's address"},
		{"unreachable tool", "GET", api("down", "/git/gitrefs?repositoryUrl=http://127.0.0.2:9/r.git"), viewer, 503, "unreachable"},
		{"tool rejects the credential", "GET", api("badcred", "/git/gitrefs?repositoryUrl="+tool.URL+"/repo.git"), viewer, 502, "rejected the Connector's credential"},
		{"tool answers garbage", "GET", api("garbage", "/git/gitrefs?repositoryUrl="+garbage+"/r.git"), viewer, 502, "could not be read"},
		// go-git decodes the path into the URL it asks: %3F ends it, and the list's own suffix
		// would become a query.
		{"repository URL with an escaped query", "GET", api("git", "/git/gitrefs?repositoryUrl="+url.QueryEscape(tool.URL+"/api/v4/projects/1/triggers%3F")), viewer, 400,
			"without user information, query or fragment"},
		{"repository URL with a query", "GET", api("git", "/git/gitrefs?repositoryUrl="+url.QueryEscape(tool.URL+"/repo.git?x=")), viewer, 400, "query or fragment"},
		{"repository at a denied path", "GET", api("git", "/git/gitrefs?repositoryUrl="+url.QueryEscape(tool.URL+"/api/v4/projects/1/triggers")), viewer, 403,
			`cannot be asked: destination ` + strings.TrimPrefix(tool.URL, "http://") + ` is not allowed: the proxy denies "/api/v4/projects/*/triggers" (--proxy-denied-paths)`},
	}
	for _, tc := range statusCases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, st := apiCall(t, tc.method, tc.url, tc.token)
			if code != tc.code || int(st.Code) != tc.code || !strings.Contains(st.Message, tc.msg) {
				t.Fatalf("status %d (%d) %q, want %d with %q", code, st.Code, st.Message, tc.code, tc.msg)
			}
		})
	}
	t.Run("a tool's refusal is not quoted", func(t *testing.T) {
		// go-git quotes the tool's 401 answer whole, from a path the caller chose.
		if _, _, st := apiCall(t, "GET", api("badcred", "/git/gitrefs?repositoryUrl="+tool.URL+"/repo.git"), viewer); strings.Contains(st.Message, "bad credentials") {
			t.Errorf("the Status quotes the tool's answer: %q", st.Message)
		}
	})
	t.Run("a method override is refused", func(t *testing.T) {
		// A tool may run the method the header names: a read grant would delete.
		for _, header := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X_HTTP_METHOD_OVERRIDE"} {
			code, body := do(t, noRedirects, newRequest(t, "GET", api("registry", "/v2/_catalog"),
				map[string]string{"Authorization": "Bearer " + viewer, header: "DELETE"}))
			if code != http.StatusMethodNotAllowed || !strings.Contains(body, http.CanonicalHeaderKey(header)) {
				t.Errorf("GET with %s: DELETE: status %d %q, want 405 naming the header", header, code, body)
			}
		}
		code, body := do(t, noRedirects, newRequest(t, "GET", api("registry", "/v2/_catalog?n=1&_method=DELETE"),
			map[string]string{"Authorization": "Bearer " + viewer}))
		if code != http.StatusMethodNotAllowed || !strings.Contains(body, "_method query parameter") {
			t.Errorf("GET with _method=DELETE: status %d %q, want 405 naming the parameter", code, body)
		}
	})
	plugin, seen := startPlugin(t)
	pluginClass := newClass(t, "plugin")
	setClassAPI(t, pluginClass, &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: plugin + "/prefix"},
		OpenAPI: openAPIGets(map[string]map[string]string{
			"/plugin/projects":      {"x-provider-type": "api"},
			"/plugin/projects/{id}": {"x-provider-type": "api"},
			"/mirror/{page}":        {"x-provider-type": "proxy", "x-openapi-address": "mirror"},
			"/direct/{page}":        {"x-provider-type": "proxy", "x-openapi-address": garbage},
			"/nowhere":              {"x-provider-type": "proxy", "x-openapi-address": "absent"},
		})})
	create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "plugged", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: pluginClass, Address: tool.URL,
			AddressExtensions: []v1alpha1.NamedAddress{{Name: "mirror", Value: garbage}},
			Auth:              &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "git-auth"}}}})

	t.Run("a class's API service gets exactly the documented X-Plugin headers", func(t *testing.T) {
		var code int
		var list connectorsapi.List
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			code, list, _ = apiCall(t, "GET", api("plugged", "/plugin/projects?page=2"), viewer)
			return code == http.StatusOK
		}) {
			t.Fatalf("status %d", code)
		}
		if names(list) != "from-plugin" {
			t.Fatalf("items %s", names(list))
		}
		h := <-seen
		raw := func(key string) string {
			b, err := base64.StdEncoding.DecodeString(h.Get(key))
			if err != nil {
				t.Fatalf("%s is not base64: %q", key, h.Get(key))
			}
			return string(b)
		}
		if got := h.Get("X-Path"); got != "/prefix/plugin/projects?page=2" {
			t.Errorf("the plugin was asked %s, want the API address + the API path + the query", got)
		}
		if got, want := raw("X-Plugin-Meta"), `{"baseURL":"`+tool.URL+`"}`; got != want {
			t.Errorf("X-Plugin-Meta decodes to %s, want %s", got, want)
		}
		if got := raw("X-Plugin-Auth"); got != string(corev1.SecretTypeBasicAuth) {
			t.Errorf("X-Plugin-Auth decodes to %q, want the Secret type", got)
		}
		var data map[string]string
		if err := json.Unmarshal([]byte(raw("X-Plugin-Secret")), &data); err != nil || len(data) != 2 {
			t.Fatalf("X-Plugin-Secret decodes to %s, want the Secret's data (%v)", raw("X-Plugin-Secret"), err)
		}
		for key, want := range map[string]string{"username": tool.Username, "password": tool.Password} {
			if v, err := base64.StdEncoding.DecodeString(data[key]); err != nil || string(v) != want {
				t.Errorf("X-Plugin-Secret %s is not the base64 of the Secret's value", key)
			}
		}
		if h.Get("Authorization") != "" {
			t.Error("the caller's token reached the API service")
		}
	})
	t.Run("a caller's own X-Plugin headers never reach the API service", func(t *testing.T) {
		newConnector(t, ns, "plugged-anon", pluginClass, tool.URL) // no Secret: no X-Plugin-Auth, X-Plugin-Secret
		allowConnectorsAs(t, ns, "viewer", "use-plugged-anon", "plugged-anon")
		for len(seen) > 0 {
			<-seen
		}
		req := newRequest(t, "GET", api("plugged-anon", "/plugin/projects"), map[string]string{"Authorization": "Bearer " + viewer,
			"X-Plugin-Auth": "Zm9yZ2Vk", "X-Plugin-Secret": "Zm9yZ2Vk", "X-Plugin-Meta": "Zm9yZ2Vk"})
		if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := do(t, noRedirects, req.Clone(req.Context())); return code == http.StatusOK }) {
			t.Fatal("the plugin was not reached")
		}
		h := <-seen
		if h.Get("X-Plugin-Auth") != "" || h.Get("X-Plugin-Secret") != "" || h.Get("X-Plugin-Meta") == "Zm9yZ2Vk" {
			t.Errorf("the plugin got the caller's X-Plugin headers: %v", h)
		}
	})
	t.Run("x-openapi-address picks an address extension or a URL", func(t *testing.T) {
		for _, rest := range []string{"/mirror/one", "/direct/two"} {
			code, body := do(t, noRedirects, newRequest(t, "GET", api("plugged", rest), map[string]string{"Authorization": "Bearer " + viewer}))
			if code != http.StatusOK || !strings.Contains(body, "not git") {
				t.Errorf("%s: status %d %q, want the garbage server's answer", rest, code, body)
			}
		}
		code, _, st := apiCall(t, "GET", api("plugged", "/nowhere"), viewer)
		if code != http.StatusBadRequest || !strings.Contains(st.Message, `no address extension "absent"`) {
			t.Errorf("missing extension: %d %q", code, st.Message)
		}
	})
	t.Run("the caller's session stays with the caller and the tool's answer stays confined", func(t *testing.T) {
		// The Connector's author chose the address: it may be a server of theirs, called by a
		// console user who may get the Connector.
		seenBySpy := make(chan http.Header, 16)
		spy := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
			if r.UserAgent() != connectorstatus.ProbeUserAgent {
				seenBySpy <- r.Header.Clone()
			}
			w.Header().Set("Set-Cookie", "console-session=chosen-by-the-tool; Path=/")
			w.Header().Set("Access-Control-Allow-Origin", "https://any.example")
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Timing-Allow-Origin", "*")
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<script>document.cookie</script>")
		})
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "spied", Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: pluginClass, Address: tool.URL,
				AddressExtensions: []v1alpha1.NamedAddress{{Name: "mirror", Value: spy.URL}},
				Auth:              &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "git-auth"}}}})
		allowConnectorsAs(t, ns, "viewer", "use-spied", "spied")
		caller := map[string]string{"Cookie": "console-session=secret", "X-Forwarded-Access-Token": "gateway-token",
			"X-Remote-User": "admin", "X-Remote-Extra-Scopes": "all", "X-Auth-Request-Email": "admin@example.com", "Impersonate-User": "admin",
			"X-Amzn-Oidc-Accesstoken": "idp-token", "X-Goog-Iap-Jwt-Assertion": "iap-jwt", "Cf-Access-Jwt-Assertion": "access-jwt",
			"X-Pomerium-Jwt-Assertion": "pomerium-jwt", "X-Ms-Token-Aad-Access-Token": "aad-token", "X-Ms-Client-Principal": "principal"}
		var res *http.Response
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			headers := map[string]string{"Authorization": "Bearer " + viewer}
			maps.Copy(headers, caller)
			var err error
			if res, err = noRedirects.Do(newRequest(t, "GET", api("spied", "/mirror/page"), headers)); err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		}) {
			t.Fatalf("the spy was not reached: %d", res.StatusCode)
		}
		got := <-seenBySpy
		for name := range caller {
			if v := got.Get(name); v != "" {
				t.Errorf("the tool received the caller's %s: %q", name, v)
			}
		}
		if !strings.HasPrefix(got.Get("Authorization"), "Basic ") {
			t.Errorf("the tool's credential was not injected: Authorization %q", got.Get("Authorization"))
		}
		if v := res.Header.Values("Set-Cookie"); len(v) != 0 {
			t.Errorf("the tool set a cookie on the API's origin: %q", v)
		}
		for _, name := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Timing-Allow-Origin"} {
			if v := res.Header.Get(name); v != "" {
				t.Errorf("the tool let other origins read the API's answers: %s %q", name, v)
			}
		}
		if res.Header.Get("Content-Security-Policy") != "sandbox" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("the tool's page is not sandboxed: CSP %q, X-Content-Type-Options %q",
				res.Header.Get("Content-Security-Policy"), res.Header.Get("X-Content-Type-Options"))
		}
	})
	t.Run("an api operation without an API service or a built-in", func(t *testing.T) {
		class := newClass(t, "noapi")
		setClassAPI(t, class, &v1alpha1.APISpec{OpenAPI: openAPIGets(map[string]map[string]string{"/things": {"x-provider-type": "api"}})})
		newConnector(t, ns, "noapi", class, tool.URL)
		allowConnectorsAs(t, ns, "viewer", "use-noapi", "noapi")
		code, _, st := apiCall(t, "GET", api("noapi", "/things"), viewer)
		if code != http.StatusBadRequest || st.Message != "api address of connectorclass '"+class+"' is not resolved" {
			t.Errorf("status %d %q", code, st.Message)
		}
	})
	t.Run("connectors/apis when the flag is on", func(t *testing.T) {
		setFlags(t, map[string]string{"enable-connector-apis-permissions": "true"})
		t.Cleanup(func() { setFlags(t, map[string]string{}) })
		refused := func() bool {
			code, _, st := apiCall(t, "GET", gitrefs, viewer)
			return code == http.StatusForbidden && strings.Contains(st.Message, "connectors/apis")
		}
		if !kubelet.WaitUntil(10*time.Second, refused) {
			t.Fatal("without connectors/apis the call was not refused")
		}
		grantAPIs(t, ns, "viewer", "git")
		if !kubelet.WaitUntil(15*time.Second, func() bool { code, _, _ := apiCall(t, "GET", gitrefs, viewer); return code == http.StatusOK }) {
			t.Fatal("a connectors/apis grant did not let the call through")
		}
		// connectors/apis/<class><openapi path>: that path only.
		scoped := apiToken(t, ns, "scoped")
		allowConnectors(t, ns, "scoped", "plugged")
		grantResource(t, ns, "scoped", "plugged", "connectors/apis/"+pluginClass+"/plugin/projects/{id}")
		ok := func(token, rest string) bool {
			code, _, _ := apiCall(t, "GET", api("plugged", rest), token)
			return code == http.StatusOK
		}
		if !kubelet.WaitUntil(15*time.Second, func() bool { return ok(scoped, "/plugin/projects/7") }) {
			t.Fatal("a grant on the OpenAPI path did not let a request of that path through")
		}
		code, _, st := apiCall(t, "GET", api("plugged", "/plugin/projects"), scoped)
		if code != http.StatusForbidden || !strings.Contains(st.Message, "connectors/apis/"+pluginClass+"/plugin/projects of") {
			t.Errorf("another path: %d %q, want 403 naming connectors/apis/<class>/plugin/projects", code, st.Message)
		}
		// A {template} segment with an escaped slash is more segments to a tool that decodes it
		// before it routes: the path's grant covers it only where the class says its tool reads
		// it within one segment (as GitLab reads group%2Fproject).
		// So is one escaped twice (%252F) to a tool behind a front that decodes once more.
		for _, seg := range []string{"7%2Fsecrets", "7%252Fsecrets"} {
			code, _, st = apiCall(t, "GET", api("plugged", "/plugin/projects/"+seg), scoped)
			if code != http.StatusForbidden || !strings.Contains(st.Message, v1alpha1.AnnotationAPIEscapedSlashes) {
				t.Errorf("a template segment %s: %d %q, want 403 naming %s", seg, code, st.Message, v1alpha1.AnnotationAPIEscapedSlashes)
			}
		}
		updateClass(t, pluginClass, func(c *v1alpha1.ConnectorClass) {
			c.Annotations = map[string]string{v1alpha1.AnnotationAPIEscapedSlashes: "segment"}
		})
		if !kubelet.WaitUntil(15*time.Second, func() bool { return ok(scoped, "/plugin/projects/7%2Fsecrets") }) {
			t.Error("a class whose tool reads %2F within a segment: the path's grant did not cover it")
		}
		// connectors/apis/<class>: every path of the class.
		classwide := apiToken(t, ns, "classwide")
		allowConnectors(t, ns, "classwide", "plugged")
		grantResource(t, ns, "classwide", "plugged", "connectors/apis/"+pluginClass)
		if !kubelet.WaitUntil(15*time.Second, func() bool { return ok(classwide, "/plugin/projects") && ok(classwide, "/plugin/projects/7") }) {
			t.Fatal("a grant on connectors/apis/<class> did not cover the class's paths")
		}
	})
	t.Run("api.permissions.rego names the verb", func(t *testing.T) {
		// A read grant is enough for git's POST git-upload-pack once the class says so.
		setFlags(t, map[string]string{"enable-connector-apis-permissions": "true", "enable-connector-apis-write-passthrough": "true"})
		t.Cleanup(func() { setFlags(t, map[string]string{}) })
		post := func(rest string) (int, string) {
			return do(t, noRedirects, newRequest(t, "POST", api("git", rest), map[string]string{"Authorization": "Bearer " + viewer}))
		}
		fetch := func() (int, string) { return post("/repo.git/git-upload-pack") }
		if !kubelet.WaitUntil(15*time.Second, func() bool { code, _ := fetch(); return code == http.StatusForbidden }) {
			code, msg := fetch()
			t.Fatalf("POST with a get-only grant and no permissions module: %d %q, want 403 (create)", code, msg)
		}
		updateClass(t, git, func(c *v1alpha1.ConnectorClass) {
			if c.Spec.API == nil {
				c.Spec.API = &v1alpha1.APISpec{}
			}
			c.Spec.API.Permissions = &v1alpha1.RegoPolicy{Rego: `package permissions

result := {"verb": "read"} if {
	input.request.method == "POST"
	endswith(input.request.path, "/git-upload-pack")
}
`}
		})
		if !kubelet.WaitUntil(15*time.Second, func() bool {
			code, _ := fetch()
			return code != http.StatusForbidden && code != http.StatusMethodNotAllowed
		}) {
			code, msg := fetch()
			t.Fatalf("POST git-upload-pack mapped to read: %d %q, want it through with the get grant", code, msg)
		}
		if code, _ := post("/repo.git/git-receive-pack"); code != http.StatusForbidden {
			t.Errorf("POST git-receive-pack (not mapped): %d, want 403", code)
		}
		// A path the module reads as a fetch only decoded (a tool routes ci%2Fgit-upload-pack
		// as one file, which a POST writes): refused.
		if code, msg := post("/api/v4/projects/42/repository/files/ci%2Fgit-upload-pack"); code != http.StatusForbidden ||
			!strings.Contains(msg, "cannot be computed") {
			t.Errorf("POST of a path whose decoding reads as a fetch: %d %q, want 403: its verb cannot be computed", code, msg)
		}
	})
	t.Run("featureflags", func(t *testing.T) {
		flagsURL := env.proxyURL + "/connectors-operator/featureflags"
		get := func(token string) (int, string) {
			h := map[string]string{}
			if token != "" {
				h["Authorization"] = "Bearer " + token
			}
			return do(t, noRedirects, newRequest(t, "GET", flagsURL, h))
		}
		if code, _ := get(""); code != http.StatusUnauthorized {
			t.Errorf("no token: %d", code)
		}
		if code, body := get(viewer); code != http.StatusForbidden || !strings.Contains(body, "connectorclasses") {
			t.Errorf("without access to ConnectorClasses: %d %s", code, body)
		}
		reader := apiToken(t, ns, "class-reader")
		allowClassList(t, ns, "class-reader")
		setFlags(t, map[string]string{"enable-connector-apis-write-passthrough": "true"})
		t.Cleanup(func() { setFlags(t, map[string]string{}) })
		var flags map[string]string
		if !kubelet.WaitUntil(15*time.Second, func() bool {
			code, body := get(reader)
			flags = nil
			return code == http.StatusOK && json.Unmarshal([]byte(body), &flags) == nil && flags["enable-connector-apis-write-passthrough"] == "true"
		}) {
			t.Fatalf("flags %v", flags)
		}
		for _, key := range []string{"enable-connector-apis-permissions", "enable-connector-proxy-permissions", "enable-connectors-approval", "enable-multi-connector"} {
			if v := flags[key]; v != "true" && v != "false" {
				t.Errorf("%s = %q, want a string boolean", key, v)
			}
		}
	})
	if l := logs.String(); strings.Contains(l, tool.Password) || strings.Contains(l, base64.StdEncoding.EncodeToString([]byte(tool.Password))) ||
		strings.Contains(l, reg.Password) || strings.Contains(l, viewer) {
		t.Error("the driver log holds a tool password or the caller's token")
	}
}

// grantAPIs grants connectors/apis get on a Connector.
func grantAPIs(t *testing.T, ns, sa, connector string) {
	t.Helper()
	name := "apis-" + sa
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors/apis"},
		ResourceNames: []string{connector}, Verbs: []string{"get"},
	}}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}})
}

// serveTool serves h on a free port of the test tools' loopback address until the test ends,
// and returns its URL.
func serveTool(t *testing.T, h http.Handler) string {
	t.Helper()
	lis, err := net.Listen("tcp", gitserver.Host+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + lis.Addr().String()
}

// startGarbageServer answers every request with 200 and text that is no protocol at all.
func startGarbageServer(t *testing.T) string {
	t.Helper()
	return serveTool(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("hello, this is not git\n"))
	}))
}

// connectorAPI is the Connectors API URL of a Connector's path rest (starting with "/").
func connectorAPI(env *proxyEnv, ns, connector, rest string) string {
	return env.proxyURL + connectorsapi.ConnectorPath(ns, connector) + rest
}

// waitAPIPath waits for a Connector's status.api.path and returns it.
func waitAPIPath(t *testing.T, ns, name string) string {
	t.Helper()
	var c v1alpha1.Connector
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		return cp.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &c) == nil &&
			c.Status.API != nil && c.Status.API.Path != ""
	}) {
		t.Fatalf("Connector %s/%s has no status.api.path", ns, name)
	}
	return c.Status.API.Path
}

// openAPIGets is a spec.api.openapi document with a get operation, with the given extension
// fields, per path.
func openAPIGets(paths map[string]map[string]string) *apiextensionsv1.JSON {
	doc := map[string]any{"openapi": "3.0.3", "info": map[string]string{"title": "test", "version": "v1"}}
	ops := map[string]any{}
	for p, ext := range paths {
		ops[p] = map[string]any{"get": ext}
	}
	doc["paths"] = ops
	return jsonValue(doc)
}

// setClassAPI sets a class's spec.api.
func setClassAPI(t *testing.T, name string, api *v1alpha1.APISpec) {
	t.Helper()
	updateClass(t, name, func(c *v1alpha1.ConnectorClass) { c.Spec.API = api })
}

// updateClass changes a class, reading it again on a conflict: the controller writes its
// status meanwhile.
func updateClass(t testing.TB, name string, change func(*v1alpha1.ConnectorClass)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var class v1alpha1.ConnectorClass
		if err := cp.Client.Get(context.Background(), types.NamespacedName{Name: name}, &class); err != nil {
			return err
		}
		change(&class)
		return cp.Client.Update(context.Background(), &class)
	}); err != nil {
		t.Fatal(err)
	}
}

// startPlugin starts a class API service that answers a List and hands over each request's
// headers, with its path and query as X-Path, its connection's client address as X-Connection
// and the size of the body it read as X-Body-Bytes.
func startPlugin(t *testing.T) (string, <-chan http.Header) {
	t.Helper()
	seen := make(chan http.Header, 16)
	url := serveTool(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("X-Path", r.URL.RequestURI())
		h.Set("X-Connection", r.RemoteAddr)
		body, _ := io.ReadAll(r.Body)
		h.Set("X-Body-Bytes", strconv.Itoa(len(body)))
		select {
		case seen <- h:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"listMeta":{"totalItems":1},"items":[{"name":"from-plugin"}]}`))
	}))
	return url, seen
}

// grantResource grants get on a Connector's (sub)resource, as written in a Role.
func grantResource(t *testing.T, ns, sa, connector, resource string) {
	t.Helper()
	name := "res-" + sa
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{resource},
		ResourceNames: []string{connector}, Verbs: []string{"get"},
	}}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}})
}

// allowClassList lets a ServiceAccount list ConnectorClasses (cluster-wide).
func allowClassList(t *testing.T, ns, sa string) {
	t.Helper()
	name := "list-classes-" + ns + "-" + sa
	create(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{v1alpha1.ResourceConnectorClasses}, Verbs: []string{"list"},
	}}})
	create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}})
	t.Cleanup(func() {
		_ = cp.Kube.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cp.Kube.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// TestConnectorsAPITagsAcrossPages lists a repository with more tags than one registry page:
// every tag, and totalItems counting them all (the list once stopped at the first page).
func TestConnectorsAPITagsAcrossPages(t *testing.T) {
	reg := startRegistry(t)
	const tagCount, pageSize = 120, 100
	tags := make([]string, tagCount)
	for i := range tags {
		tags[i] = fmt.Sprintf("v%03d", i)
	}
	tagImage(t, reg, "team/many", tags)
	env := startProxyDriver(t, func(o *driver.Options) { o.RegistryPageSize = pageSize })
	ns := newNamespace(t)
	ociConnector(t, ns, "registry", deployedClass(t, "oci.yaml"), reg, reg.Password)
	viewer := apiToken(t, ns, "viewer")
	allowConnectors(t, ns, "viewer", "registry")

	code, list, st := apiCall(t, "GET", connectorAPI(env, ns, "registry", "/oci/tags?repository=team/many&itemsPerPage=500"), viewer)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, st.Message)
	}
	if list.ListMeta.TotalItems != tagCount || names(list) != strings.Join(tags, ",") {
		t.Fatalf("%d items (totalItems %d), want all %d tags", len(list.Items), list.ListMeta.TotalItems, tagCount)
	}
	pages := 0
	for _, r := range reg.Requests() {
		if r.Path == "/v2/team/many/tags/list" && strings.HasPrefix(r.Authorization, "Bearer ") {
			pages++
		}
	}
	if pages < 2 {
		t.Errorf("%d tag pages fetched, want 2 (page size %d)", pages, pageSize)
	}
	code, list, _ = apiCall(t, "GET", connectorAPI(env, ns, "registry", "/oci/tags?repository=team/many&page=3&itemsPerPage=50"), viewer)
	if code != http.StatusOK || list.ListMeta.TotalItems != tagCount || names(list) != strings.Join(tags[100:], ",") {
		t.Fatalf("page 3 of 50: %d, %s (totalItems %d)", code, names(list), list.ListMeta.TotalItems)
	}
	// The registry's own API through the passthrough: its Link header leads to the next page
	// through the Connectors API, not to the registry.
	next, seenTags := connectorAPI(env, ns, "registry", "/v2/team/many/tags/list?n=50"), []string{}
	for pagesRead := 0; next != "" && pagesRead < 10; pagesRead++ {
		res, err := noRedirects.Do(newRequest(t, "GET", next, map[string]string{"Authorization": "Bearer " + viewer}))
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Tags []string }
		err = json.NewDecoder(res.Body).Decode(&body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("%s: status %d %v", next, res.StatusCode, err)
		}
		seenTags = append(seenTags, body.Tags...)
		next = ""
		if link := res.Header.Get("Link"); link != "" {
			ref, err := res.Request.URL.Parse(strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<"))
			if err != nil || !strings.HasPrefix(ref.String(), connectorAPI(env, ns, "registry", "/")) {
				t.Fatalf("Link %q leads off the Connectors API", link)
			}
			next = ref.String()
		}
	}
	if strings.Join(seenTags, ",") != strings.Join(tags, ",") {
		t.Fatalf("paging through the passthrough gave %d tags, want %d", len(seenTags), len(tags))
	}
}

// tagImage pushes one image to a repository under every tag given, as the registry's user.
func tagImage(t *testing.T, reg *registry.Server, repo string, tags []string) {
	t.Helper()
	pushImages(t, reg, map[string][]string{repo: tags[:1]})
	auth := remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})
	first, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/"+repo+":"+tags[0], name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(first, auth)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags[1:] {
		if err := remote.Tag(first.Context().Tag(tag), desc, auth); err != nil {
			t.Fatalf("tag %s: %v", tag, err)
		}
	}
}
