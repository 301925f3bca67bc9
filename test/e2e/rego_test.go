package e2e

// Alauda's Rego hooks of the proxy, through the real driver: a class's generator.rego puts a
// personal access token where GitLab wants it (a PRIVATE-TOKEN header) or a key in the query,
// and its authExtractor.rego lets a client send its Pod token the way GitLab's clients send
// theirs. A recording server stands in for the tool.

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// headerRecorder keeps the headers and query of every proxied request.
type headerRecorder struct {
	mu  sync.Mutex
	got []*http.Request
}

func (h *headerRecorder) handle(w http.ResponseWriter, r *http.Request) {
	if r.UserAgent() != connectorstatus.ProbeUserAgent {
		h.mu.Lock()
		h.got = append(h.got, r.Clone(r.Context()))
		h.mu.Unlock()
	}
	if strings.HasSuffix(r.URL.Path, "/directory") { // as a web server adds a directory's slash
		http.Redirect(w, r, r.URL.Path+"/?"+r.URL.RawQuery, http.StatusMovedPermanently)
		return
	}
	if strings.HasSuffix(r.URL.Path, "/paged") { // as a tool pages with the URL it was asked
		w.Header().Set("Link", "<http://"+r.Host+r.URL.Path+"?"+r.URL.RawQuery+"&page=5>; rel=\"next\"")
	}
	_, _ = w.Write([]byte("ok"))
}

func (h *headerRecorder) last(t *testing.T) *http.Request {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) == 0 {
		t.Fatal("no request reached the tool")
	}
	return h.got[len(h.got)-1]
}

func (h *headerRecorder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// since is what reached the tool after its first n requests.
func (h *headerRecorder) since(n int) []*http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got[min(n, len(h.got)):])
}

// carries reports whether any header or the query of r holds s.
func carries(r *http.Request, s string) bool {
	for _, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, s) {
				return true
			}
		}
	}
	return strings.Contains(r.URL.RawQuery, s)
}

func regoClass(t *testing.T) string {
	return classWith(t, "gitlab", func(c *v1alpha1.ConnectorClass) {
		c.Spec.Auth.Types = []v1alpha1.AuthType{
			// Alauda's v0 example shape.
			{Name: "pat", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth = {"position": "header", "auth": {"PRIVATE-TOKEN": input.data.token}}`}},
			{Name: "apikey", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "query", "auth": {"private_token": input.data.token}}`}},
		}
		// Alauda's robust authExtractor example as published, its null checks included.
		robust, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "regoeval", "testdata", "alauda-robust-extractor.rego"))
		if err != nil {
			t.Fatal(err)
		}
		c.Spec.Proxy = &v1alpha1.ProxySpec{AuthExtractor: &v1alpha1.RegoPolicy{Rego: string(robust)}}
	})
}

