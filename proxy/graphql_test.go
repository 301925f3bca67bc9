package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// graphqlCheck is the node's default GraphQL reading for a Connector at the root of its tool.
func graphqlCheck(maxBody int64) deniedCheck {
	return deniedCheck{within: 1, graphql: newGraphQLReading(DefaultGraphQLPaths, DefaultDeniedGraphQLFields, nil, maxBody, DefaultGraphQLHeldBytes)}
}

// graphqlRequest is a request to the tool as sendAlong gets it.
func graphqlRequest(method, target, contentType, body string) *http.Request {
	r := httptest.NewRequest(method, "http://gitlab.example"+target, strings.NewReader(body))
	if body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// TestGraphQLRequestsNamingADeniedFieldAreRefused: a denied field is found wherever a server
// could take a document from (a JSON body's strings, keys, batches, repeated keys, escapes and
// JSON held in a string; a form, with or without a Content-Type, ";" as a separator; the
// query string; a body of another type), under an alias, at the GraphQL path however it is
// spelt; a name that only starts or ends as a denied one is no match, nor is a path that is
// not a GraphQL path; what cannot be read is refused, naming why.
func TestGraphQLRequestsNamingADeniedFieldAreRefused(t *testing.T) {
	const json = "application/json"
	d := graphqlCheck(DefaultGraphQLBodyBytes)
	for _, c := range []struct {
		name, method, target, contentType, body string
		status                                  int // 0: sent
	}{
		{"a query", "POST", "/api/graphql", json, `{"query":"{ project(fullPath: \"g/p\") { issues { nodes { title } } } }","variables":{"query":"text"}}`, 0},
		{"names that hold a denied one", "POST", "/api/graphql", json, `{"query":"{ runnerCreated myrunnerCreate pipelineTriggersCount }"}`, 0},
		{"no body, no query", "GET", "/api/graphql", "", "", 0},
		{"another path", "POST", "/api/v4/projects", json, `{"query":"mutation { runnerCreate }"}`, 0},
		{"a repository's path", "POST", "/group/project/api/graphql", "text/plain", "runnerCreate", 0},
		{"a mutation", "POST", "/api/graphql", json, `{"query":"mutation { runnerCreate(input: {}) { errors } }"}`, 403},
		{"an alias", "POST", "/api/graphql", json, `{"query":"mutation { mine: personalAccessTokenCreate(input: {}) { token } }"}`, 403},
		{"a JSON escape", "POST", "/api/graphql", json, `{"query":"mutation { \u0072unnerCreate { errors } }"}`, 403},
		{"a batch", "POST", "/api/graphql", json, `[{"query":"{ a }"},{"query":"{ runner(id: 1) { ephemeralAuthenticationToken } }"}]`, 403},
		{"a repeated key", "POST", "/api/graphql", json, `{"query":"mutation { clusterAgentTokenCreate { secret } }","query":"{ a }"}`, 403},
		{"a key", "POST", "/api/graphql", json, `{"_json":[{"query":"{ a }"}],"runnerSetup":1}`, 403},
		{"a number before it", "POST", "/api/graphql", json, `{"query":"{ f(a: 1runnerCreate) }"}`, 403},
		{"a form without a Content-Type", "POST", "/api/graphql", "", "query=mutation+%7B+runnersRegistrationTokenReset+%7B+token+%7D+%7D", 403},
		{"a form with an empty Content-Type", "POST", "/api/graphql", " ", "query=%7BpipelineTriggers%7D", 403},
		{"a form with \";\"", "POST", "/api/graphql", "application/x-www-form-urlencoded", "a=1;_json[][query]=%7BpipelineTriggers%7D", 403},
		{"the query string", "GET", "/api/graphql?query=%7B+project%7B+pipelineTriggers%7Bnodes%7Btoken%7D%7D%7D%7D", "", "", 403},
		{"a query string's JSON (no document to GitLab)", "GET", "/api/graphql?operations=%7B%22query%22%3A%22%5Cu0072unnerCreate%22%7D", "", "", 0},
		{"GitLab's other endpoint", "POST", "/api/glql", json, `{"query":"mutation { runnerCreate { errors } }"}`, 403},
		{"any extension", "POST", "/api/graphql.csv", json, `{"query":"mutation { runnerCreate { errors } }"}`, 403},
		{"any extension, under a context path", "POST", "/gitlab/api/glql.x.y", json, `{"query":"{ pipelineTriggers }"}`, 403},
		{"another type", "POST", "/api/graphql", "application/graphql", "mutation { personalAccessTokenRotate(input: {}) { token } }", 403},
		{"a context path, case, a suffix", "POST", "/gitlab/API/GraphQL.json", json, `{"query":"mutation { runnerCreate { errors } }"}`, 403},
		{"an encoded path", "POST", "/api%2Fgraphql", json, `{"query":"mutation { runnerCreate { errors } }"}`, 403},
		{"multipart", "POST", "/api/graphql", "multipart/form-data; boundary=x", "--x--\r\n", 415},
		{"declared JSON that is not", "POST", "/api/graphql", json, `{"query": "{ a }"`, 400},
		{"JSON and more", "POST", "/api/graphql", json, `{"query":"{ a }"} {"query":"{ b }"}`, 400},
		{"a parameter that does not decode", "GET", "/api/graphql?query=%zz", "", "", 400},
		{"two Content-Types", "POST", "/api/graphql", json, `{}`, 400},
	} {
		r := graphqlRequest(c.method, c.target, c.contentType, c.body)
		if c.name == "two Content-Types" {
			r.Header.Add("Content-Type", "text/plain")
		}
		_, err := d.checkGraphQL(r, "team")
		status, _ := Status(err)
		if status != c.status || err != nil && status == 0 {
			t.Errorf("%s: %v, want status %d", c.name, err, c.status)
			continue
		}
		if c.status == 403 && !strings.Contains(err.Error(), "--proxy-denied-graphql-fields") {
			t.Errorf("%s: %v, want the flag named", c.name, err)
		}
		if c.status == 0 && c.body != "" {
			if got, _ := io.ReadAll(r.Body); string(got) != c.body {
				t.Errorf("%s: the tool would get the body %q, want %q", c.name, got, c.body)
			}
		}
	}
}

// second is the error of a checkGraphQL call.
func second(_ func(), err error) error { return err }

// TestGraphQLBodiesAreBounded: a body over the limit is refused (413), by its Content-Length
// or as it is read; an encoded one is refused (415); one within it is read. The node holds no
// more than its bound of bodies read and not yet sent, each namespace an eighth of it (503
// past either, naming the flag); a body sent, or refused, gives its bytes back; a body that
// breaks off is a 400, not the tool's failure.
func TestGraphQLBodiesAreBounded(t *testing.T) {
	const body = 60 << 10
	held := deniedCheck{within: 1, graphql: newGraphQLReading(DefaultGraphQLPaths, DefaultDeniedGraphQLFields, nil, 64<<10, heldShares*128<<10)}
	request := func() *http.Request {
		return graphqlRequest("POST", "/api/graphql", "application/json", `{"query":"{ a }","x":"`+strings.Repeat("x", body-20)+`"}`)
	}
	status := func(release func(), err error) int {
		code, _ := Status(err)
		if err != nil && !strings.Contains(err.Error(), "--proxy-graphql-") {
			t.Errorf("%v: want the flag named", err)
		}
		return code
	}
	first, err := held.checkGraphQL(request(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.checkGraphQL(request(), "a"); err != nil {
		t.Fatalf("a second body within a's share: %v", err)
	}
	if code := status(held.checkGraphQL(request(), "a")); code != http.StatusServiceUnavailable {
		t.Errorf("a third body past a's share: status %d, want 503", code)
	}
	if _, err := held.checkGraphQL(request(), "b"); err != nil {
		t.Errorf("another namespace's body, a's share full: %v", err)
	}
	first()
	if _, err := held.checkGraphQL(request(), "a"); err != nil {
		t.Errorf("a's body once another of a's was sent: %v", err)
	}
	full := 0
	for i := range heldShares * 2 {
		if code := status(held.checkGraphQL(request(), fmt.Sprintf("caller-%d", i))); code == http.StatusServiceUnavailable {
			full++
		}
	}
	if full == 0 {
		t.Error("the node's bound held every namespace's bodies: want 503s past it")
	}
	refusing := deniedCheck{within: 1, graphql: newGraphQLReading(DefaultGraphQLPaths, DefaultDeniedGraphQLFields, nil, 64<<10, heldShares*64<<10)}
	for range 3 {
		r := graphqlRequest("POST", "/api/graphql", "text/plain", "runnerCreate"+strings.Repeat(" ", 60<<10))
		if code, _ := Status(second(refusing.checkGraphQL(r, "a"))); code != http.StatusForbidden {
			t.Fatalf("a refused body: status %d, want 403 each time (its bytes given back)", code)
		}
	}
	cut := graphqlRequest("POST", "/api/graphql", "application/json", "")
	cut.Body, cut.ContentLength = io.NopCloser(io.MultiReader(strings.NewReader(`{"query":`), iotest.ErrReader(io.ErrUnexpectedEOF))), 100
	if code, _ := Status(second(refusing.checkGraphQL(cut, "a"))); code != http.StatusBadRequest {
		t.Errorf("a body that broke off: status %d, want 400", code)
	}
	if held := refusing.graphql.held; held.total != 0 || len(held.byCaller) != 0 {
		t.Errorf("after refusals, %d bytes still held (%v)", held.total, held.byCaller)
	}

	d := graphqlCheck(16)
	for body, want := range map[string]int{`{"query":"{a}"}`: 0, `{"query":"{ abc }"}`: 413} {
		r := graphqlRequest("POST", "/api/graphql", "application/json", body)
		if status, _ := Status(second(d.checkGraphQL(r, "team"))); status != want {
			t.Errorf("%q: status %d, want %d", body, status, want)
		}
		r = graphqlRequest("POST", "/api/graphql", "application/json", body)
		r.ContentLength = -1 // chunked: read to the limit
		if status, _ := Status(second(d.checkGraphQL(r, "team"))); status != want {
			t.Errorf("%q, chunked: status %d, want %d", body, status, want)
		}
	}
	r := graphqlRequest("POST", "/api/graphql", "application/json", "x")
	r.Header.Set("Content-Encoding", "gzip")
	if status, _ := Status(second(d.checkGraphQL(r, "team"))); status != http.StatusUnsupportedMediaType {
		t.Errorf("gzip: status %d, want 415", status)
	}
}

// TestGraphQLReadingSettings: no path or no field reads nothing; fields and paths of the
// wrong form are refused, naming them; the fast lane leaves GraphQL requests to the general
// path, which reads them.
func TestGraphQLReadingSettings(t *testing.T) {
	if newGraphQLReading(nil, DefaultDeniedGraphQLFields, nil, 1, 1) != nil || newGraphQLReading(DefaultGraphQLPaths, []string{}, nil, 1, 1) == nil {
		t.Error("a reading without paths, or none without the node's fields (a class may have its own)")
	}
	for _, f := range DefaultDeniedGraphQLFields {
		if err := ValidGraphQLField(f); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{"", "1field", "field-name", "a.b", "é"} {
		if err := ValidGraphQLField(bad); err == nil || !strings.Contains(err.Error(), "GraphQL field") {
			t.Errorf("%q: %v, want refused", bad, err)
		}
	}
	for _, c := range []struct {
		body, held int64
		ok         bool
	}{{0, 0, true}, {1 << 20, 8 << 20, true}, {2 << 20, 8 << 20, false}, {0, 4 << 20, false}, {-1, 0, false}} {
		if err := CheckGraphQLBytes(c.body, c.held); (err == nil) != c.ok || err != nil && !strings.Contains(err.Error(), "--proxy-graphql-") {
			t.Errorf("body %d, held %d: %v, want ok %v naming the flags", c.body, c.held, err, c.ok)
		}
	}
	if err := ValidGraphQLPath("api/graphql"); err == nil || !strings.Contains(err.Error(), "GraphQL path") {
		t.Errorf("a GraphQL path without its slash: %v", err)
	}
	d := graphqlCheck(DefaultGraphQLBodyBytes)
	if d.sendsAsRemembered("/api/graphql") || !d.sendsAsRemembered("/group/project.git/info/refs") {
		t.Error("the fast lane would send a GraphQL request without reading it, or not send a git one")
	}
}

// BenchmarkGraphQLRead is a 1 MiB GraphQL body read for denied fields: a query's, and a JSON
// body of nothing but small strings (the most tokens a body can hold).
func BenchmarkGraphQLRead(b *testing.B) {
	d := graphqlCheck(DefaultGraphQLBodyBytes)
	query := `{"query":"{ project(fullPath: \"g/p\") { issues { nodes { title description } } } }` + strings.Repeat(" ", 1<<20-100) + `"}`
	strs := "[" + strings.Repeat(`"[]",`, (1<<20-10)/5) + `"[]"]`
	for name, body := range map[string]string{"query": query, "small strings": strs} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				release, err := d.checkGraphQL(graphqlRequest("POST", "/api/graphql", "application/json", body), "team")
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}

// TestClassGraphQLFieldsAddToTheNodes: a class's spec.proxy.deniedGraphQLFields are refused
// for its Connectors, naming the class, besides the node's (which name the flag), also where
// the node denies none; another class's Connectors are not held to them; each class's list
// is compiled once for its generation.
func TestClassGraphQLFieldsAddToTheNodes(t *testing.T) {
	p := &Proxy{graphql: newGraphQLReading(DefaultGraphQLPaths, DefaultDeniedGraphQLFields, nil, DefaultGraphQLBodyBytes, DefaultGraphQLHeldBytes)}
	c := &v1alpha1.Connector{Spec: v1alpha1.ConnectorSpec{Address: "https://gitlab.example"}}
	class := &v1alpha1.ConnectorClass{Spec: v1alpha1.ConnectorClassSpec{Proxy: &v1alpha1.ProxySpec{DeniedGraphQLFields: []string{"projectSecretCreate"}}}}
	class.Name, class.UID, class.Generation = "gitlab", "class-uid", 1
	send := func(d deniedCheck, query string) error {
		return second(d.checkGraphQL(graphqlRequest("POST", "/api/graphql", "application/json", `{"query":"`+query+`"}`), "team"))
	}
	d := p.deniedCheckFor(c, class)
	if err := send(d, "mutation { projectSecretCreate { errors } }"); err == nil || !strings.Contains(err.Error(), `ConnectorClass "gitlab"`) ||
		!strings.Contains(err.Error(), "spec.proxy.deniedGraphQLFields") {
		t.Errorf("the class's field: %v, want a refusal naming the class", err)
	}
	if err := send(d, "mutation { runnerCreate { errors } }"); err == nil || !strings.Contains(err.Error(), "--proxy-denied-graphql-fields") {
		t.Errorf("the node's field: %v, want a refusal naming the flag", err)
	}
	if err := send(p.deniedCheckFor(c, nil), "mutation { projectSecretCreate { errors } }"); err != nil {
		t.Errorf("another class's field: %v", err)
	}
	if p.deniedCheckFor(c, class).classFields != d.classFields {
		t.Error("the same generation's fields were compiled again")
	}
	none := &Proxy{graphql: newGraphQLReading(DefaultGraphQLPaths, nil, nil, DefaultGraphQLBodyBytes, DefaultGraphQLHeldBytes)}
	if err := send(none.deniedCheckFor(c, class), "mutation { projectSecretCreate { errors } }"); err == nil {
		t.Error("the class's field, the node denying none: sent")
	}
	unread := none.deniedCheckFor(c, nil) // no field of the node's nor of a class: nothing to read
	if _, err := unread.checkGraphQL(graphqlRequest("POST", "/api/graphql", "multipart/form-data; boundary=x", "--x--\r\n"), "team"); err != nil ||
		!unread.sendsAsRemembered("/api/graphql") {
		t.Errorf("no field to look for: %v; a remembered route keeps the path: %v", err, unread.sendsAsRemembered("/api/graphql"))
	}
	both := &v1alpha1.ConnectorClass{Spec: v1alpha1.ConnectorClassSpec{Proxy: &v1alpha1.ProxySpec{DeniedGraphQLFields: []string{"runnerCreate"}}}}
	both.Name = "gitlab"
	if err := send(p.deniedCheckFor(c, both), "mutation { runnerCreate { errors } }"); err == nil || !strings.Contains(err.Error(), "--proxy-denied-graphql-fields") {
		t.Errorf("a field in both lists: %v, want the node's flag named", err)
	}
}
