package regoeval

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sigs.k8s.io/yaml"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

const secretValue1 = "glpat-s3cr3t"

func newEngine(t *testing.T, size int) *Engine {
	t.Helper()
	e, err := New("rego_test", Config{CacheSize: size, Timeout: time.Second, MaxBodyBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func classWith(generator, extractor, permissions string) (*v1alpha1.ConnectorClass, *v1alpha1.AuthType) {
	c := &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "gitlab"}}
	c.Spec.Auth = &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "pat", Generator: &v1alpha1.RegoPolicy{Rego: generator}}}}
	c.Spec.Proxy = &v1alpha1.ProxySpec{AuthExtractor: &v1alpha1.RegoPolicy{Rego: extractor}}
	c.Spec.API = &v1alpha1.APISpec{Permissions: &v1alpha1.RegoPolicy{Rego: permissions}}
	return c, &c.Spec.Auth.Types[0]
}

// getHead is getRequest's request line.
var getHead = RequestHead{Method: http.MethodGet, Path: "/api/v4/projects", Host: "gitlab.example.com"}

func getRequest(header http.Header) *Request {
	return &Request{Method: http.MethodGet, Path: "/api/v4/projects", Host: "gitlab.example.com", Headers: header, Query: url.Values{"page": {"2"}}}
}

// Alauda's published examples, in the v0 syntax most of them use and in v1.
func TestGenerateAlaudaShapes(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1), "username": []byte("u"), "password": []byte("p"), "apikey": []byte("k")}
	for name, tc := range map[string]struct {
		module string
		check  func(*Injection) bool
	}{
		"header v0": {`package proxy
auth = {"position": "header", "auth": {"PRIVATE-TOKEN": input.data.token}}`,
			func(i *Injection) bool { return i.Headers["PRIVATE-TOKEN"] == secretValue1 }},
		"basic v1": {`package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}}`,
			func(i *Injection) bool { return i.Headers["Authorization"] == "Basic dTpw" }},
		"query": {`package proxy
auth = {"position": "query", "auth": {"api_key": input.data.apikey}}`,
			func(i *Injection) bool { return i.Position == PositionQuery && i.Query["api_key"] == "k" }},
		"body": {`package proxy
auth = {"position": "body", "contentType": "application/json", "auth": {"username": input.data.username}}`,
			func(i *Injection) bool { return i.Position == PositionBody && i.Body["username"] == "u" }},
		"conditional v0 over the request": {`package proxy
default auth = {"position": "header", "auth": {"X-Page": "none"}}
auth = {"position": "header", "auth": {"X-Page": input.request.query.page[0]}} { input.request.method == "GET" }`,
			func(i *Injection) bool { return i.Headers["X-Page"] == "2" }},
		"clock": {`package proxy
auth := {"position": "header", "auth": {"X-Timestamp": sprintf("%d", [time.now_ns()])}}`,
			func(i *Injection) bool { return i.Headers["X-Timestamp"] != "" }},
	} {
		class, at := classWith(tc.module, "", "")
		inj, err := e.Generate(context.Background(), class, at, data, "", getHead, func() *Request { return getRequest(http.Header{}) })
		if err != nil || !tc.check(inj) {
			t.Errorf("%s: %+v %v", name, inj, err)
		}
	}
}

// A generator holds the credential: a module that could reach the network or the process could
// send it away, so those builtins do not exist, and errors never quote the Secret.
func TestGeneratorRefusals(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1)}
	for module, want := range map[string]string{
		`package proxy
auth := http.send({"method": "GET", "url": concat("", ["http://127.0.0.1:1/", input.data.token])})`: "undefined function http.send",
		`package proxy
auth := net.lookup_ip_addr(input.data.token)`: "undefined function net.lookup_ip_addr",
		`package proxy
auth := opa.runtime()`: "undefined function opa.runtime",
		`package other
auth := {}`: "declares package data.other; it must be package proxy",
		`package proxy
auth := {"position": "header", "auth": {"X": input.data.token}} if {`: "does not parse",
		`package proxy
auth := {"position": input.data.token, "auth": {}}`: "auth.position must be header, query or body",
		`package proxy
auth := {"position": "header", "auth": {"X": to_number(input.data.token)}}`: "auth is undefined for this input",
		`package proxy
auth := {"position": "header", "auth": {"X": concat("", [input.data.token, "\n"])}}`: "without control characters",
		`package proxy
auth := x if { x := input.data.token }
auth := y if { y := "other" }`: "eval_conflict_error",
		`package proxy
auth := {"position": "header", "auth": {"X": input.data.token}} if { loop(0) }
loop(n) if { numbers.range(0, 100000000)[_] == -1 }`: "ran longer than",
	} {
		e := e
		if strings.Contains(module, "loop") {
			var err error
			if e, err = New("rego_test", Config{CacheSize: 4, Timeout: 50 * time.Millisecond, MaxBodyBytes: 1}); err != nil {
				t.Fatal(err)
			}
		}
		class, at := classWith(module, "", "")
		_, err := e.Generate(context.Background(), class, at, data, "", getHead, func() *Request { return getRequest(http.Header{}) })
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), secretValue1) ||
			!strings.Contains(err.Error(), "ConnectorClass gitlab, auth type pat, generator.rego") {
			t.Errorf("%.70q: %v, want %q, the class named and no value", module, err, want)
		}
	}
}

