package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		addr, target string
		want         bool
	}{
		{"https://git.example.com", "https://git.example.com/org/repo.git", true},
		{"https://git.example.com", "https://git.example.com:443/x", true},
		{"https://git.example.com/org", "https://git.example.com/org/repo", true},
		{"https://git.example.com/org", "https://git.example.com/organisation", false},
		{"https://git.example.com", "http://git.example.com/x", false},
		{"https://git.example.com", "https://git.example.com.evil.io/x", false},
		{"http://10.0.0.1:8080", "http://10.0.0.1:8081/x", false},
	} {
		if got := covers(mustURL(t, tc.addr), mustURL(t, tc.target)); got != tc.want {
			t.Errorf("covers(%s, %s) = %v, want %v", tc.addr, tc.target, got, tc.want)
		}
	}
}

func TestParseReversePath(t *testing.T) {
	nn, rest, ok := parseReversePath("/namespaces/ns/connectors/git/org/repo%2Fx.git/info/refs")
	if !ok || nn.String() != "ns/git" || rest != "/org/repo%2Fx.git/info/refs" {
		t.Fatalf("got %v %q %v", nn, rest, ok)
	}
	for _, bad := range []string{"/namespaces/ns/tools/git", "/namespaces//connectors/x", "/namespaces/ns/connectors/"} {
		if _, _, ok := parseReversePath(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestProxyCredentials(t *testing.T) {
	h := http.Header{}
	h.Set("Proxy-Authorization", "Basic "+"YSUyRmIsYy9kOnRvaw==") // a%2Fb,c/d:tok
	cs, tok, err := proxyCredentials(h)
	if err != nil || tok != "tok" || len(cs) != 2 || cs[0].String() != "a/b" || cs[1].String() != "c/d" {
		t.Fatalf("got %v %q %v", cs, tok, err)
	}
	h.Set("Proxy-Authorization", "Basic "+"bm9zbGFzaDp0b2s=") // noslash:tok
	if _, _, err := proxyCredentials(h); err == nil {
		t.Fatal("a user without namespace/name was accepted")
	}
	// A client given the proxy as http://<token>@host sends the token as the user: the refusal,
	// which is logged and printed by CI, does not quote it.
	const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	h.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(token+":")))
	if _, _, err := proxyCredentials(h); err == nil || strings.Contains(err.Error(), "eyJ") {
		t.Fatalf("a token as the proxy user: %v, want a refusal that does not quote it", err)
	}
}

func TestPodOf(t *testing.T) {
	u := &user.DefaultInfo{Name: "system:serviceaccount:ns:builder", Extra: map[string][]string{extraPodName: {"p"}}}
	if got := podOf(u); got != "ns/p" {
		t.Fatalf("podOf = %q", got)
	}
	if got := podOf(&user.DefaultInfo{Name: "alice", Extra: map[string][]string{extraPodName: {"p"}}}); got != "" {
		t.Fatalf("podOf(non-SA) = %q", got)
	}
}

func TestOnlyTokensOfThisNodesPodsAreTaken(t *testing.T) {
	sa := "system:serviceaccount:ns:builder"
	for _, c := range []struct {
		name, node string
		user       *user.DefaultInfo
		refusal    string // "" when taken
	}{
		{"a Pod of this node", "n1", &user.DefaultInfo{Name: sa, Extra: map[string][]string{extraPodName: {"p"}, extraNodeName: {"n1"}}}, ""},
		{"a Pod of another node", "n1", &user.DefaultInfo{Name: sa, Extra: map[string][]string{extraPodName: {"p"}, extraNodeName: {"n2"}}},
			"the token's Pod runs on node n2, not this proxy's"},
		{"a Pod the token names no node of", "n1", &user.DefaultInfo{Name: sa, Extra: map[string][]string{extraPodName: {"p"}}}, "this token names no node"},
		{"two nodes", "n1", &user.DefaultInfo{Name: sa, Extra: map[string][]string{extraPodName: {"p"}, extraNodeName: {"n1", "n2"}}}, "this token names no node"},
		{"no Pod", "n1", &user.DefaultInfo{Name: sa, Extra: map[string][]string{extraNodeName: {"n1"}}}, "bound to no Pod"},
		{"a user", "n1", &user.DefaultInfo{Name: "alice"}, "bound to no Pod"},
		{"any token (--proxy-tokens=any)", "", &user.DefaultInfo{Name: "alice"}, ""},
	} {
		p := &Proxy{cfg: Config{Node: c.node}}
		err := p.ofThisNode(c.user)
		var rf *refusal
		switch {
		case c.refusal == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.refusal != "" && (!errors.As(err, &rf) || rf.status != http.StatusForbidden || !strings.Contains(rf.msg, c.refusal)):
			t.Errorf("%s: got %v, want a 403 saying %q", c.name, err, c.refusal)
		}
	}
}

func TestRegistryScopes(t *testing.T) {
	for scope, want := range map[string]string{"repository:a/b:push,pull": "repository:a/b:pull,push", "repository:a/b:pull": "repository:a/b:pull",
		"repository:a/b:*,pull": "repository:a/b:*,pull", "registry:catalog:*": "registry:catalog:*", "odd": "odd"} {
		if got := normalizeScope(scope); got != want {
			t.Errorf("normalizeScope(%q) = %q, want %q", scope, got, want)
		}
	}
	if got := scopeOf(http.MethodPatch, "/v2/team/app/blobs/uploads/123"); got != "repository:team/app:pull,push" {
		t.Errorf("scopeOf(PATCH) = %q", got)
	}
	if got := scopeOf(http.MethodGet, "/v2/team/app/manifests/v1"); got != "repository:team/app:pull" {
		t.Errorf("scopeOf(GET) = %q", got)
	}
	if got := scopeOf(http.MethodGet, "/v2/"); got != "" {
		t.Errorf("scopeOf(GET /v2/) = %q, want none", got)
	}
	ch, ok := parseBearerChallenge(`Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a:pull,push"`)
	if !ok || ch.realm != "https://auth.example.com/token" || ch.service != "registry" || ch.scope != "repository:a:pull,push" {
		t.Errorf("challenge = %+v", ch)
	}
}

func TestConnectorOfHost(t *testing.T) {
	for host, want := range map[string]string{
		"c-git.team.svc.cluster.local:3128": "team/git",
		"c-git.team.svc":                    "team/git",
		"C-Git.Team.svc.example.org.":       "team/git",
		"connectors-proxy.sys.svc:3128":     "",
		"c-git.team.example.com":            "",
		"c-.team.svc":                       "",
		"c-git..svc":                        "",
		"127.0.0.1:3128":                    "",
		"c-git_x.team.svc":                  "",
	} {
		nn, ok := connectorOfHost(host)
		got := ""
		if ok {
			got = nn.String()
		}
		if got != want {
			t.Errorf("%s: %q, want %q", host, got, want)
		}
	}
}

// failingReviewer fails every question, as client-go reports an API server it cannot reach.
type failingReviewer struct{}

var errUnreachable = errors.New(`dial tcp apiserver.example:6443: connect: connection refused`) // as client-go wraps it, after the URL

func (failingReviewer) AuthenticateToken(context.Context, string) (user.Info, bool, error) {
	return nil, false, errUnreachable
}

func (failingReviewer) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	return authorizer.DecisionNoOpinion, "", errUnreachable
}

