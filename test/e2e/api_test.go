package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
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
	git, oci := gitClass(t), ociClass(t)
	gitConnector(t, ns, "git", git, tool)
	ociConnector(t, ns, "registry", oci, reg, reg.Password)
	newConnector(t, ns, "down", git, "http://127.0.0.2:9")
	createSecret(t, ns, "wrong", corev1.SecretTypeBasicAuth, map[string]string{"username": "x", "password": "wrong"})
	newConnectorWithSecret(t, ns, "badcred", git, tool.URL, "basicAuth", "wrong")
	newConnector(t, ns, "garbage", git, garbage)

	viewer := apiToken(t, ns, "viewer")
	stranger := apiToken(t, ns, "stranger")
	allowConnectors(t, ns, "viewer", "git", "registry", "down", "badcred", "garbage", "plugged")
	api := func(connector, rest string) string {
		return fmt.Sprintf("%s/connectors/v1alpha1/namespaces/%s/connectors/%s/%s", env.proxyURL, ns, connector, rest)
	}
	gitrefs := api("git", "api/gitrefs?repositoryUrl="+tool.URL+"/repo.git")

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
		code, list, st := apiCall(t, "GET", api("registry", "api/repositories"), viewer)
		if code != http.StatusOK || names(list) != "lib/base,team/app,team/web" {
			t.Fatalf("repositories: %d %s %s", code, names(list), st.Message)
		}
		code, list, st = apiCall(t, "GET", api("registry", "api/tags?repository=team/app"), viewer)
		if code != http.StatusOK || names(list) != "v1,v2,v3,v4,v5" {
			t.Fatalf("tags: %d %s %s", code, names(list), st.Message)
		}
	})
	t.Run("passthrough keeps the query and injects the credential", func(t *testing.T) {
		code, body := do(t, noRedirects, newRequest(t, "GET", api("registry", "proxy/v2/_catalog?n=1"),
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
		{"write without passthrough", "POST", api("git", "proxy/repo.git/git-upload-pack"), viewer, 405, "enable-connector-apis-write-passthrough"},
		{"unknown custom API", "GET", api("git", "api/tags"), viewer, 404, "no custom API"},
		{"repository outside the Connector", "GET", api("git", "api/gitrefs?repositoryUrl=http://elsewhere.example.com/r.git"), viewer, 400, "not under the Connector's address"},
		{"unreachable tool", "GET", api("down", "api/gitrefs?repositoryUrl=http://127.0.0.2:9/r.git"), viewer, 503, "unreachable"},
		{"tool rejects the credential", "GET", api("badcred", "api/gitrefs?repositoryUrl="+tool.URL+"/repo.git"), viewer, 502, "rejected the Connector's credential"},
		{"tool answers garbage", "GET", api("garbage", "api/gitrefs?repositoryUrl="+garbage+"/r.git"), viewer, 502, "could not be read"},
	}
	for _, tc := range statusCases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, st := apiCall(t, tc.method, tc.url, tc.token)
			if code != tc.code || int(st.Code) != tc.code || !strings.Contains(st.Message, tc.msg) {
				t.Fatalf("status %d (%d) %q, want %d with %q", code, st.Code, st.Message, tc.code, tc.msg)
			}
		})
	}
	t.Run("a class's own API service gets the X-Plugin headers", func(t *testing.T) {
		seen := make(chan http.Header, 1)
		lis, err := net.Listen("tcp", gitserver.Host+":0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Clone()
			h.Set("X-Path", r.URL.RequestURI())
			seen <- h
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"listMeta":{"totalItems":1},"items":[{"name":"from-plugin"}]}`))
		})}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(func() { _ = srv.Close() })
		pluginClass := newClass(t, "plugin")
		var class v1alpha1.ConnectorClass
		if err := cp.Client.Get(context.Background(), types.NamespacedName{Name: pluginClass}, &class); err != nil {
			t.Fatal(err)
		}
		class.Spec.API = &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: "http://" + lis.Addr().String() + "/plugin"}}
		if err := cp.Client.Update(context.Background(), &class); err != nil {
			t.Fatal(err)
		}
		newConnectorWithSecret(t, ns, "plugged", pluginClass, tool.URL, "basicAuth", "git-auth")
		var code int
		var list connectorsapi.List
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			code, list, _ = apiCall(t, "GET", api("plugged", "api/projects?page=2"), viewer)
			return code == http.StatusOK
		}) {
			t.Fatalf("status %d", code)
		}
		if names(list) != "from-plugin" {
			t.Fatalf("items %s", names(list))
		}
		h := <-seen
		decode := func(key string) map[string]any {
			raw, err := base64.StdEncoding.DecodeString(h.Get(key))
			var out map[string]any
			if err != nil || json.Unmarshal(raw, &out) != nil {
				t.Fatalf("%s is not base64 JSON: %q", key, h.Get(key))
			}
			return out
		}
		if h.Get("X-Path") != "/plugin/projects?page=2" || decode("X-Plugin-Meta")["address"] != tool.URL ||
			decode("X-Plugin-Secret")["password"] != tool.Password || decode("X-Plugin-Auth")["name"] != "basicAuth" {
			t.Fatalf("plugin request %s with meta %v auth %v", h.Get("X-Path"), decode("X-Plugin-Meta"), decode("X-Plugin-Auth"))
		}
		if h.Get("Authorization") != "" {
			t.Error("the caller's token reached the API service")
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
	})
	if strings.Contains(logs.String(), tool.Password) || strings.Contains(logs.String(), reg.Password) || strings.Contains(logs.String(), viewer) {
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

// startGarbageServer answers every request with 200 and text that is no protocol at all.
func startGarbageServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", gitserver.Host+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("hello, this is not git\n"))
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + lis.Addr().String()
}