// extract is ExtractToken of a request r describes, its head given with its headers.
func extract(e *Engine, class *v1alpha1.ConnectorClass, r *Request) (string, error) {
	head := RequestHead{Method: r.Method, Path: r.Path, Host: r.Host, Header: testHeaders(r.Headers)}
	return e.ExtractToken(context.Background(), class, head, func() *Request { return r })
}

// An extractor that reads headers by name runs once per value of them, from the head; one
// that reads the body runs every time, over the whole request.
func TestExtractorAnswersAreKept(t *testing.T) {
	e := newEngine(t, 16)
	for _, tc := range []struct {
		module      string
		kept, built int
	}{
		{`package proxy
default auth := {"token": ""}
auth := {"token": input.request.headers["Private-Token"][0]} if count(input.request.headers["Private-Token"]) > 0`, 2, 0},
		{`package proxy
auth := {"token": input.request.body.token}`, 0, 3},
		{alaudaRobustExtractor(t), 2, 0},
	} {
		e.answers.Purge()
		class, _ := classWith("", tc.module, "")
		built := 0
		var got []string
		for _, token := range []string{"a", "a", "b"} {
			r := getRequest(http.Header{"Private-Token": {token}})
			r.Body = map[string]any{"token": token}
			head := RequestHead{Method: r.Method, Path: r.Path, Host: r.Host, Header: testHeaders(r.Headers)}
			found, err := e.ExtractToken(context.Background(), class, head, func() *Request { built++; return r })
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, found)
		}
		if e.answers.Len() != tc.kept || built != tc.built || strings.Join(got, ",") != "a,a,b" {
			t.Errorf("%.60q: %d kept, %d requests described, tokens %q; want %d, %d, a,a,b", tc.module, e.answers.Len(), built, got, tc.kept, tc.built)
		}
	}
}

