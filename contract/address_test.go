package contract

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestAddress: addresses of tools pass; one that would end a value in a file rendered from it
// and add settings after it (git's comment characters in user information, a percent-encoded
// newline that urlParse decodes into an .npmrc, a Unicode line separator that YAML breaks
// lines at) is refused naming what, and an error never holds the address (a password).
func TestAddress(t *testing.T) {
	for _, ok := range []string{
		"https://github.com", "https://gitlab.example.com/", "http://nexus.example.com:8081/repository/npm-group/",
		"https://registry.example.com/v2", "https://host/a%2Fb/@scope", "https://xn--bcher-kva.example/x?y=1&z=2", "",
		"http://127.0.0.1:8080", "https://[2001:db8::1]:5000/v2", "http://gitea_1:3000",
	} {
		if err := Address(field.NewPath("spec", "address"), ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ addr, want string }{
		{"https://;x@evil.example", `holds ';' at 8`},
		{"https://git.corp#x@evil.example", `holds '#'`},
		{"https://registry.example/x%0Anode-options=--import=data:x%0A%3B", "decoded, holds byte 0x0a"},
		{"https://h/a\u2028- name: b", "holds byte 0xe2"},
		{"https://h/a%E2%80%A8b", "decoded, holds byte 0xe2"},
		{`https://h/a"b`, `holds '"'`},
		{`https://h/a\`, `holds '\\'`},
		{"https://h/a b", "holds byte 0x20"},
		{"https://h/%zz", "malformed percent-escape"},
		{"https://user:hunter2@tool.example.com", "must not carry user information"},
		{"https://h/" + strings.Repeat("a", MaxAddressBytes), "may not be more than 2048"},
		{"https://*evil.example/", "the host must be a DNS name"},
		{"https://&x:443/", "the host must be a DNS name"},
		{"http://[fd00:ec2::254%25eth0]/", "without a zone"},
	} {
		err := Address(field.NewPath("spec", "address"), tc.addr)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "spec.address: ") {
			t.Errorf("%q: %v, want an error of spec.address containing %q", tc.addr, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "evil.example") {
			t.Errorf("%q: the error holds the address: %v", tc.addr, err)
		}
	}
}

// TestAddressesOfAConnector: the class contract checks the address and every extension's value.
func TestAddressesOfAConnector(t *testing.T) {
	c := &v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "tool", Address: "https://;x@evil.example",
		AddressExtensions: []v1alpha1.NamedAddress{{Name: "api", Value: "https://api.example.com"}, {Name: "upload", Value: `https://u/"`}}}}
	errs := Connector(c, class)
	var paths []string
	for _, e := range errs {
		paths = append(paths, e.Field)
	}
	got := strings.Join(paths, ",")
	if !strings.Contains(got, "spec.address") || !strings.Contains(got, "spec.addressExtensions[1].value") || strings.Contains(got, "spec.addressExtensions[0]") {
		t.Errorf("errors of %s, want spec.address and spec.addressExtensions[1].value only among them: %v", got, errs)
	}
}