func TestRegoGeneratorAndExtractor(t *testing.T) {
	tool := &headerRecorder{}
	rec := startRecorder(t, tool.handle)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	class := regoClass(t)
	const pat = "glpat-0123456789abcdef"
	createSecret(t, ns, "gitlab-pat", corev1.SecretTypeOpaque, map[string]string{"token": pat})
	newConnectorWithSecret(t, ns, "gitlab", class, rec.URL, "pat", "gitlab-pat")
	newConnectorWithSecret(t, ns, "gitlab-query", class, rec.URL, "apikey", "gitlab-pat")
	allowConnectors(t, ns, "builder", "gitlab", "gitlab-query")
	token := proxyToken(t, ns, "builder")
	base := env.proxyURL + "/namespaces/" + ns + "/connectors/"

	// The token in PRIVATE-TOKEN, as glab sends it: authenticated, and replaced by the PAT.
	code, body := do(t, noRedirects, newRequest(t, "GET", base+"gitlab/api/v4/projects?page=2", map[string]string{"PRIVATE-TOKEN": token}))
	if code != http.StatusOK || strings.Contains(body, pat) {
		t.Fatalf("PRIVATE-TOKEN <pod token>: status %d %q", code, body)
	}
	got := tool.last(t)
	if got.Header.Get("Private-Token") != pat || got.Header.Get("Authorization") != "" || carries(got, token) || got.URL.Query().Get("page") != "2" {
		t.Errorf("the tool got headers %v query %q: want PRIVATE-TOKEN the PAT, no Authorization, not the Pod token", got.Header, got.URL.RawQuery)
	}

	// A Bearer token works as before; a PRIVATE-TOKEN the client sends does not reach the tool.
	code, _ = do(t, noRedirects, newRequest(t, "GET", base+"gitlab/api/v4/user", map[string]string{"Authorization": "Bearer " + token, "PRIVATE-TOKEN": "forged"}))
	if got := tool.last(t); code != http.StatusOK || got.Header.Values("Private-Token")[0] != pat || len(got.Header.Values("Private-Token")) != 1 {
		t.Errorf("Bearer with a forged PRIVATE-TOKEN: status %d, the tool got %v", code, got.Header.Values("Private-Token"))
	}

	// Position query: the key replaces the client's parameter of that name.
	code, _ = do(t, noRedirects, newRequest(t, "GET", base+"gitlab-query/api/v4/projects?private_token=forged&page=3", map[string]string{"PRIVATE-TOKEN": token}))
	if got := tool.last(t); code != http.StatusOK || got.URL.Query()["private_token"][0] != pat || len(got.URL.Query()["private_token"]) != 1 ||
		got.URL.Query().Get("page") != "3" || carries(got, token) || got.Header.Get("Private-Token") != "" {
		t.Errorf("query: status %d, the tool got %q %v", code, got.URL.RawQuery, got.Header)
	}

	// A tool's redirect to the URL it was asked does not hand the client the injected key.
	req := newRequest(t, "GET", base+"gitlab-query/api/v4/directory?page=4", map[string]string{"PRIVATE-TOKEN": token})
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if loc := res.Header.Get("Location"); res.StatusCode != http.StatusMovedPermanently || strings.Contains(loc, pat) || !strings.Contains(loc, "page=4") {
		t.Errorf("a redirect with the query: %d Location %q, want 301 keeping page=4 without the key", res.StatusCode, loc)
	}

	// Nor does its Link to the next page, the connection's later requests (its remembered route,
	// the fast lane's) included.
	for i := range 3 {
		req = newRequest(t, "GET", base+"gitlab-query/api/v4/paged?page=4", map[string]string{"PRIVATE-TOKEN": token})
		if res, err = noRedirects.Do(req); err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if link := res.Header.Get("Link"); strings.Contains(link, pat) || !strings.Contains(link, "page=5") {
			t.Errorf("request %d: a Link with the query: %q, want page=5 without the key", i, link)
		}
	}

	// A wrong token in the custom header, or none at all, is refused before the tool.
	before := tool.count()
	for name, header := range map[string]map[string]string{
		"wrong token": {"PRIVATE-TOKEN": token + "x"},
		"no token":    {"X-Other": token},
	} {
		if code, body := do(t, noRedirects, newRequest(t, "GET", base+"gitlab/api/v4/projects", header)); code != http.StatusUnauthorized {
			t.Errorf("%s: status %d %q, want 401", name, code, body)
		}
	}
	if n := tool.count(); n != before {
		t.Errorf("%d refused requests reached the tool", n-before)
	}
}