// alaudaRobustExtractor is Alauda's robust authExtractor example as published: it checks the
// headers against null before reading one. The e2e tests and the benchmark use it too.
func alaudaRobustExtractor(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "alauda-robust-extractor.rego"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A module that reaches the headers object whole only to compare it with null (which the
// input never holds: the headers are an object, an empty one when a head has none) or to
// object.get one by a constant name reads just that name: it is kept by the Secret and the
// values of the headers it names, and answers as over the whole request. One that names a
// header by a variable, or replaces the input (`with`), reads the headers whole.
func TestHeaderAccessesThatReadByName(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1)}
	for _, tc := range []struct {
		rule string // of x
		want string // x's values for X-Y: y, then z, joined by |
		kept int    // answers kept for the two (0: evaluated per request)
	}{
		{`x := "object" if input.request.headers != null`, "object|object", 1},
		{`x := "null" if null == input.request.headers`, "none|none", 1},
		{`x := input.request.headers != null`, "true|true", 1},
		{`x := object.get(input.request.headers, "X-Y", ["none"])[0]`, "y|z", 2},
		{`x := object.get(input.request.headers, "X-Absent", ["none"])[0]`, "none|none", 1},
		{`x := object.get(input.request.headers, "X-Absent", [input.request.method])[0]`, "GET|GET", 1},
		{`x := object.get(input.request.headers, k, ["none"])[0] if k := "X-Y"`, "y|z", 0},
		{`x := "object" if input.request.headers != null with input.request.headers as null`, "none|none", 0},
		{`x := v if v := object.get(input.request.headers, "X-Y", ["none"])[0] with input.request.headers as {"X-Y": ["w"]}`, "w|w", 0},
	} {
		module := "package proxy\n" + tc.rule + "\n" + `default x := "none"
auth := {"position": "header", "auth": {"X": sprintf("%v", [x])}}`
		class, at := classWith(module, "", "")
		e.answers.Purge()
		built := 0
		var got []string
		for _, value := range []string{"y", "z"} {
			whole := getRequest(http.Header{"X-Y": {value}, "Accept": {"*/*"}})
			head := RequestHead{Method: whole.Method, Path: whole.Path, Host: whole.Host, Header: testHeaders(whole.Headers)}
			kept, err := e.Generate(context.Background(), class, at, data, "uid/1", head, func() *Request { built++; return whole })
			if err != nil {
				t.Fatalf("%q: %v", tc.rule, err)
			}
			request, err := whole.value(allParts)
			if err != nil {
				t.Fatal(err)
			}
			over, err := e.Eval(context.Background(), GeneratorHook, module,
				ast.NewObject(ast.Item(ast.StringTerm("data"), ast.NewTerm(secretValue(data))), ast.Item(ast.StringTerm("request"), ast.NewTerm(request))))
			if err != nil {
				t.Fatal(err)
			}
			if overX := over.(map[string]any)["auth"].(map[string]any)["X"]; overX != kept.Headers["X"] {
				t.Errorf("%q, X-Y %s: X %q from Generate, %q over the whole request", tc.rule, value, kept.Headers["X"], overX)
			}
			got = append(got, kept.Headers["X"])
		}
		wantBuilt := 0
		if tc.kept == 0 {
			wantBuilt = 2
		}
		if strings.Join(got, "|") != tc.want || e.answers.Len() != tc.kept || built != wantBuilt {
			t.Errorf("%q: X %s, %d kept, %d requests described; want %s, %d, %d", tc.rule, strings.Join(got, "|"), e.answers.Len(), built, tc.want, tc.kept, wantBuilt)
		}
	}
}

func TestExtractToken(t *testing.T) {
	e := newEngine(t, 16)
	// Alauda's robust example, in v1 syntax.
	class, _ := classWith("", `package proxy
default auth := {"token": ""}
auth := {"token": input.request.headers["Private-Token"][0]} if {
	count(input.request.headers["Private-Token"]) > 0
}`, "")
	for header, want := range map[string]string{"Private-Token": "sa-token", "X-Other": ""} {
		h := http.Header{}
		h.Set(header, "sa-token")
		if got, err := extract(e, class, getRequest(h)); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", header, got, err, want)
		}
	}
	// The short example is undefined without the header: no token, no error.
	class, _ = classWith("", `package proxy
auth = {"token": input.request.headers["Private-Token"][0]}`, "")
	if got, err := extract(e, class, getRequest(http.Header{})); err != nil || got != "" {
		t.Errorf("undefined: %q %v", got, err)
	}
	// A token in the JSON body.
	class, _ = classWith("", `package proxy
auth := {"token": input.request.body.token}`, "")
	r, _ := http.NewRequest(http.MethodPost, "http://proxy/x", strings.NewReader(`{"token":"from-body"}`))
	r.Header.Set("Content-Type", "application/json")
	if got, err := extract(e, class, e.NewRequest(r, "proxy", "/x", nil)); err != nil || got != "from-body" {
		t.Errorf("body: %q %v", got, err)
	}
	class, _ = classWith("", `package proxy
auth := {"token": 42}`, "")
	if _, err := extract(e, class, getRequest(http.Header{})); err == nil || !strings.Contains(err.Error(), "proxy.authExtractor.rego: auth must be an object whose token is a string") {
		t.Errorf("number: %v", err)
	}
}

