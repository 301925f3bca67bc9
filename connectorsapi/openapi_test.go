package connectorsapi

import (
	"net/http"
	"os"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func TestMatchPath(t *testing.T) {
	paths := map[string]bool{
		"/git/gitrefs":                            true,
		"/repos/{owner}/{repo}/pulls":             true,
		"/repos/{owner}/special/pulls":            true,
		"/api/v4/projects/{id}/repository/branch": true,
	}
	for apiPath, want := range map[string]string{
		"/git/gitrefs":                             "/git/gitrefs",
		"/git/gitrefs/":                            "",
		"/repos/org/app/pulls":                     "/repos/{owner}/{repo}/pulls",
		"/repos/org/special/pulls":                 "/repos/{owner}/special/pulls", // literal segments first
		"/repos//app/pulls":                        "",                             // a template needs a segment
		"/api/v4/projects/g%2Fp/repository/branch": "/api/v4/projects/{id}/repository/branch",
		"/api/v4/projects":                         "",
		"/%67it/gitrefs":                           "/git/gitrefs", // compared decoded too
		// As a tool that strips ;parameters or a format extension routes it: the literal path.
		"/repos/org/special;x/pulls":    "/repos/{owner}/special/pulls",
		"/repos/org/special.json/pulls": "/repos/{owner}/{repo}/pulls", // an extension only at the end
		"/repos/org/special/pulls.json": "/repos/{owner}/special/pulls",
		"/repos/org/spec%69al;x/pulls":  "/repos/{owner}/special/pulls",
		"/repos/org/specialx/pulls":     "/repos/{owner}/{repo}/pulls",
		"/git/gitrefs.json":             "/git/gitrefs",
	} {
		if got := matchPath(paths, apiPath); got != want {
			t.Errorf("%s matched %q, want %q", apiPath, got, want)
		}
	}
}

func TestRoute(t *testing.T) {
	class := &v1alpha1.ConnectorClass{}
	class.Name = "gitlab"
	class.Spec.API = &v1alpha1.APISpec{OpenAPI: &apiextensionsv1.JSON{Raw: []byte(`{"openapi":"3.0.1","paths":{
		"/custom/{x}":{"parameters":[],"get":{"x-provider-type":"api"},"post":{"x-provider-type":"proxy","x-openapi-address":"api"}},
		"/bad":{"get":{"x-provider-type":"plugin"}}}}`)}}
	for _, tc := range []struct {
		method, path, provider, address, matched string
	}{
		{http.MethodGet, "/custom/a", providerAPI, "", "/custom/{x}"},
		{http.MethodHead, "/custom/a", providerAPI, "", "/custom/{x}"},    // HEAD and OPTIONS use get's operation
		{http.MethodOptions, "/custom/a", providerAPI, "", "/custom/{x}"}, //
		{http.MethodPost, "/custom/a", providerProxy, "api", "/custom/{x}"},
		{http.MethodDelete, "/custom/a", providerProxy, "", "/custom/{x}"}, // no operation: the proxy
		{http.MethodGet, "/api/v4/projects", providerProxy, "", ""},        // no path: the proxy
	} {
		op, err := (*Routes)(nil).route(class, tc.path, tc.method)
		if err != nil || op.Provider != tc.provider || op.Address != tc.address || op.Path != tc.matched {
			t.Errorf("%s %s: %+v %v, want %s via %q matching %q", tc.method, tc.path, op, err, tc.provider, tc.address, tc.matched)
		}
	}
	if _, err := (*Routes)(nil).route(class, "/bad", http.MethodGet); err == nil {
		t.Error("x-provider-type plugin was accepted")
	}
	if op, err := (*Routes)(nil).route(&v1alpha1.ConnectorClass{}, "/x", http.MethodGet); err != nil || op.Provider != providerProxy {
		t.Errorf("a class without OpenAPI: %+v %v", op, err)
	}
}

// TestPluginHeaders checks the headers against the values connectorclass_api_spec publishes.
func TestPluginHeaders(t *testing.T) {
	h := http.Header{}
	SetPluginHeaders(h, "https://github.com", "kubernetes.io/basic-auth",
		map[string][]byte{"username": []byte("admin"), "password": []byte("pass123")})
	for key, want := range map[string]string{
		HeaderPluginMeta:   "eyJiYXNlVVJMIjoiaHR0cHM6Ly9naXRodWIuY29tIn0=",
		HeaderPluginAuth:   "a3ViZXJuZXRlcy5pby9iYXNpYy1hdXRo",
		HeaderPluginSecret: "eyJwYXNzd29yZCI6ImNHRnpjekV5TXc9PSIsInVzZXJuYW1lIjoiWVdSdGFXND0ifQ==",
	} {
		if got := h.Get(key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	h = http.Header{}
	SetPluginHeaders(h, "https://github.com", "", nil)
	if h.Get(HeaderPluginAuth) != "" || h.Get(HeaderPluginSecret) != "" || h.Get(HeaderPluginMeta) == "" {
		t.Errorf("a Connector without a Secret: %v", h)
	}
}

// BenchmarkRoute routes a passthrough request by the built-in git class's OpenAPI document, as
// every Connectors API request is routed (the document is decoded each time).
func BenchmarkRoute(b *testing.B) {
	raw, err := os.ReadFile("../deploy/classes/git.yaml")
	if err != nil {
		b.Fatal(err)
	}
	var class v1alpha1.ConnectorClass
	if err := yaml.UnmarshalStrict(raw, &class); err != nil {
		b.Fatal(err)
	}
	class.UID, class.Generation = "git-uid", 1
	cached, err := NewRoutes(8)
	if err != nil {
		b.Fatal(err)
	}
	for name, rs := range map[string]*Routes{"decoded each time": nil, "cached": cached} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if op, err := rs.route(&class, "/repo.git/info/refs", http.MethodGet); err != nil || op.Provider != providerProxy {
					b.Fatal(op, err)
				}
			}
		})
	}
}

