package render

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func class(name string, confs ...v1alpha1.Configuration) *v1alpha1.ConnectorClass {
	return &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ConnectorClassSpec{Configurations: confs}}
}

func connector(ns, name, address string) *v1alpha1.Connector {
	return &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.ConnectorSpec{Address: address}}
}

func raw(v any) *apiextensionsv1.JSON {
	b, _ := json.Marshal(v)
	return &apiextensionsv1.JSON{Raw: b}
}

func TestSameClassRendersOnceOverAllConnectors(t *testing.T) {
	git := class("git", v1alpha1.Configuration{Name: "gitconfig", Data: map[string]string{
		"list": "{{ range .connectors }}{{ .metadata.name }}={{ .status.proxyAddress }};{{ end }}first={{ .connector.metadata.name }}",
	}})
	r := NewRenderer("http://proxy:3128/", "localhost", 0)
	files, err := r.Render(Request{Sources: []Source{{connector("a", "one", "https://x"), git}, {connector("b", "two", "https://y"), git}},
		Configurations: []string{"gitconfig"}, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	want := "one=http://proxy:3128/namespaces/a/connectors/one;two=http://proxy:3128/namespaces/b/connectors/two;first=one"
	if got := string(files["list"]); got != want {
		t.Fatalf("list = %q, want %q", got, want)
	}
	if got := string(files["http.proxy"]); got != "http://a%2Fone,b%2Ftwo:tok@proxy:3128" {
		t.Fatalf("http.proxy = %q", got)
	}
}

func TestLaterClassWinsAndExclusionsApply(t *testing.T) {
	first := class("first", v1alpha1.Configuration{Name: "c", Data: map[string]string{"shared": "first", "only-first": "1"}})
	second := class("second", v1alpha1.Configuration{Name: "c", Data: map[string]string{"shared": "second"}})
	files, err := NewRenderer("http://p:1", "", 0).Render(Request{
		Sources:        []Source{{connector("n", "a", "https://a"), first}, {connector("n", "b", "https://b"), second}},
		Configurations: []string{"c"},
		Excluded:       []string{"only-first", ".env", "no-such-file"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(files["shared"]) != "second" {
		t.Errorf("shared = %q, want the later class's", files["shared"])
	}
	for _, gone := range []string{"only-first", ".env"} {
		if _, ok := files[gone]; ok {
			t.Errorf("%s was excluded but rendered", gone)
		}
	}
}

func TestParams(t *testing.T) {
	c := class("k", v1alpha1.Configuration{Name: "c", Data: map[string]string{"f": "{{ .configurations.mode }} {{ index .configurations.list 1 }} {{ .configurations.obj.k }}"},
		Params: []v1alpha1.ParamSpec{
			{Name: "mode", Default: raw("fast"), Enum: []string{"fast", "slow"}},
			{Name: "list", Type: v1alpha1.ParamTypeArray, Default: raw([]string{"a", "b"})},
			{Name: "obj", Type: v1alpha1.ParamTypeObject},
		}})
	src := []Source{{connector("n", "a", "https://a"), c}}
	r := NewRenderer("http://p:1", "", 0)
	files, err := r.Render(Request{Sources: src, Configurations: []string{"c"}, Params: map[string]ParamValues{"c": {"obj": json.RawMessage(`{"k":"v"}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(files["f"]); got != "fast b v" {
		t.Fatalf("f = %q", got)
	}
	for name, params := range map[string]ParamValues{
		`not one of`:           {"obj": json.RawMessage(`{}`), "mode": json.RawMessage(`"warp"`)},
		`must be of type obj`:  {"obj": json.RawMessage(`"x"`)},
		`requires param "obj"`: {},
	} {
		_, err := r.Render(Request{Sources: src, Configurations: []string{"c"}, Params: map[string]ParamValues{"c": params}})
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), name) {
			t.Errorf("params %v: err %v, want an InputError containing %q", params, err, name)
		}
	}
}

func TestTemplateErrorNamesClassConfigurationAndFile(t *testing.T) {
	c := class("k", v1alpha1.Configuration{Name: "c", Data: map[string]string{"f": "{{ index .connectors 5 }}"}})
	_, err := NewRenderer("http://p:1", "", 0).Render(Request{Sources: []Source{{connector("n", "a", "https://a"), c}}, Configurations: []string{"c"}})
	var ce *ClassError
	if !errors.As(err, &ce) || ce.Class != "k" || ce.Configuration != "c" || ce.File != "f" {
		t.Fatalf("err = %v, want a ClassError for k/c/f", err)
	}
}

// TestTemplateErrorsLeaveTheTokenOut: a template's failure goes to kubelet's FailedMount Event;
// a function that quotes what it failed on (fail, urlParse of the forward proxy's URL, whose
// userinfo is the token) must not put the Pod's token there.
func TestTemplateErrorsLeaveTheTokenOut(t *testing.T) {
	const token = "eyJhbGciOi.secret-part_of-the.token"
	for _, text := range []string{`{{ fail .context.token }}`, `{{ fail .context.proxy.httpProxy }}`} {
		c := class("k", v1alpha1.Configuration{Name: "c", Data: map[string]string{"f": text}})
		_, err := NewRenderer("http://p:1", "", 0).Render(Request{Sources: []Source{{connector("n", "a", "https://a"), c}},
			Configurations: []string{"c"}, Token: token})
		var ce *ClassError
		if !errors.As(err, &ce) || strings.Contains(err.Error(), "secret-part") || !strings.Contains(err.Error(), "[the Pod's token]") {
			t.Errorf("%s: %v, want a ClassError without the token", text, err)
		}
	}
}

func TestURLParseInTemplates(t *testing.T) {
	c := class("k", v1alpha1.Configuration{Name: "c", Data: map[string]string{"host": "{{ (urlParse .connector.spec.address).hostname }}"}})
	files, err := NewRenderer("http://p:1", "", 0).Render(Request{Sources: []Source{{connector("n", "a", "https://reg.example.com:5000/v2"), c}},
		Configurations: []string{"c"}})
	if err != nil || string(files["host"]) != "reg.example.com" {
		t.Fatalf("host = %q, %v", files["host"], err)
	}
}

// TestNoConfigurationNamesRendersOnlyBuiltIns: without configuration.names a volume holds the
// built-in files only (Alauda's default), and params for an unselected configuration are an
// error that names it.
func TestNoConfigurationNamesRendersOnlyBuiltIns(t *testing.T) {
	c := class("k", v1alpha1.Configuration{Name: "c", Data: map[string]string{"f": "x"}})
	r := NewRenderer("http://p:1", "", 0)
	files, err := r.Render(Request{Sources: []Source{{connector("n", "a", "https://a"), c}}, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files["f"]; ok {
		t.Error("a class configuration was rendered without configuration.names")
	}
	for _, builtIn := range []string{".env", "http.proxy", "https.proxy", "context.token", "connector.status.proxyAddress"} {
		if _, ok := files[builtIn]; !ok {
			t.Errorf("built-in file %s is missing", builtIn)
		}
	}
	_, err = r.Render(Request{Sources: []Source{{connector("n", "a", "https://a"), c}}, Params: map[string]ParamValues{"c": {}}})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), `"c" is not rendered`) {
		t.Errorf("params for an unselected configuration: %v", err)
	}
}

func TestValidateFileName(t *testing.T) {
	for name, ok := range map[string]bool{
		".gitconfig": true, "docker/config.json": true, "a.b": true,
		"": false, "/etc/passwd": false, "../x": false, "a/../../x": false, "a//b": false, "./a": false,
		"..data": false, "a/..b": false, strings.Repeat("x", 300): false,
	} {
		if err := ValidateFileName(name); (err == nil) != ok {
			t.Errorf("ValidateFileName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
