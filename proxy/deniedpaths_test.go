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

// TestDeniedPathsTakeEverySpellingOfAPath: a denied path is refused however a tool's router
// would still take it (ASCII case, ";" parameters, doubled and trailing slashes, "\", encoded
// slashes once or twice, under a context path, a format suffix as Grape, Rails and SonarQube
// route it), and only it: a longer or shorter segment, the entry's segments apart, or another
// suffix, is served. Entries of the node and of the class both hold, each named as such.
func TestDeniedPathsTakeEverySpellingOfAPath(t *testing.T) {
	d := deniedCheck{node: compileDeniedPaths("", []string{"/api/security/apiKey", "/api/v2.0/users/*/cli_secret"}),
		class: compileDeniedPaths("tool", []string{"/api/v4/personal_access_tokens/*/rotate"}), within: 1}
	long := strings.Repeat("x", 300)
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
		"/artifactory/api/security/apiKey.json":             "node",
		"/api/v2.0/users/current/cli_secret":                "node",
		"/api/v2.0/users/7/CLI_SECRET.json":                 "node",
		"/gitlab/api/v4/personal_access_tokens/self/rotate": "class",
		"/api/v4/personal_access_tokens/42/rotate.json":     "class",
		"/artifactory/api/%zz":                              "undecodable",
		"/api/v2.0/users/grp%2Fx/cli_secre%74":              "node", // a router that splits, then decodes
		"/api/v2.0/user%73/grp%2Fx/cli_secret%2Ejson":       "node",
		"/artifactory/api/security/apiKeys":                 "",
		"/artifactory/api/security/apiKey.git":              "",
		"/artifactory/api/security":                         "",
		"/artifactory/api/repositories":                     "",
		"/artifactory/api/x/security/apiKey":                "",
		"/artifactory/api/security/api\u212Aey":             "", // a Kelvin sign: no router folds it to "k"
		"/api/v2.0/users/current":                           "",
		"/api/v2.0/cli_secret":                              "",
		"/api/v4/personal_access_tokens/self":               "",
		"/api/v4/personal_access_tokens/rotate":             "",
		"/" + long + "/api":                                 "",
		"/":                                                 "",
		"":                                                  "",
	} {
		err := d.check(path)
		if got := deniedBy(err); got != want {
			t.Errorf("%q: denied by %q, want %q (%v)", path, got, want, err)
		}
		var r *refusal
		if err != nil && (!errors.As(err, &r) || r.status != http.StatusForbidden) {
			t.Errorf("%q: %v, want a 403", path, err)
		}
	}
}

// TestDeniedPathsStayAtTheToolsAPI: an entry is looked for where a tool's API is, at the start
// of the path under the Connector's address or one segment further (a context path), not in
// the paths of a repository's artifacts, images and modules, which the tenants name.
func TestDeniedPathsStayAtTheToolsAPI(t *testing.T) {
	p := &Proxy{denied: compileDeniedPaths("", DefaultDeniedPaths)}
	at := func(address string) deniedCheck {
		return p.deniedCheckFor(&v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: address}}, nil)
	}
	root, under := at("https://tool.example"), at("https://tool.example/tools/jfrog/")
	expectDenied(t, root, "address at the root,", map[string]bool{
		"/maven2/com/acme/service/token/1.0/token-1.0.pom":                          false,
		"/acme/service/token.git/info/refs":                                         false,
		"/v2/library/service/token/manifests/latest":                                false,
		"/repository/maven-public/com/example/api/security/token/1.0/token-1.0.jar": false,
		"/github.com/acme/api/user_tokens/@v/list":                                  false,
		"/tools/jfrog/artifactory/api/security/apiKey":                              false,
		"/artifactory/api/security/apiKey":                                          true,
		"/v2/service/token/manifests/latest":                                        false,
		"/api/v4/projects/grp%2Fproj/access_token%73":                               true,
		"/api/v4/project%73/grp%2Fproj/deploy_keys":                                 true,
		"/api/v4/groups/grp%2Fsub/service_accounts/5/personal_access_token%73":      true,
		"/api/v4/projects/grp%2Fproj/access_tokens%2Ejson":                          true,
		"/api/v4/projects/group%2Fproject/deploy_keys":                              true,
		"/repos/acme/tool/keys":                                                     true,
		"/api/v3/repos/acme/tool/keys":                                              true, // a GitHub Enterprise at the root
		"/api/v3/user/keys":                                                         true,
		"/acme/keys.git/info/refs":                                                  false,
		"/repos/tool.git/info/refs":                                                 false,
		"/user/keys.git/git-upload-pack":                                            false,
		"/scm/acme/access-tokens.git/info/refs":                                     false,
		"/api/v1/repos/acme/tool/actions/runners/registration-token":                true,
		"/bitbucket/rest/access-tokens/latest/users/bot":                            true,
	})
	enterprise := at("https://github.acme.example/api/v3")
	if enterprise.check("/api/v3/repos/acme/tool/keys") == nil || enterprise.check("/api/v3/orgs/acme/actions/runners/registration-token") == nil {
		t.Error("a GitHub Enterprise API address: its deploy keys and runner registration served")
	}
	if under.within != 3 || under.check("/tools/jfrog/artifactory/api/security/apiKey") == nil {
		t.Errorf("an address with a path of two segments: within %d, want 3, and its context path's API denied", under.within)
	}
	extension := p.deniedCheckFor(&v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: "https://tool.example",
		AddressExtensions: []v1alpha1.NamedAddress{{Name: "api", Value: "https://api.example/v1/deep"}}}}, nil)
	if extension.within != 3 {
		t.Errorf("an address extension of two segments: within %d, want 3 (the deepest address)", extension.within)
	}
}