func TestRoutesFollowTheClassGeneration(t *testing.T) {
	rs, err := NewRoutes(2)
	if err != nil {
		t.Fatal(err)
	}
	class := &v1alpha1.ConnectorClass{}
	class.UID, class.Generation = "uid", 1
	doc := func(provider string) *apiextensionsv1.JSON {
		return &apiextensionsv1.JSON{Raw: []byte(`{"paths":{"/x":{"get":{"x-provider-type":"` + provider + `"}}}}`)}
	}
	class.Spec.API = &v1alpha1.APISpec{OpenAPI: doc("api")}
	if op, _ := rs.route(class, "/x", http.MethodGet); op.Provider != providerAPI {
		t.Fatalf("generation 1: %+v", op)
	}
	class.Spec.API.OpenAPI, class.Generation = doc("proxy"), 2
	if op, _ := rs.route(class, "/x", http.MethodGet); op.Provider != providerProxy {
		t.Fatalf("generation 2 routed by the old document: %+v", op)
	}
}

// TestTemplateHoldsEscapedSlash: a {template} segment holding a '/' or '\' under any layer of
// escaping the proxy looks through is more segments to a tool (or a front) that decodes it.
func TestTemplateHoldsEscapedSlash(t *testing.T) {
	tmpl := "/api/v4/projects/{id}/variables"
	for apiPath, want := range map[string]bool{
		"/api/v4/projects/7/variables":             false,
		"/api/v4/projects/7%2Fsecrets/variables":   true,
		"/api/v4/projects/7%252Fsecrets/variables": true,
		"/api/v4/projects/7%25252Fs/variables":     true,
		"/api/v4/projects/7%5Cs/variables":         true,
		"/api/v4/projects/7%255Cs/variables":       true,
		"/api/v4/projects/7%2541/variables":        false,
		"/api/v4/projects/7%zz/variables":          false,
		"/api/v4%2Fx/projects/7/variables":         false, // a literal segment: not the template's
	} {
		if got := templateHoldsEscapedSlash(tmpl, apiPath); got != want {
			t.Errorf("%s: %v, want %v", apiPath, got, want)
		}
	}
}