// TestRegoExtractorInTheFastLane: a token GitLab's authExtractor finds in PRIVATE-TOKEN is the
// fast lane's too: checked, its route remembered for the connection with the classes that
// found it, the next requests read in place when the same classes find the same token in
// them, and kept from the tool (every header, and a query parameter, that carried it; a
// request whose query carries it takes the parsed path, which drops that parameter). After a
// request whose Authorization holds no token, one with the same Authorization and a wrong
// PRIVATE-TOKEN is refused. A POST whose body carries the token is refused, also along a
// remembered route.
func TestRegoExtractorInTheFastLane(t *testing.T) {
	tool, rec, env, metricsAddr, ns := laneTestSetup(t)
	class := regoClass(t)
	const pat = "glpat-extracted-0123"
	createSecret(t, ns, "gitlab-pat", corev1.SecretTypeOpaque, map[string]string{"token": pat})
	newConnectorWithSecret(t, ns, "gitlab", class, rec.URL, "pat", "gitlab-pat")
	allowConnectors(t, ns, "builder", "gitlab")
	token := proxyToken(t, ns, "builder")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	head := func(path, headers string) string {
		return "GET /namespaces/" + ns + "/connectors/gitlab" + path + " HTTP/1.1\r\nHost: " + host + "\r\n" + headers + "\r\n"
	}
	privateToken := "PRIVATE-TOKEN: " + token + "\r\n"

	before, reached := scrape(t, metricsAddr), tool.count()
	codes := statusCodes(exchange(t, host, head("/api/v4/projects?private_token="+token+"&page=2", privateToken),
		head("/api/v4/user", privateToken+"X-Copy: "+token+"\r\nx-copy: kept-out-too\r\n"),
		head("/api/v4/projects/group%2Fproject?page=3", privateToken), head("/api/v4/projects?private_token="+token, privateToken)))
	after := scrapeUntil(t, metricsAddr, before, laneWants(2, 2, 0))
	got := tool.since(reached)
	if !slices.Equal(codes, []int{200, 200, 200, 200}) || len(got) != 4 {
		t.Fatalf("PRIVATE-TOKEN <pod token> four times: %v, %d requests reached the tool", codes, len(got))
	}
	for i, r := range got {
		if r.Header.Get("Private-Token") != pat || carries(r, token) || r.Header.Get("X-Copy") != "" {
			t.Errorf("request %d: the tool got %v %q, want PRIVATE-TOKEN the PAT, no X-Copy and no Pod token", i, r.Header, r.URL.RawQuery)
		}
	}
	if q := []string{got[0].URL.RawQuery, got[2].URL.RawQuery, got[3].URL.RawQuery}; !slices.Equal(q, []string{"page=2", "page=3", ""}) {
		t.Errorf("the tool got the queries %q, want page=2, page=3 and none", q)
	}
	if p := got[2].URL.EscapedPath(); p != "/api/v4/projects/group%2Fproject" {
		t.Errorf("the tool got the path %q, want /api/v4/projects/group%%2Fproject (GitLab's project id, as sent)", p)
	}
	// Through net/http's parsers: the first, and the one whose query carries the token; in
	// place the second and the third (its path escaped, as GitLab's API clients send a
	// project's path).
	if c := laneCounts(before, after); c != [3]float64{2, 2, 0} {
		t.Errorf("the fast lane served %v, in place %v, handed over %v; want 2, 2, 0", c[0], c[1], c[2])
	}

	// POSTs with PRIVATE-TOKEN on one connection (the first through net/http's parsers, the
	// next along its remembered route): one whose body carries the token is refused, as on
	// the full path (the proxy sends bodies on unchanged), however it is read; it never
	// reaches the tool, and the connection goes on.
	post := func(body string) string {
		return "POST /namespaces/" + ns + "/connectors/gitlab/api/v4/projects HTTP/1.1\r\nHost: " + host + "\r\n" + privateToken +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	reached = tool.count()
	codes = statusCodes(exchange(t, host, post("a=1"), post("a=2"), post("token="+token), post("a=3")))
	if !slices.Equal(codes, []int{200, 200, http.StatusBadRequest, 200}) || tool.count() != reached+3 {
		t.Errorf("four POSTs, the third's body carrying the token: %v, %d reached the tool; want 200, 200, 400, 200 and 3", codes, tool.count()-reached)
	}

	reached = tool.count()
	noToken := "Authorization: Basic " + basic("x", "") + "\r\n"
	codes = statusCodes(exchange(t, host, head("/api/v4/user", noToken+privateToken),
		head("/api/v4/user", noToken+"PRIVATE-TOKEN: "+token+"x\r\n")))
	if !slices.Equal(codes, []int{200, 401}) || tool.count() != reached+1 {
		t.Errorf("the same Authorization, the right then a wrong PRIVATE-TOKEN: %v, %d requests reached the tool; want 200, 401 and 1", codes, tool.count()-reached)
	}
}

// A class without an authExtractor does not take a token from PRIVATE-TOKEN, even though
// another class's extractor finds one there.
func TestRegoExtractorIsTheConnectorsClass(t *testing.T) {
	tool := &headerRecorder{}
	rec := startRecorder(t, tool.handle)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	regoClass(t)
	createSecret(t, ns, "plain-auth", corev1.SecretTypeBasicAuth, map[string]string{"username": "u", "password": "p"})
	newConnectorWithSecret(t, ns, "plain", gitClass(t), rec.URL, "basicAuth", "plain-auth")
	allowConnectors(t, ns, "builder", "plain")
	token := proxyToken(t, ns, "builder")
	code, body := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/plain/x", map[string]string{"PRIVATE-TOKEN": token}))
	if code != http.StatusUnauthorized || !strings.Contains(body, "does not find one") || tool.count() != 0 {
		t.Errorf("status %d %q, %d requests reached the tool; want 401 and none", code, body, tool.count())
	}
}

// A generator that fails answers 502 naming the class and auth type, never the Secret.
func TestRegoGeneratorErrorNamesTheClass(t *testing.T) {
	tool := &headerRecorder{}
	rec := startRecorder(t, tool.handle)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	class := classWith(t, "broken", func(c *v1alpha1.ConnectorClass) {
		c.Spec.Auth.Types = []v1alpha1.AuthType{{Name: "pat", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": input.data.token, "auth": {}}`}}}
	})
	const secret = "glpat-never-shown"
	createSecret(t, ns, "pat", corev1.SecretTypeOpaque, map[string]string{"token": secret})
	newConnectorWithSecret(t, ns, "broken", class, rec.URL, "pat", "pat")
	allowConnectors(t, ns, "builder", "broken")
	token := proxyToken(t, ns, "builder")
	code, body := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/broken/x", map[string]string{"Authorization": "Bearer " + token}))
	if code != http.StatusBadGateway || !strings.Contains(body, "ConnectorClass "+class+", auth type pat, generator.rego: auth.position must be") ||
		strings.Contains(body, secret) || tool.count() != 0 {
		t.Errorf("status %d %q, %d requests reached the tool", code, body, tool.count())
	}
}

// TestRegoGeneratorInTheFastLane: the headers of a generator that reads only the Secret, or
// also the request's path, are set by the fast lane (first request through net/http's parsers,
// the next from the connection's remembered route, in place), replacing a client header of
// the same name, the Pod token kept from the tool, each path its own answer; a changed Secret
// reaches the next route. A generator that reads headers by name, or the query, is kept by
// their values too, in place as well, and does not see the client's Authorization; one that
// reads the headers whole is evaluated per request, in place as well.
func TestRegoGeneratorInTheFastLane(t *testing.T) {
	tool, rec, env, metricsAddr, ns := laneTestSetup(t)
	class := classWith(t, "generated", func(c *v1alpha1.ConnectorClass) {
		c.Spec.Auth.Types = []v1alpha1.AuthType{
			{Name: "pat", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "header", "auth": {"PRIVATE-TOKEN": input.data.token}}`}},
			{Name: "by-path", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "header", "auth": {"X-Signed": concat(":", [input.data.token, input.request.path])}}`}},
			{Name: "by-header", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "header", "auth": {"X-Signed": concat(":", [input.data.token, input.request.headers["X-Part"][0], bearer])}}
bearer := "bearer seen" if input.request.headers.Authorization
default bearer := "no bearer"`}},
			{Name: "by-query", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "header", "auth": {"X-Signed": concat(":", [input.data.token, input.request.query.page[0]])}}`}},
			{Name: "per-request", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "header", "auth": {"X-Signed": concat(":", [input.data.token, seen("X-Part"), seen("Authorization")])}}
seen(name) := object.get(input.request.headers, name, ["none"])[0]`}},
			{Name: "in-query", SecretType: "Opaque", Generator: &v1alpha1.RegoPolicy{Rego: `package proxy
auth := {"position": "query", "auth": {"private_token": input.data.token}}`}},
		}
	})
	const pat = "glpat-fastlane-0123"
	createSecret(t, ns, "pat", corev1.SecretTypeOpaque, map[string]string{"token": pat})
	newConnectorWithSecret(t, ns, "pat", class, rec.URL, "pat", "pat")
	newConnectorWithSecret(t, ns, "by-path", class, rec.URL, "by-path", "pat")
	newConnectorWithSecret(t, ns, "by-header", class, rec.URL, "by-header", "pat")
	newConnectorWithSecret(t, ns, "by-query", class, rec.URL, "by-query", "pat")
	newConnectorWithSecret(t, ns, "per-request", class, rec.URL, "per-request", "pat")
	newConnectorWithSecret(t, ns, "in-query", class, rec.URL, "in-query", "pat")
	allowConnectors(t, ns, "builder", "pat", "by-path", "by-header", "by-query", "per-request", "in-query")
	token := proxyToken(t, ns, "builder")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	// get sends GETs of paths on one new connection and returns what the tool got for each.
	get := func(connector string, extra string, paths ...string) []*http.Request {
		t.Helper()
		var heads []string
		for _, path := range paths {
			heads = append(heads, "GET /namespaces/"+ns+"/connectors/"+connector+path+" HTTP/1.1\r\nHost: "+host+
				"\r\nAuthorization: Bearer "+token+"\r\n"+extra+"\r\n")
		}
		reached := tool.count()
		for i, code := range statusCodes(exchange(t, host, heads...)) {
			if code != http.StatusOK {
				t.Fatalf("GET %s of %s: %d", paths[i], connector, code)
			}
		}
		got := tool.since(reached)
		if len(got) != len(paths) {
			t.Fatalf("%d of %d GETs of %s reached the tool", len(got), len(paths), connector)
		}
		return got
	}

	before := scrape(t, metricsAddr)
	for i, got := range get("pat", "PRIVATE-TOKEN: forged\r\n", "/api/v4/user", "/api/v4/projects") {
		if v := got.Header.Values("Private-Token"); len(v) != 1 || v[0] != pat || got.Header.Get("Authorization") != "" || carries(got, token) {
			t.Errorf("request %d: the tool got PRIVATE-TOKEN %q, Authorization %q (want the PAT alone, no Pod token)", i, v, got.Header.Get("Authorization"))
		}
	}
	after := scrapeUntil(t, metricsAddr, before, laneWants(1, 1, 0))
	if c := laneCounts(before, after); c != [3]float64{1, 1, 0} {
		t.Errorf("a generator of the Secret alone: the fast lane served %v, in place %v, handed over %v; want 1, 1, 0", c[0], c[1], c[2])
	}

	const rotated = "glpat-rotated-4567"
	sec, err := cp.Kube.CoreV1().Secrets(ns).Get(context.Background(), "pat", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["token"] = []byte(rotated)
	if _, err := cp.Kube.CoreV1().Secrets(ns).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(20*time.Second, func() bool { return get("pat", "", "/api/v4/user")[0].Header.Get("Private-Token") == rotated }) {
		t.Fatal("the rotated Secret never reached the generator's headers")
	}

	// signed checks what send's requests gave the tool in X-Signed, and how the fast lane took
	// them: served, in place, handed over. A remembered route lasts a second and ends when any
	// Pod's AccessRequest changes (an earlier test's cleanup too), and then a request that would
	// have been in place takes the parsed path, with the same answer: send is tried up to five
	// times for the counts, every answer checked.
	signed := func(what string, send func() []*http.Request, want []string, served, inPlace, handed float64) {
		t.Helper()
		var c [3]float64
		for attempt := 0; attempt < 5; attempt++ {
			before := scrape(t, metricsAddr)
			got := send()
			after := scrapeUntil(t, metricsAddr, before, laneWants(served, inPlace, handed))
			for i := range want {
				if v := got[i].Header.Get("X-Signed"); v != want[i] {
					t.Errorf("a generator reading %s, request %d: X-Signed %q, want %q", what, i, v, want[i])
				}
			}
			if c = laneCounts(before, after); c == [3]float64{served, inPlace, handed} {
				return
			}
		}
		t.Errorf("a generator reading %s: the fast lane served %v, in place %v, handed over %v; want %v, %v, %v", what, c[0], c[1], c[2], served, inPlace, handed)
	}
	// The decoded path, as for a request through net/http's parsers, also when it has escapes.
	signed("the path", func() []*http.Request { return get("by-path", "", "/a", "/b", "/a", "/g%2Fp%41") },
		[]string{rotated + ":/a", rotated + ":/b", rotated + ":/a", rotated + ":/g/pA"}, 1, 3, 0)
	// The second connection's request in place too, along the route the first one's shared
	// (sharedMemos), the generator given its own X-Part.
	signed("headers", func() []*http.Request {
		return append(get("by-header", "X-Part: one\r\n", "/a", "/b"), get("by-header", "X-Part: two\r\n", "/a")...)
	}, []string{rotated + ":one:no bearer", rotated + ":one:no bearer", rotated + ":two:no bearer"}, 1, 2, 0)
	// A generator that reads the query is kept by it, in place too, over the query parsed
	// (escapes decoded) as for a request through net/http's parsers.
	signed("the query", func() []*http.Request {
		return get("by-query", "", "/a?page=1", "/a?page=2", "/b?page=1", "/b?page=%33")
	},
		[]string{rotated + ":1", rotated + ":2", rotated + ":1", rotated + ":3"}, 1, 3, 0)
	// A generator that reads the headers whole is evaluated for every request, in place too
	// (a second connection's along the route the first one's shared), over each request's own
	// headers, never the client's Authorization.
	signed("the headers whole", func() []*http.Request {
		return append(get("per-request", "X-Part: p\r\n", "/a", "/b"), get("per-request", "X-Part: q\r\n", "/a")...)
	}, []string{rotated + ":p:none", rotated + ":p:none", rotated + ":q:none"}, 1, 2, 0)

	// A generator that answers in the query: the fast lane sets the parameter, replacing the
	// client's of that name and keeping the rest.
	before = scrape(t, metricsAddr)
	for i, got := range get("in-query", "", "/api/v4/projects?private_token=forged&page=3", "/api/v4/user") {
		if q := got.URL.Query(); len(q["private_token"]) != 1 || q.Get("private_token") != rotated || i == 0 && q.Get("page") != "3" || carries(got, token) {
			t.Errorf("a generator answering in the query, request %d: the tool got %q", i, got.URL.RawQuery)
		}
	}
	after = scrapeUntil(t, metricsAddr, before, laneWants(2, 0, 0))
	if c := laneCounts(before, after); c != [3]float64{2, 0, 0} {
		t.Errorf("a generator answering in the query: the fast lane served %v, in place %v, handed over %v; want 2, 0, 0", c[0], c[1], c[2])
	}
}
