package contract

import (
	"encoding/json"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func js(v any) apiextensionsv1.JSON {
	b, _ := json.Marshal(v)
	return apiextensionsv1.JSON{Raw: b}
}

func jsp(v any) *apiextensionsv1.JSON { j := js(v); return &j }

// class declares one of each: a required and a defaulted param with an enum, a required and
// an optional address extension, a required and an optional auth type, an auth probe param.
var class = &v1alpha1.ConnectorClass{
	ObjectMeta: metav1.ObjectMeta{Name: "tool"},
	Spec: v1alpha1.ConnectorClassSpec{
		Params: []v1alpha1.ParamSpec{
			{Name: "org"},
			{Name: "sslVerify", Default: jsp("true"), Enum: []string{"true", "false"}},
			{Name: "mirrors", Type: v1alpha1.ParamTypeArray, Default: jsp([]string{})},
		},
		AddressExtensions: []v1alpha1.AddressExtensionSpec{
			{Name: "api", Enum: []string{"https://api.example.com", "https://api2.example.com"}},
			{Name: "upload", Default: ptr.To("")},
		},
		Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{
			{Name: "basicAuth", SecretType: v1alpha1.SecretTypeBasicAuth},
			{Name: "anonymous", SecretType: v1alpha1.SecretTypeBasicAuth, Optional: true},
		}},
		AuthProbes: []v1alpha1.AuthProbe{{AuthName: "basicAuth", Params: []v1alpha1.ParamSpec{{Name: "repository"}}}},
	},
}

func good() *v1alpha1.Connector {
	return &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "team"},
		Spec: v1alpha1.ConnectorSpec{
			ConnectorClassName: "tool",
			Address:            "https://example.com",
			AddressExtensions:  []v1alpha1.NamedAddress{{Name: "api", Value: "https://api.example.com"}},
			Params:             []v1alpha1.Param{{Name: "org", Value: js("acme")}},
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "s"},
				Params: []v1alpha1.Param{{Name: "repository", Value: js("acme/app")}}},
		},
	}
}