// TestAnAPIServerItCannotAskIsNotNamedToTheClient: a 503 the proxy answers when it cannot ask
// the API server says so, and leaves the error, which names the API server's address, to the
// log: the client may not even be authenticated.
func TestAnAPIServerItCannotAskIsNotNamedToTheClient(t *testing.T) {
	p := &Proxy{reviewer: failingReviewer{}}
	_, err := p.authenticate(context.Background(), httptest.NewRecorder(), "a-token", http.StatusUnauthorized)
	_, authzErr := p.allowed(context.Background(), failingReviewer{}, &user.DefaultInfo{Name: "u"}, types.NamespacedName{Namespace: "ns", Name: "c"}, "get", "")
	for what, err := range map[string]error{"review": err, "authorization": authzErr} {
		var rf *refusal
		if !errors.As(err, &rf) || rf.status != http.StatusServiceUnavailable || strings.Contains(rf.msg, "apiserver.example") || !strings.Contains(rf.msg, "try again") {
			t.Errorf("%s: %v, want a 503 saying to try again, naming no address", what, err)
		}
	}
}

// TestInjectedParametersLeaveLocationAndLink: a generator's query credential is taken out of the
// URLs a tool answers with; the rest of each URL, and of the header, stays; a URL that does not
// parse loses its query.
func TestInjectedParametersLeaveLocationAndLink(t *testing.T) {
	h := http.Header{}
	h.Set("Location", "http://tool/x/?page=2&private_token=KEY")
	h.Add("Link", `<http://tool/x?private_token=KEY&page=3>; rel="next", <http://tool/x?page=1>; rel="first"`)
	h.Add("Link", `<not a url %zz?private_token=KEY>; rel="odd"`)
	dropInjectedParameters(h, map[string]string{"private_token": "KEY"})
	if got := h.Get("Location"); got != "http://tool/x/?page=2" {
		t.Errorf("Location %q", got)
	}
	links := h.Values("Link")
	if links[0] != `<http://tool/x?page=3>; rel="next", <http://tool/x?page=1>; rel="first"` {
		t.Errorf("Link %q", links[0])
	}
	if links[1] != `<not a url %zz>; rel="odd"` {
		t.Errorf("a Link whose URL does not parse kept its query: %q", links[1])
	}
}