// The API calls Verb and RBACVerb (see the README's Connectors API section).
func TestPermissionsVerb(t *testing.T) {
	e := newEngine(t, 16)
	// The CRD's example: POSTs under /search read.
	class, _ := classWith("", "", `package permissions
import future.keywords.if
result = {"verb": "read"} if {
	startswith(input.request.path, "/search")
	input.request.method == "POST"
} else = {"verb": ""}`)
	for _, tc := range []struct{ method, path, verb, rbac, methodVerb string }{
		{http.MethodPost, "/search/code", VerbRead, "get", "create"},
		{http.MethodPost, "/projects", "", "create", "create"},
		{http.MethodGet, "/projects", "", "get", "get"},
	} {
		got, err := e.Verb(context.Background(), class, &Request{Method: tc.method, Path: tc.path})
		if err != nil || got != tc.verb || RBACVerb(got, tc.methodVerb) != tc.rbac {
			t.Errorf("%s %s: %q %v (rbac %q), want %q (rbac %q)", tc.method, tc.path, got, err, RBACVerb(got, tc.methodVerb), tc.verb, tc.rbac)
		}
	}
	if RBACVerb(VerbWrite, "get") != "update" || RBACVerb(VerbWrite, "patch") != "patch" || RBACVerb(VerbDelete, "create") != "delete" {
		t.Error("RBACVerb write/delete")
	}
	noModule := &v1alpha1.ConnectorClass{}
	if got, err := e.Verb(context.Background(), noModule, &Request{Method: http.MethodGet}); err != nil || got != "" {
		t.Errorf("no module: %q %v", got, err)
	}
	class, _ = classWith("", "", `package permissions
result := {"verb": "admin"}`)
	if _, err := e.Verb(context.Background(), class, &Request{}); err == nil || !strings.Contains(err.Error(), "ConnectorClass gitlab, api.permissions.rego: result.verb must be") {
		t.Errorf("admin: %v", err)
	}
}

func TestState(t *testing.T) {
	e := newEngine(t, 16)
	obj := map[string]any{"spec": map[string]any{"secret": secretValue1}, "status": map[string]any{"conditions": []any{
		map[string]any{"type": "Succeeded", "status": "True"}}}}
	module := `package approval
default status := {"state": "pending"}
status := {"state": "approved"} if {
	some c in input.status.conditions
	c.type == "Succeeded"
	c.status == "True"
}`
	if got, err := e.State(context.Background(), module, obj); err != nil || got != "approved" {
		t.Fatalf("state %q %v", got, err)
	}
	if got, err := e.State(context.Background(), "package approval\nstatus := {\"state\": input.nope}", obj); err != nil || got != "" {
		t.Errorf("undefined: %q %v", got, err)
	}
	if _, err := e.State(context.Background(), "package approval\nstatus := input.spec.secret", obj); err == nil || strings.Contains(err.Error(), secretValue1) {
		t.Errorf("a string status: %v", err)
	}
}

func TestCompiledModulesAreBounded(t *testing.T) {
	e := newEngine(t, 2)
	for _, v := range []string{"a", "b", "a", "c"} {
		if err := e.Check(StateHook, "package approval\nstatus := {\"state\": \""+v+"\"}"); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := cachemetrics.Entries("rego_test"); n != 2 {
		t.Fatalf("%d modules kept, want 2", n)
	}
}

// The body is read for the input and still sent in full, also when it is larger than the limit.
func TestBodyIsSentInFull(t *testing.T) {
	e := newEngine(t, 2)
	long := `{"a":"` + strings.Repeat("x", 2<<10) + `"}`
	for _, body := range []string{`{"a":"b"}`, long} {
		r, _ := http.NewRequest(http.MethodPost, "http://proxy/x", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.ContentLength = -1
		req := e.NewRequest(r, "h", "/x", nil)
		parsed := req.body()
		rest := new(bytes.Buffer)
		if _, err := rest.ReadFrom(r.Body); err != nil || rest.String() != body {
			t.Errorf("body after reading: %d bytes %v", rest.Len(), err)
		}
		if (parsed != nil) != (body != long) {
			t.Errorf("parsed %v for a %d-byte body", parsed != nil, len(body))
		}
	}
}

// A generator that reads only input.data and the request line's fields runs once per Secret
// version and those fields' values, from the head alone; one that reads more of the request,
// or the clock, runs every time. The whole request is described only for a module that may
// read more than the head.
func TestAnswersAreKeptByWhatTheyRead(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1)}
	post := RequestHead{Method: http.MethodPost, Path: getHead.Path, Host: getHead.Host}
	for _, tc := range []struct {
		module string
		kept   int // answers kept after GET, GET, POST
		built  int // requests described
	}{
		{`package proxy
auth = {"position": "header", "auth": {"PRIVATE-TOKEN": input.data.token}}`, 1, 0},
		{`package proxy
auth := {"position": "header", "auth": {"X": concat(" ", [input.request.method, input.request.path, input.data.token])}}`, 2, 0},
		{`package proxy
auth := {"position": "header", "auth": {"X": input.request.host}}`, 1, 0},
		{`package proxy
auth := {"position": "header", "auth": {"X": input.request.headers["X-Y"][0]}} if input.request.method == "GET"
default auth := {"position": "header", "auth": {}}`, 0, 3},
		{`package proxy
auth := {"position": "header", "auth": {"X": sprintf("%d", [time.now_ns()])}}`, 0, 3},
		{`package proxy
auth := {"position": "header", "auth": {"X": object.get(input, "data", {}).token}}`, 0, 3},
		{`package proxy
auth := {"position": "header", "auth": {"X": input.request[k]}} if k := "method"`, 0, 3},
	} {
		e.answers.Purge()
		built := 0
		req := func(method string) func() *Request {
			return func() *Request { built++; r := getRequest(http.Header{"X-Y": {"y"}}); r.Method = method; return r }
		}
		class, at := classWith(tc.module, "", "")
		var answers []*Injection
		for _, head := range []RequestHead{getHead, getHead, post} {
			inj, err := e.Generate(context.Background(), class, at, data, "uid/1", head, req(head.Method))
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, inj)
		}
		if e.answers.Len() != tc.kept || built != tc.built {
			t.Errorf("%.80q: %d answers kept, %d requests described; want %d and %d", tc.module, e.answers.Len(), built, tc.kept, tc.built)
		}
		if tc.kept == 2 && (answers[2].Headers["X"] != "POST /api/v4/projects "+secretValue1 || answers[0].Headers["X"] != "GET /api/v4/projects "+secretValue1) {
			t.Errorf("answers kept by method: %v, %v", answers[0].Headers, answers[2].Headers)
		}
	}
}