// TestDeniedPathsOfClassesWithoutThem: a class without spec.proxy, or without denied paths,
// adds nothing to the node's set, nor does an entry of no literal segment.
func TestDeniedPathsOfClassesWithoutThem(t *testing.T) {
	p := &Proxy{denied: compileDeniedPaths("", []string{"/api/security/apiKey"})}
	c := &v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: "https://tool.example"}}
	for name, class := range map[string]*v1alpha1.ConnectorClass{
		"no class":       nil,
		"no spec.proxy":  {},
		"no entries":     classDenying(),
		"only a slash":   classDenying("/"),
		"empty segments": classDenying("//"),
		"only stars":     classDenying("/*/*"),
	} {
		if d := p.deniedCheckFor(c, class); d.class != nil || d.node != p.denied {
			t.Errorf("%s: %+v, want the node's set alone", name, d)
		}
	}
	if err := (deniedCheck{}).check("/api/security/apiKey"); err != nil {
		t.Errorf("no denied paths: %v", err)
	}
}

// TestDeniedPathsOfAWholePath: an entry ending in "$" denies a path that ends where it does
// (a registry's token service), under a context path, with a trailing slash or any extension
// (Rails routes one as a format), and not a longer one (an image named so, pulled at /v2/<name>/manifests/<ref>).
func TestDeniedPathsOfAWholePath(t *testing.T) {
	d := deniedCheck{node: compileDeniedPaths("", DefaultDeniedPaths), within: 1}
	expectDenied(t, d, "path", map[string]bool{
		"/service/token":                                true,
		"/harbor/service/token/":                        true,
		"/service/Token;x=1":                            true,
		"/artifactory/api/docker/docker-local/v2/token": true,
		"/v2/token.json":                                true,
		"/jwt/auth":                                     true,
		"/jwt/auth.csv":                                 true,
		"/service/token.anything":                       true,
		"/v2/service/token/manifests/latest":            false,
		"/v2/library/service/token/blobs/sha256:abc":    false,
		"/service/token/x":                              false,
		"/v2/token/manifests/1.0":                       false,
		"/v2/auth/tags/list":                            false,
		"/jwt/auth.git/info/refs":                       false,
	})
	dotted := deniedCheck{class: compileDeniedPaths("tool", []string{"/api/v2.0/x$", "/files/archive.tar.gz$"}), within: 1}
	expectDenied(t, dotted, "a dotted whole-path entry (only its last segment takes an extension),", map[string]bool{"/api/v2.0/x": true, "/api/v2.0/x.json": true, "/api/v2/x": false, "/api/v2.9/x": false,
		"/files/archive.tar.gz": true, "/files/archive.zip": false})
	if err := ValidDeniedPath("/$"); err == nil {
		t.Error(`"/$" taken: it would deny the root`)
	}
}

