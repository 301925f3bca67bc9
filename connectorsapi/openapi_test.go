package connectorsapi

import (
	"net/http"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

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
		op, err := route(class, tc.path, tc.method)
		if err != nil || op.Provider != tc.provider || op.Address != tc.address || op.Path != tc.matched {
			t.Errorf("%s %s: %+v %v, want %s via %q matching %q", tc.method, tc.path, op, err, tc.provider, tc.address, tc.matched)
		}
	}
	if _, err := route(class, "/bad", http.MethodGet); err == nil {
		t.Error("x-provider-type plugin was accepted")
	}
	if op, err := route(&v1alpha1.ConnectorClass{}, "/x", http.MethodGet); err != nil || op.Provider != providerProxy {
		t.Errorf("a class without OpenAPI: %+v %v", op, err)
	}
}

// TestPluginHeaders checks the headers against the values connectorclass_api_spec publishes.
func TestPluginHeaders(t *testing.T) {
	h := http.Header{}
	setPluginHeaders(h, "https://github.com", "kubernetes.io/basic-auth",
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
	setPluginHeaders(h, "https://github.com", "", nil)
	if h.Get(HeaderPluginAuth) != "" || h.Get(HeaderPluginSecret) != "" || h.Get(HeaderPluginMeta) == "" {
		t.Errorf("a Connector without a Secret: %v", h)
	}
}