// A generator that reads the query, whole or by name, is kept by the query's raw form as the
// head gives it (each form apart, an empty one too) and answers as over the parsed query; one
// that also reads what makes it per request is evaluated every time; a head without the query
// leaves such a module to the whole request, or, given none, to ErrNeedsRequest.
func TestAnswersAreKeptByQuery(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1)}
	queried := func(raw string) RequestHead {
		head := getHead
		head.RawQuery, head.HasQuery = raw, true
		return head
	}
	heads := []RequestHead{queried("page=1"), queried("page=1"), queried("page=2"), queried("page=%32"),
		queried("page=1&page=2"), queried(""), queried("a=%zz&page=3")}
	for _, tc := range []struct {
		module string
		kept   int    // answers kept after heads
		want   string // the answers' X, joined by |
	}{
		{`package proxy
auth := {"position": "header", "auth": {"X": concat(",", input.request.query.page)}}
default auth := {"position": "header", "auth": {"X": "none"}}`, 6, "1|1|2|2|1,2|none|3"},
		{`package proxy
auth := {"position": "header", "auth": {"X": sprintf("%d", [count(input.request.query)])}}`, 6, "1|1|1|1|1|0|1"},
		{`package proxy
auth := {"position": "header", "auth": {"X": concat(",", input.request.query.page)}} if time.now_ns() > 0
default auth := {"position": "header", "auth": {"X": "none"}}`, 0, "1|1|2|2|1,2|none|3"},
	} {
		e.answers.Purge()
		var got []string
		class, at := classWith(tc.module, "", "")
		for _, head := range heads {
			inj, err := e.Generate(context.Background(), class, at, data, "uid/1", head, func() *Request {
				r := getRequest(http.Header{})
				r.Query, _ = url.ParseQuery(head.RawQuery)
				return r
			})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, inj.Headers["X"])
		}
		if e.answers.Len() != tc.kept || strings.Join(got, "|") != tc.want {
			t.Errorf("%.80q: %d answers kept, answered %s; want %d and %s", tc.module, e.answers.Len(), strings.Join(got, "|"), tc.kept, tc.want)
		}
	}

	class, at := classWith(`package proxy
auth := {"position": "header", "auth": {"X": input.request.query.page[0]}}`, "", "")
	e.answers.Purge()
	built := 0
	inj, err := e.Generate(context.Background(), class, at, data, "uid/1", getHead, func() *Request { built++; return getRequest(nil) })
	if err != nil || inj.Headers["X"] != "2" || built != 1 || e.answers.Len() != 0 {
		t.Errorf("a head without the query: X %v (%v), %d requests described, %d answers kept; want getRequest's page 2, 1, 0", inj, err, built, e.answers.Len())
	}
	if _, err := e.Generate(context.Background(), class, at, data, "uid/1", getHead, nil); !errors.Is(err, ErrNeedsRequest) {
		t.Errorf("a head without the query, and no request: %v, want ErrNeedsRequest", err)
	}
}

