package proxy

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func classDenying(paths ...string) *v1alpha1.ConnectorClass {
	c := &v1alpha1.ConnectorClass{Spec: v1alpha1.ConnectorClassSpec{Proxy: &v1alpha1.ProxySpec{DeniedPaths: paths}}}
	c.Name = "tool"
	return c
}

// TestDeniedPathsTakeEverySpellingOfAPath: a denied path is refused however a tool's router
// would still take it (case, ";" parameters, doubled and trailing slashes, "\", encoded
// slashes once or twice, under a context path, a format suffix as Grape, Rails and SonarQube
// route it), and only it: a longer or shorter segment, or the entry's segments apart, is
// served. Entries of the node and of the class both hold, each named as such.
func TestDeniedPathsTakeEverySpellingOfAPath(t *testing.T) {
	d := compileDeniedPaths("", []string{"/api/security/apiKey", "/api/v2.0/users/*/cli_secret"}).
		forClass(classDenying("/api/v4/personal_access_tokens/*/rotate"))
	long := strings.Repeat("x", 80)
	for path, want := range map[string]string{
		"/artifactory/api/security/apiKey":                  "node",
		"/api/security/apiKey":                              "node",
		"/artifactory/API/Security/APIKEY":                  "node",
		"/artifactory/api;jsessionid=1/security/apiKey;x=y": "node",
		"/artifactory//api/security//apiKey/":               "node",
		"/artifactory/api/security/apiKey/extra":            "node",
		`/artifactory\api\security\apiKey`:                  "node",
		"/artifactory/api%2Fsecurity%2FapiKey":              "node",
		"/artifactory/api%252Fsecurity%252FapiKey":          "node",
		"/artifactory/api/security/%61piKey":                "node",
		"/artifactory/api.x/security/apiKey.json":           "node",
		"/" + long + "/api/security/apiKey":                 "node",
		"/api/v2.0/users/current/cli_secret":                "node",
		"/api/v2.0/users/7/CLI_SECRET.json":                 "node",
		"/gitlab/api/v4/personal_access_tokens/self/rotate": "class",
		"/api/v4/personal_access_tokens/42/rotate.json":     "class",
		"/artifactory/api/%zz":                              "undecodable",
		"/artifactory/api/security/apiKeys":                 "",
		"/artifactory/api/security/apiKeys.json":            "",
		"/artifactory/api/security":                         "",
		"/artifactory/api/repositories":                     "",
		"/artifactory/api/x/security/apiKey":                "",
		"/api/v2.0/users/current":                           "",
		"/api/v2.0/cli_secret":                              "",
		"/api/v4/personal_access_tokens/self":               "",
		"/api/v4/personal_access_tokens/rotate":             "",
		"/" + long:                                          "",
		"/":                                                 "",
		"":                                                  "",
	} {
		err := d.check(path)
		got := deniedBy(err)
		if got != want {
			t.Errorf("%q: denied by %q, want %q (%v)", path, got, want, err)
		}
		var r *refusal
		if err != nil && (!errors.As(err, &r) || r.status != http.StatusForbidden) {
			t.Errorf("%q: %v, want a 403", path, err)
		}
	}
}

// deniedBy says who a check's refusal names: "node", "class", "undecodable", or "".
func deniedBy(err error) string {
	switch {
	case err == nil:
		return ""
	case strings.Contains(err.Error(), "--proxy-denied-paths"):
		return "node"
	case strings.Contains(err.Error(), `ConnectorClass "tool"`):
		return "class"
	case strings.Contains(err.Error(), "cannot decode"):
		return "undecodable"
	}
	return err.Error()
}

// TestDeniedPathsOfClassesWithoutThem: a class without spec.proxy, or without denied paths,
// adds nothing (the node's set itself, shared, or none), nor does an entry of no segment.
func TestDeniedPathsOfClassesWithoutThem(t *testing.T) {
	node := compileDeniedPaths("", []string{"/api/security/apiKey"})
	for name, class := range map[string]*v1alpha1.ConnectorClass{
		"no class":       nil,
		"no spec.proxy":  {},
		"no entries":     classDenying(),
		"only a slash":   classDenying("/"),
		"empty segments": classDenying("//"),
		"only stars":     classDenying("/*/*"),
	} {
		if d := node.forClass(class); d != node {
			t.Errorf("%s: %+v, want the node's own set", name, d)
		}
		var none *deniedPaths
		if d := none.forClass(class); d != nil || d.check("/api/security/apiKey") != nil {
			t.Errorf("%s: %+v, want none", name, d)
		}
	}
}

func TestDeniedPathsNameTheEntryNotThePath(t *testing.T) {
	err := compileDeniedPaths("", []string{"/api/security/apiKey"}).check("/artifactory/api/security/apiKey;secret-looking")
	if err == nil || !strings.Contains(err.Error(), `"/api/security/apiKey"`) || strings.Contains(err.Error(), "secret-looking") {
		t.Errorf("%v: want the entry named, not the request's path", err)
	}
}

// TestDefaultDeniedPathsAreValid: every default entry is one the flag and the CRD take, and
// denies its endpoint.
func TestDefaultDeniedPathsAreValid(t *testing.T) {
	d := compileDeniedPaths("", DefaultDeniedPaths)
	for _, entry := range DefaultDeniedPaths {
		if err := ValidDeniedPath(entry); err != nil {
			t.Error(err)
		}
		if d.check("/prefix"+strings.ReplaceAll(entry, "*", "x")) == nil {
			t.Errorf("%q does not deny its own endpoint", entry)
		}
	}
	for _, bad := range []string{"", "/", "api/x", "/api//x", `/api\x`, "/api;x", "/api%2Fx", "/api?x", "/api#x"} {
		if ValidDeniedPath(bad) == nil {
			t.Errorf("%q taken as a denied path", bad)
		}
	}
}

func BenchmarkDeniedPathsCheck(b *testing.B) {
	d := compileDeniedPaths("", DefaultDeniedPaths)
	for _, path := range []string{"/artifactory/api/npm/npm-remote/left-pad/-/left-pad-1.3.0.tgz", "/group/project.git/info/refs"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d.check(path) != nil {
					b.Fatal("denied")
				}
			}
		})
	}
}
