package node

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func podContext(extra map[string]string) map[string]string {
	vc := map[string]string{
		keyPodName: "p", keyPodNamespace: "ns", keyPodUID: "uid", keyServiceAccount: "sa", keyEphemeral: "true",
		keyTokens: `{"aud": {"token": "from-context", "expirationTimestamp": "2030-01-01T00:00:00Z"}}`,
	}
	for k, v := range extra {
		vc[k] = v
	}
	return vc
}

func TestParseConnectors(t *testing.T) {
	r, err := parseAttributes(podContext(map[string]string{attrConnectors: "git, other/oci"}), nil, "aud")
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{r.connectors[0].String(), r.connectors[1].String()}; got[0] != "ns/git" || got[1] != "other/oci" {
		t.Fatalf("connectors = %v", got)
	}
	r, err = parseAttributes(podContext(map[string]string{attrConnectorName: "git"}), nil, "aud")
	if err != nil || r.connectors[0].String() != "ns/git" {
		t.Fatalf("deprecated form: %v %v", r, err)
	}
	for want, attrs := range map[string]map[string]string{
		"not both":    {attrConnectors: "a", attrConnectorName: "b"},
		"named twice": {attrConnectors: "a,ns/a"},
		"required":    {},
	} {
		if _, err := parseAttributes(podContext(attrs), nil, "aud"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want %q", attrs, err, want)
		}
	}
}

func TestConfigurationNamesAndExclusions(t *testing.T) {
	names, excluded := parseConfigurationNames(" gitconfig, !.env,,docker ,!ca.cert")
	if strings.Join(names, "|") != "gitconfig|docker" || strings.Join(excluded, "|") != ".env|ca.cert" {
		t.Fatalf("names %v excluded %v", names, excluded)
	}
}

func TestTokenFromSecretsWins(t *testing.T) {
	secrets := map[string]string{keyTokens: `{"aud": {"token": "from-secrets"}}`}
	r, err := parseAttributes(podContext(map[string]string{attrConnectors: "a"}), secrets, "aud")
	if err != nil || r.token != "from-secrets" {
		t.Fatalf("token %q, %v", r.token, err)
	}
}

func TestTokenErrorsDoNotQuoteTokens(t *testing.T) {
	vc := podContext(map[string]string{attrConnectors: "a", keyTokens: `{"aud": "eyJsecret`})
	_, err := parseAttributes(vc, nil, "aud")
	if err == nil || strings.Contains(err.Error(), "eyJsecret") {
		t.Fatalf("err %v", err)
	}
}

func TestNonEphemeralRejected(t *testing.T) {
	_, err := parseAttributes(podContext(map[string]string{attrConnectors: "a", keyEphemeral: "false"}), nil, "aud")
	if err == nil || !strings.Contains(err.Error(), "inline") {
		t.Fatalf("err %v", err)
	}
}

// TestAttributesAreBoundedInSizeAndInErrors: configuration.params is at most 64 KiB (a
// template may multiply it into the node's memory), and an error names a few unknown
// attributes, each shortened, not all of them whole (kubelet logs and records it at each retry).
func TestAttributesAreBoundedInSizeAndInErrors(t *testing.T) {
	params := `{"gitconfig": {"depth": "` + strings.Repeat("1", 64<<10) + `"}}`
	_, err := parseAttributes(podContext(map[string]string{attrConnectors: "a", attrConfigurationParams: params}), nil, "aud")
	if err == nil || !strings.Contains(err.Error(), "more than the 65536 a volume may pass") {
		t.Errorf("params of %d bytes: %v", len(params), err)
	}
	vc := podContext(map[string]string{attrConnectors: "a"})
	for i := range 20 {
		vc[fmt.Sprintf("%02d-%s", i, strings.Repeat("é", 100))] = "x"
	}
	_, err = parseAttributes(vc, nil, "aud")
	if err == nil || len(err.Error()) > 1000 || !strings.Contains(err.Error(), "and 15 more") || !utf8.ValidString(err.Error()) {
		t.Errorf("20 long unknown attributes: %d bytes %q", len(err.Error()), err)
	}
}