// A generator that reads headers by constant names is kept by their values as the head gives
// them (absent, and each value list, apart), and evaluated once per such value; one that
// reads headers by a variable name, or the headers object whole, reads the whole request. A
// head without headers leaves a module that reads one to the whole request, or, given none,
// to ErrNeedsRequest.
func TestAnswersAreKeptByHeadersRead(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1)}
	headed := func(h http.Header) RequestHead {
		head := getHead
		head.Header = testHeaders(h)
		return head
	}
	heads := []RequestHead{headed(http.Header{"X-Y": {"a"}}), headed(http.Header{"X-Y": {"a"}, "X-Z": {"z"}}),
		headed(http.Header{"X-Y": {"b"}}), headed(http.Header{"X-Y": {"a", "b"}}), headed(http.Header{"X-Y": {"a,b"}}),
		headed(http.Header{}), headed(http.Header{"X-Y": {}})}
	for _, tc := range []struct {
		module string
		kept   int    // answers kept after heads
		built  int    // requests described
		want   string // the answers' X, joined by |
	}{
		{`package proxy
auth := {"position": "header", "auth": {"X": concat(",", input.request.headers["X-Y"])}}
default auth := {"position": "header", "auth": {"X": "none"}}`, 6, 0, "a|a|b|a,b|a,b|none|"},
		{`package proxy
auth := {"position": "header", "auth": {"X": sprintf("%d", [count(input.request.headers)])}}`, 0, 7, "1|2|1|1|1|0|1"},
		{`package proxy
auth := {"position": "header", "auth": {"X": input.request.headers[k][0]}} if k := "X-Y"
default auth := {"position": "header", "auth": {"X": "none"}}`, 0, 7, "a|a|b|a|a,b|none|none"},
	} {
		e.answers.Purge()
		var built int
		var got []string
		class, at := classWith(tc.module, "", "")
		for _, head := range heads {
			inj, err := e.Generate(context.Background(), class, at, data, "uid/1", head, func() *Request {
				built++
				r := getRequest(http.Header{})
				for _, name := range []string{"X-Y", "X-Z"} {
					if v, ok := head.Header.Lookup(name); ok {
						r.Headers[name] = v
					}
				}
				return r
			})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, inj.Headers["X"])
		}
		if e.answers.Len() != tc.kept || built != tc.built || strings.Join(got, "|") != tc.want {
			t.Errorf("%.80q: %d answers kept, %d requests described, answers %q; want %d, %d, %q", tc.module, e.answers.Len(), built, strings.Join(got, "|"), tc.kept, tc.built, tc.want)
		}
	}
	class, at := classWith(`package proxy
auth := {"position": "header", "auth": {"X": input.request.headers["X-Y"][0]}}`, "", "")
	if _, err := e.Generate(context.Background(), class, at, data, "uid/1", getHead, nil); !errors.Is(err, ErrNeedsRequest) {
		t.Errorf("a header-reading module given a head without headers and no request: %v", err)
	}
}

// An answer's key is the same whether the headers give it their parts (HeaderKeys) or their
// values (Lookup), and differs for every head that reads differently.
func TestHeaderKeysKeyAsLookup(t *testing.T) {
	c := newEngine(t, 16).compile(GeneratorHook, `package proxy
auth := {"position": "header", "auth": {"X": concat(",", input.request.headers["X-Y"])}}`)
	keys := map[[32]byte]http.Header{}
	for _, h := range []http.Header{{"X-Y": {"a"}}, {"X-Y": {"b"}}, {"X-Y": {"a", "b"}}, {"X-Y": {"a,b"}}, {"X-Y": {"ab"}},
		{"X-Y": {"", "ab"}}, {"X-Y": {"ab", ""}}, {}, {"X-Y": {}}, {"X-Y": {""}}, {"X-Y": {strings.Repeat("t", 40<<10)}}} {
		head := getHead
		head.Header = testHeaders(h)
		byValues := c.answerKey(GeneratorHook, "uid/1", head)
		head.Header = keyedTestHeaders(h)
		if byParts := c.answerKey(GeneratorHook, "uid/1", head); byParts != byValues {
			t.Errorf("headers %q: keyed %x by their parts, %x by their values", h, byParts, byValues)
		}
		if other, ok := keys[byValues]; ok {
			t.Errorf("headers %q and %q have one key", h, other)
		}
		keys[byValues] = h
	}
}

// keyedTestHeaders gives an answer key its parts itself.
type keyedTestHeaders http.Header

func (h keyedTestHeaders) Lookup(name string) ([]string, bool) { v, ok := h[name]; return v, ok }