func TestConnectorContract(t *testing.T) {
	if errs := Connector(good(), class); len(errs) != 0 {
		t.Fatalf("a Connector that keeps the contract was refused: %v", errs)
	}
	anonymous := good()
	anonymous.Spec.Auth = &v1alpha1.ConnectorAuth{Name: "anonymous"}
	if errs := Connector(anonymous, class); len(errs) != 0 {
		t.Fatalf("an optional auth type without a Secret was refused: %v", errs)
	}
	for name, tc := range map[string]struct {
		change func(*v1alpha1.Connector)
		want   string // the error, with the field it names
	}{
		"required param missing": {func(c *v1alpha1.Connector) { c.Spec.Params = nil },
			`spec.params: Required value: ConnectorClass "tool" requires param "org"`},
		"undeclared param": {func(c *v1alpha1.Connector) {
			c.Spec.Params = append(c.Spec.Params, v1alpha1.Param{Name: "colour", Value: js("red")})
		},
			`spec.params[1].name: Invalid value: "colour": ConnectorClass "tool" declares no param "colour"`},
		"param out of enum": {func(c *v1alpha1.Connector) {
			c.Spec.Params = append(c.Spec.Params, v1alpha1.Param{Name: "sslVerify", Value: js("maybe")})
		}, `spec.params[1].value: Invalid value: "maybe": param "sslVerify" is not one of true, false`},
		"param of the wrong type": {func(c *v1alpha1.Connector) {
			c.Spec.Params = append(c.Spec.Params, v1alpha1.Param{Name: "mirrors", Value: js("a")})
		},
			`spec.params[1].value: Invalid value: "\"a\"": param "mirrors" must be of type array`},
		"required address extension missing": {func(c *v1alpha1.Connector) { c.Spec.AddressExtensions = nil },
			`spec.addressExtensions: Required value: ConnectorClass "tool" requires address extension "api"`},
		"undeclared address extension": {func(c *v1alpha1.Connector) {
			c.Spec.AddressExtensions = append(c.Spec.AddressExtensions, v1alpha1.NamedAddress{Name: "web", Value: "https://web.example.com"})
		}, `spec.addressExtensions[1].name: Invalid value: "web": ConnectorClass "tool" declares no address extension "web" (declared: api, upload)`},
		"address extension out of enum": {func(c *v1alpha1.Connector) { c.Spec.AddressExtensions[0].Value = "https://other.example.com" },
			`spec.addressExtensions[0].value: Invalid value: "https://other.example.com": address extension "api" is not one of`},
		"address extension not http": {func(c *v1alpha1.Connector) { c.Spec.AddressExtensions[0].Value = "ftp://api.example.com" },
			`spec.addressExtensions[0].value: Invalid value: "ftp://api.example.com": must be an http or https URL`},
		"address extension is the address": {func(c *v1alpha1.Connector) {
			c.Spec.AddressExtensions = append(c.Spec.AddressExtensions, v1alpha1.NamedAddress{Name: "upload", Value: "https://example.com/"})
		}, `spec.addressExtensions[1].value: Invalid value: "https://example.com/": must not be spec.address`},
		"unknown auth type": {func(c *v1alpha1.Connector) { c.Spec.Auth.Name = "oauth" },
			`spec.auth.name: Unsupported value: "oauth": supported values: "basicAuth", "anonymous"`},
		"no Secret for a required auth type": {func(c *v1alpha1.Connector) { c.Spec.Auth.SecretRef = nil },
			`spec.auth.secretRef: Required value: auth type "basicAuth" of ConnectorClass "tool" is not optional`},
		"no auth at all": {func(c *v1alpha1.Connector) { c.Spec.Auth = nil },
			`spec.auth.secretRef: Required value`},
		"Secret of another namespace": {func(c *v1alpha1.Connector) { c.Spec.Auth.SecretRef.Namespace = "other" },
			`spec.auth.secretRef.namespace: Forbidden: a Connector may only use Secrets of its own namespace`},
		"auth probe param missing": {func(c *v1alpha1.Connector) { c.Spec.Auth.Params = nil },
			`spec.auth.params: Required value: the auth probe of auth type "basicAuth" of ConnectorClass "tool" requires param "repository"`},
	} {
		c := good()
		tc.change(c)
		errs := Connector(c, class)
		if got := errs.ToAggregate(); got == nil || !strings.Contains(got.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, got, tc.want)
		}
	}
}

func TestNoAuthTypesTakeNoCredential(t *testing.T) {
	bare := &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}
	c := &v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: "https://x.example.com", Auth: &v1alpha1.ConnectorAuth{SecretRef: &v1alpha1.SecretRef{Name: "s"}}}}
	if errs := Connector(c, bare); errs.ToAggregate() == nil || !strings.Contains(errs.ToAggregate().Error(), "spec.auth: Forbidden") {
		t.Fatalf("got %v", errs)
	}
	c.Spec.Auth = nil
	if errs := Connector(c, bare); len(errs) != 0 {
		t.Fatalf("got %v", errs)
	}
}

// TestManyErrorsAreBounded: a Connector with thousands of undeclared params (they fit in its
// 64 KiB) is refused naming the first few and counting the rest, each name quoted short: the
// message is answered by admission, and aggregated whole it cost time quadratic in the count.
func TestManyErrorsAreBounded(t *testing.T) {
	c := good()
	for i := range 3000 {
		c.Spec.Params = append(c.Spec.Params, v1alpha1.Param{Name: strings.Repeat("x", 100) + string(rune('a'+i%26)) + strings.Repeat("y", i%7), Value: js("v")})
	}
	errs := Connector(c, class)
	if len(errs) != maxReported || !strings.HasSuffix(errs[maxReported-1].Detail, "; and 2995 more errors") {
		t.Fatalf("%d errors, the last %q; want %d, the last counting 2995 more", len(errs), errs[len(errs)-1].Detail, maxReported)
	}
	if msg := errs.ToAggregate().Error(); len(msg) > 4<<10 || strings.Contains(msg, strings.Repeat("x", 65)) {
		t.Errorf("a message of %d bytes quoting names whole: %.300q", len(msg), msg)
	}
}