// TestNestedInjectedParametersLeaveNoHeader: a tool's login redirect nests the URL it was asked
// in a parameter of its own (Jenkins' ?from=, SonarQube's return_to=), the generator's
// credential inside it, percent-encoded once or more, a malformed escape beside it (a caller
// can have a tool echo one): the header is dropped whole, a Link value alone.
func TestNestedInjectedParametersLeaveNoHeader(t *testing.T) {
	const key = "glpat/SECRET+1="
	injected := map[string]string{"private_token": key}
	once := url.QueryEscape("/api?private_token=" + key)
	for _, loc := range []string{
		"http://tool/login?from=" + once,
		"http://tool/login?from=" + url.QueryEscape(once),
		"http://tool/login?bad=%zz&from=" + once,
		"http://tool/login?from=%2Fapi%3Fprivate_token%3D" + strings.ReplaceAll(url.PathEscape(key), "+", "%2b"),
	} {
		h := http.Header{}
		h.Set("Location", loc)
		h.Set("Content-Location", loc)
		h.Set("Refresh", "0; url="+loc)
		h.Add("Link", "<"+loc+`>; rel="login"`)
		h.Add("Link", `<http://tool/x?page=1>; rel="first"`)
		dropInjectedParameters(h, injected)
		for _, name := range []string{"Location", "Content-Location", "Refresh"} {
			if v := h.Get(name); v != "" {
				t.Errorf("%s %q kept: %q", name, loc, v)
			}
		}
		if links := h.Values("Link"); len(links) != 1 || links[0] != `<http://tool/x?page=1>; rel="first"` {
			t.Errorf("Links after %q: %q, want the first page's alone", loc, links)
		}
	}
	h := http.Header{}
	h.Set("Location", "http://tool/login?from=%2Fapi%3Fpage%3D2")
	dropInjectedParameters(h, injected)
	if h.Get("Location") == "" {
		t.Error("a redirect that carries no credential was dropped")
	}
	// A short value a generator adds beside its credential is no secret to look for.
	h = http.Header{}
	h.Set("Location", "http://tool/x?page=1")
	h.Add("Content-Location", "http://tool/y")
	h.Add("Content-Location", "http://tool/login?from="+once) // its second value
	dropInjectedParameters(h, map[string]string{"v": "1", "private_token": key})
	if h.Get("Location") != "http://tool/x?page=1" {
		t.Errorf("a redirect holding a short injected value was changed: %q", h.Get("Location"))
	}
	if got := h.Values("Content-Location"); len(got) != 1 || got[0] != "http://tool/y" {
		t.Errorf("Content-Location values %q, want the one without the credential", got)
	}
}

// TestAnUnreadableAnswerNamesNoCredential: a tool that echoes the request line it was sent
// (an echo service, a line protocol on the port) makes the answer's parse error quote it, the
// query a generator added with it: the client's 502 says what went wrong without it, and the
// log has it redacted; a connection's error is told as it is.
func TestAnUnreadableAnswerNamesNoCredential(t *testing.T) {
	const secret = "glpat-SECRET/123"
	_, parseErr := http.ReadResponse(bufio.NewReader(strings.NewReader("GET /api?private_token="+url.QueryEscape(secret)+" HTTP/1.1\r\n\r\n")), nil)
	if parseErr == nil || !strings.Contains(parseErr.Error(), url.QueryEscape(secret)) {
		t.Fatalf("the parse error does not quote the request line (the test's premise): %v", parseErr)
	}
	rt := &route{connector: &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"}}, target: &url.URL{Host: "tool"},
		injection: &regoeval.Injection{Query: map[string]string{"private_token": secret}}, cred: credential{authorization: "Basic Ym90OnNlY3JldA=="}}
	w := httptest.NewRecorder()
	upstreamErrorFor(w, rt, parseErr)
	if body := w.Body.String(); w.Code != http.StatusBadGateway || strings.Contains(body, "SECRET") || !strings.Contains(body, "could not be read") {
		t.Errorf("the client's answer: %d %q, want a 502 without the credential", w.Code, body)
	}
	if got := rt.redacted(parseErr.Error() + " Basic Ym90OnNlY3JldA=="); strings.Contains(got, "SECRET") || strings.Contains(got, "Ym90OnNlY3JldA") {
		t.Errorf("redacted: %q", got)
	}
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	w = httptest.NewRecorder()
	upstreamErrorFor(w, rt, dialErr)
	if !strings.Contains(w.Body.String(), "connection refused") {
		t.Errorf("a dial's error was not told: %q", w.Body.String())
	}
}