func (h keyedTestHeaders) AppendKey(key []byte, name string) ([]byte, bool) {
	values, ok := h[name]
	for _, v := range values {
		key = AppendKeyPart(key, []byte(v))
	}
	return key, ok
}

type testHeaders http.Header

func (h testHeaders) Lookup(name string) ([]string, bool) { v, ok := h[name]; return v, ok }

type methodVerbs struct{}

func (methodVerbs) Verb(_ context.Context, _ *v1alpha1.ConnectorClass, r *http.Request) (string, error) {
	return map[string]string{"GET": "get", "POST": "create", "DELETE": "delete"}[r.Method], nil
}

// What connectorsapi plugs in as its VerbMapper: git's POST git-upload-pack is a read.
func TestAPIVerbs(t *testing.T) {
	class, _ := classWith("", "", `package permissions
default result := {"verb": ""}
result := {"verb": "read"} if {
	input.request.method == "POST"
	endswith(input.request.path, "/git-upload-pack")
}`)
	mapper := APIVerbs{Engine: newEngine(t, 4), Methods: methodVerbs{}}
	for path, want := range map[string]string{
		"/connectors/v1alpha1/team/git/path/org/repo.git/git-upload-pack":  "get",
		"/connectors/v1alpha1/team/git/path/org/repo.git/git-receive-pack": "create",
	} {
		r, _ := http.NewRequest(http.MethodPost, "http://proxy"+path, nil)
		if got, err := mapper.Verb(context.Background(), class, r); err != nil || got != want {
			t.Errorf("POST %s: %q %v, want %q", path, got, err, want)
		}
	}
	if got := APIPath("/connectors/v1alpha1/team/git/path"); got != "/" {
		t.Errorf("APIPath of the API root = %q", got)
	}
	// A path a tool reads otherwise than decoded: GitLab's file ci%2Fgit-upload-pack, which a
	// POST writes, is refused, not read as a git fetch; so is a doubly encoded one; a path whose
	// spellings all read alike is decided as ever.
	for _, path := range []string{
		"/connectors/v1alpha1/team/git/path/api/v4/projects/42/repository/files/ci%2Fgit-upload-pack",
		"/connectors/v1alpha1/team/git/path/api/v4/projects/42/repository/files/ci%252Fgit-upload-pack",
	} {
		r, _ := http.NewRequest(http.MethodPost, "http://proxy"+path, nil)
		if got, err := mapper.Verb(context.Background(), class, r); err == nil || !strings.Contains(err.Error(), "cannot be decided") {
			t.Errorf("POST %s: %q %v, want an error: its spellings need different verbs", path, got, err)
		}
	}
	r, _ := http.NewRequest(http.MethodPost, "http://proxy/connectors/v1alpha1/team/git/path/org/my%20repo.git/git-upload-pack", nil)
	if got, err := mapper.Verb(context.Background(), class, r); err != nil || got != "get" {
		t.Errorf("POST of a fetch with an escaped space: %q %v, want get", got, err)
	}
}

// The shipped classes' generators are kept by what they read: GitHub's and GitLab's pick Basic
// or Bearer by path (one evaluation per path and Secret version), SonarQube's reads the Secret
// alone.
func TestShippedGeneratorsAreKept(t *testing.T) {
	e := newEngine(t, 16)
	for file, want := range map[string][]string{"github.yaml": {"path"}, "gitlab.yaml": {"path"}, "sonarqube.yaml": nil} {
		raw, err := os.ReadFile(filepath.Join("..", "deploy", "classes", file))
		if err != nil {
			t.Fatal(err)
		}
		var class v1alpha1.ConnectorClass
		if err := yaml.Unmarshal(raw, &class); err != nil {
			t.Fatal(err)
		}
		generators := 0
		for i := range class.Spec.Auth.Types {
			at := &class.Spec.Auth.Types[i]
			if Generator(at) == "" {
				continue
			}
			generators++
			c := e.compile(GeneratorHook, Generator(at))
			if c.err != nil || c.reads.all || !slices.Equal(c.reads.fields, want) {
				t.Errorf("%s, auth type %s: reads %+v (%v), want the fields %q", file, at.Name, c.reads, c.err, want)
			}
		}
		if generators == 0 {
			t.Errorf("%s has no generator", file)
		}
	}
}

