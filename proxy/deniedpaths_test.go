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
// slashes once or twice, under a context path), and only it: a longer or shorter segment, or
// the entry's segments apart, is served. A segment with a format suffix (".json") is the
// segment, as Grape, Rails and SonarQube route it.
func TestDeniedPathsTakeEverySpellingOfAPath(t *testing.T) {
	d := deniedPathsOf(classDenying("/api/security/apiKey", "/api/v4/personal_access_tokens/*/rotate"))
	for path, want := range map[string]bool{
		"/artifactory/api/security/apiKey":                  true,
		"/api/security/apiKey":                              true,
		"/artifactory/API/Security/APIKEY":                  true,
		"/artifactory/api;jsessionid=1/security/apiKey;x=y": true,
		"/artifactory//api/security//apiKey/":               true,
		"/artifactory/api/security/apiKey/extra":            true,
		`/artifactory\api\security\apiKey`:                  true,
		"/artifactory/api%2Fsecurity%2FapiKey":              true,
		"/artifactory/api%252Fsecurity%252FapiKey":          true,
		"/artifactory/api/security/%61piKey":                true,
		"/gitlab/api/v4/personal_access_tokens/self/rotate": true,
		"/api/v4/personal_access_tokens/42/rotate":          true,
		"/artifactory/api/%zz":                              true, // not decodable: refused, not guessed at
		"/api/v4/personal_access_tokens/self/rotate.json":   true,
		"/artifactory/api/security.x/apiKey.json":           true,
		"/artifactory/api/security/apiKeys":                 false,
		"/artifactory/api/security/apiKeys.json":            false,
		"/artifactory/api/security":                         false,
		"/artifactory/api/repositories":                     false,
		"/artifactory/api/x/security/apiKey":                false,
		"/api/v4/personal_access_tokens/self":               false,
		"/api/v4/personal_access_tokens/rotate":             false,
		"/":                                                 false,
		"":                                                  false,
	} {
		err := d.check(path)
		if got := err != nil; got != want {
			t.Errorf("%q: denied %v, want %v (%v)", path, got, want, err)
		}
		var r *refusal
		if err != nil && (!errors.As(err, &r) || r.status != http.StatusForbidden || !strings.Contains(err.Error(), `ConnectorClass "tool"`)) {
			t.Errorf("%q: %v, want a 403 naming the class", path, err)
		}
	}
}

// TestDeniedPathsOfClassesWithoutThem: a class without spec.proxy, or without denied paths,
// denies nothing (a nil set, checked for free), nor does an entry of no segment.
func TestDeniedPathsOfClassesWithoutThem(t *testing.T) {
	for name, class := range map[string]*v1alpha1.ConnectorClass{
		"no class":       nil,
		"no spec.proxy":  {},
		"no entries":     classDenying(),
		"only a slash":   classDenying("/"),
		"empty segments": classDenying("//"),
	} {
		d := deniedPathsOf(class)
		if d != nil {
			t.Errorf("%s: %+v, want none", name, d)
		}
		if err := d.check("/api/security/apiKey"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDeniedPathsNameTheEntryNotThePath(t *testing.T) {
	err := deniedPathsOf(classDenying("/api/security/apiKey")).check("/artifactory/api/security/apiKey;secret-looking")
	if err == nil || !strings.Contains(err.Error(), `"/api/security/apiKey"`) || strings.Contains(err.Error(), "secret-looking") {
		t.Errorf("%v: want the entry named, not the request's path", err)
	}
}

func BenchmarkDeniedPathsCheck(b *testing.B) {
	d := deniedPathsOf(classDenying("/api/security/apiKey", "/api/security/encryptedPassword", "/access/api/v1/tokens", "/api/npm/auth"))
	b.ReportAllocs()
	for b.Loop() {
		if d.check("/artifactory/api/npm/npm-remote/left-pad/-/left-pad-1.3.0.tgz") != nil {
			b.Fatal("denied")
		}
	}
}