// TestDeniedPathsWithAFormatSuffix: an entry written with a format suffix denies its
// segment with any, or none, as a path's segments are compared.
func TestDeniedPathsWithAFormatSuffix(t *testing.T) {
	d := deniedCheck{class: compileDeniedPaths("tool", []string{"/api/v1/api_key.yaml"}), within: 1}
	expectDenied(t, d, "path", map[string]bool{"/api/v1/api_key.yaml": true, "/api/v1/api_key": true, "/x/api/v1/api_key.json": true, "/api/v1/api_key.git": false})
}

// TestClassDeniedPathsAreCompiledOncePerGeneration: a class's list is compiled once for its
// generation and kept for the routes after; a new generation is compiled anew.
func TestClassDeniedPathsAreCompiledOncePerGeneration(t *testing.T) {
	p := &Proxy{}
	c := &v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: "https://tool.example"}}
	class := classDenying("/internal/credential")
	class.UID, class.Generation = "class-uid", 1
	first := p.deniedCheckFor(c, class).class
	if first == nil || p.deniedCheckFor(c, class).class != first {
		t.Fatal("the same generation's list was compiled again")
	}
	class.Generation, class.Spec.Proxy.DeniedPaths = 2, []string{"/other"}
	if d := p.deniedCheckFor(c, class); d.class == first || d.check("/other") == nil || d.check("/internal/credential") != nil {
		t.Errorf("a new generation's list: %+v", d.class)
	}
}

func TestDeniedPathsNameTheEntryNotThePath(t *testing.T) {
	err := deniedCheck{node: compileDeniedPaths("", []string{"/api/security/apiKey"}), within: 1}.check("/artifactory/api/security/apiKey;secret-looking")
	if err == nil || !strings.Contains(err.Error(), `"/api/security/apiKey"`) || strings.Contains(err.Error(), "secret-looking") {
		t.Errorf("%v: want the entry named, not the request's path", err)
	}
}

// expectDenied checks that d denies each path of cases that is true, and no other; what says
// which check it is, in an error.
func expectDenied(t *testing.T, d deniedCheck, what string, cases map[string]bool) {
	t.Helper()
	for path, want := range cases {
		if got := d.check(path) != nil; got != want {
			t.Errorf("%s %q: denied %v, want %v", what, path, got, want)
		}
	}
}

// TestDefaultDeniedPathsAreValid: every default entry is one the flag and the CRD take, and
// denies its endpoint under a context path; entries of another form are refused.
func TestDefaultDeniedPathsAreValid(t *testing.T) {
	d := deniedCheck{node: compileDeniedPaths("", DefaultDeniedPaths), within: 1}
	if len(d.node.entries) != len(DefaultDeniedPaths) {
		t.Errorf("%d of %d default entries compiled", len(d.node.entries), len(DefaultDeniedPaths))
	}
	for _, entry := range DefaultDeniedPaths {
		if err := ValidDeniedPath(entry); err != nil {
			t.Error(err)
		}
		if d.check("/context"+strings.ReplaceAll(strings.TrimSuffix(entry, "$"), "*", "x")) == nil {
			t.Errorf("%q does not deny its own endpoint", entry)
		}
	}
	for _, bad := range []string{"", "/", "api/x", "/api//x", `/api\x`, "/api;x", "/api%2Fx", "/api?x", "/api#x", "/api x", "/\u00e9", "/*", "/*/*", "/" + strings.Repeat("x", 256)} {
		if ValidDeniedPath(bad) == nil {
			t.Errorf("%q taken as a denied path", bad)
		}
	}
}

// BenchmarkDeniedPathsCheck is what a remembered route's request pays: the node's default
// denied paths, and its GraphQL paths (sendsAsRemembered).
func BenchmarkDeniedPathsCheck(b *testing.B) {
	d := deniedCheck{node: compileDeniedPaths("", DefaultDeniedPaths), within: 1,
		graphql: newGraphQLReading(DefaultGraphQLPaths, DefaultDeniedGraphQLFields, DefaultDeniedPaths, DefaultGraphQLBodyBytes, DefaultGraphQLHeldBytes)}
	for _, path := range []string{"/artifactory/api/npm/npm-remote/left-pad/-/left-pad-1.3.0.tgz", "/group/project.git/info/refs"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !d.sendsAsRemembered(path) {
					b.Fatal("denied")
				}
			}
		})
	}
}