// BenchmarkGeneratePerRequest: a generator that reads the headers whole, so evaluated for every
// request (the proxy bench's `Rego generator reading the headers whole: per request` row), over
// a git client's headers.
func BenchmarkGeneratePerRequest(b *testing.B) {
	e, err := New("rego_bench", Config{CacheSize: 16, Timeout: time.Second, MaxBodyBytes: 1 << 10})
	if err != nil {
		b.Fatal(err)
	}
	class, auth := classWith(`package proxy
auth := {"position": "header", "auth": {"Authorization": concat(" ", ["Basic", base64.encode(concat(":", [input.data.username, input.data.password]))])}} if count(input.request.headers) < 100`, "", "")
	data := map[string][]byte{"username": []byte("u"), "password": []byte("p")}
	header := http.Header{"User-Agent": {"git/2.39.5"}, "Accept": {"*/*"}, "Accept-Encoding": {"deflate, gzip"}, "Git-Protocol": {"version=2"}, "Pragma": {"no-cache"}}
	request := func() *Request { return getRequest(header) }
	b.ReportAllocs()
	for b.Loop() {
		inj, err := e.Generate(context.Background(), class, auth, data, "1", getHead, request)
		if err != nil || inj.Headers["Authorization"] == "" {
			b.Fatalf("%v %v", inj, err)
		}
	}
}

// untouchable is a request body that fails the test when read.
type untouchable struct{ t *testing.T }

func (u untouchable) Read([]byte) (int, error) {
	u.t.Error("the request body was read for a module that does not refer to it")
	return 0, io.EOF
}

func (untouchable) Close() error { return nil }

// A module evaluated per request gets in input.request the request line's fields and only the
// parts it refers to: a part it never names is not built, the body not even read; one that
// refers to input.request or input whole, or by a variable name, gets every part.
func TestInputHoldsThePartsAModuleReads(t *testing.T) {
	e := newEngine(t, 16)
	data := map[string][]byte{"token": []byte(secretValue1)}
	for _, tc := range []struct {
		rule string
		want requestParts
	}{
		{`x := input.request.query.page[0]`, partQuery},
		{`x := [v | some k; v := input.request.headers[k]]`, partHeaders},
		{`x := count(input.request.query) + count(input.request.headers["X-Y"])`, partQuery | partHeaders},
		{`x := input.request.body.a`, partBody},
		{`x := input.request.method`, 0},
		{`x := input.request.headers.Accept`, partHeaders},
		{`x := object.get(input, "data", {}).token`, allParts},
		{`x := object.get(input.request.headers, "Accept", [])`, partHeaders},
		{`x := object.get(input.request.headers, "Accept", input.request.query)`, partHeaders | partQuery},
		{`x := json.marshal(input.request)`, allParts},
		{`x := input.request[k] if k := "query"`, allParts},
		{`y := input
x := y.request.query`, allParts},
	} {
		module := "package proxy\n" + tc.rule + "\n" + `auth := {"position": "header", "auth": {"X": sprintf("%v", [x])}}`
		class, at := classWith(module, "", "")
		c := e.compile(GeneratorHook, Generator(at))
		if c.err != nil {
			t.Fatalf("%q: %v", tc.rule, c.err)
		}
		if got := c.reads.requestParts(); got != tc.want {
			t.Errorf("%q: parts %03b, want %03b", tc.rule, got, tc.want)
		}
		_, err := e.Generate(context.Background(), class, at, data, "", getHead, func() *Request {
			r, _ := http.NewRequest(http.MethodGet, "http://proxy/api/v4/projects?page=2", strings.NewReader(`{"a":"b"}`))
			r.Header = http.Header{"X-Y": {"y"}, "Accept": {"*/*"}, "Content-Type": {"application/json"}}
			if tc.want&partBody == 0 {
				r.Body = untouchable{t}
			}
			return e.NewRequest(r, getHead.Host, getHead.Path, r.URL.Query())
		})
		if err != nil {
			t.Errorf("%q: %v", tc.rule, err)
		}
	}

	// The input holds what the parts say, the request line always.
	r := getRequest(http.Header{"X-Y": {"y"}})
	r.Body = map[string]any{"a": "b"}
	for parts, want := range map[requestParts][]string{
		0: {"host", "method", "path"}, partQuery: {"host", "method", "path", "query"},
		partHeaders | partBody: {"body", "headers", "host", "method", "path"},
		allParts:               {"body", "headers", "host", "method", "path", "query"},
	} {
		v, err := r.value(parts)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, k := range v.(ast.Object).Keys() {
			keys = append(keys, string(k.Value.(ast.String)))
		}
		if slices.Sort(keys); !slices.Equal(keys, want) {
			t.Errorf("parts %03b: input.request has %q, want %q", parts, keys, want)
		}
	}
}
