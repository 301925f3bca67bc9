package proxy

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
)

// This file reads the GraphQL requests the proxy sends with a Connector's credential. A GraphQL
// API does through one path what a REST API does through many, so the denied paths
// (deniedpaths.go) cannot tell GitLab's runnerCreate, which answers a new runner's token, from
// a query of issues. A request to one of the node's GraphQL paths (--proxy-graphql-paths,
// looked for as denied paths are) is read before it is sent on, and refused when it names a
// denied field (--proxy-denied-graphql-fields: a mutation, or a field that answers a
// credential) anywhere a server could take a GraphQL document from: its query string's
// parameters, its form's, every string of its JSON body (keys too), or the whole of a body of
// another type. (JSON held in a parameter is no document to GitLab: only a multipart body's
// "operations" is, and multipart is refused.)
//
// Why a name anywhere, and no GraphQL parser: a field's name is written whole in the document
// (GraphQL names have no escapes, and a variable cannot name a field), so a document that
// selects a denied field holds its name as a word, under any alias, in any operation or
// fragment. Looking for the word, in every place a server's parameter parsing (GitLab's Rack:
// "query", "_json", "operations", nested names, ";" as a separator) could find a document,
// needs no model of which of them it takes, nor of how its GraphQL parser differs from ours;
// it refuses a document that only mentions the name (in a string, a comment), which a Pod's
// work has no need of. What cannot be read so (a multipart or encoded body, a declared JSON
// body that is not JSON, a parameter that does not decode, a body over
// --proxy-graphql-body-bytes) is refused.

// DefaultGraphQLPaths are --proxy-graphql-paths' default: GitLab's GraphQL endpoints (and a
// GitHub Enterprise's, whose GraphQL API has none of the default fields): /api/graphql, and
// /api/glql, whose controller runs any GraphQL as the first does.
var DefaultGraphQLPaths = []string{"/api/graphql", "/api/glql"}

// DefaultDeniedGraphQLFields are --proxy-denied-graphql-fields' default: GitLab's GraphQL
// fields that mint a credential the caller would then hold, or answer one.
var DefaultDeniedGraphQLFields = []string{
	// A personal access token created, or rotated (which also revokes the Connector's own).
	"personalAccessTokenCreate",
	"personalAccessTokenRotate",
	// Runners, which receive jobs and their secrets: a runner created (its token in the
	// answer), the registration token reset, and the fields that show a runner's token or the
	// commands that register one.
	"runnerCreate",
	"runnersRegistrationTokenReset",
	"ephemeralAuthenticationToken",
	"ephemeralRegisterCommand",
	"runnerSetup",
	// A cluster agent's token, and pipeline trigger tokens: created, updated or listed (a
	// trigger's creator is shown its token whole).
	"clusterAgentTokenCreate",
	"pipelineTriggerCreate",
	"pipelineTriggerUpdate",
	"pipelineTriggers",
	// Alert integrations' tokens (whoever holds one posts alerts into a project).
	"httpIntegrationCreate",
	"httpIntegrationResetToken",
	"prometheusIntegrationResetToken",
}

// DefaultGraphQLBodyBytes and DefaultGraphQLHeldBytes are --proxy-graphql-body-bytes' and
// --proxy-graphql-held-bytes' defaults.
const (
	DefaultGraphQLBodyBytes = 1 << 20
	DefaultGraphQLHeldBytes = 64 << 20
)

// graphqlName is a GraphQL name's form.
var graphqlName = regexp.MustCompile(`^[_A-Za-z][_0-9A-Za-z]*$`)

// ValidGraphQLField says what is wrong with a denied GraphQL field, or nil.
func ValidGraphQLField(name string) error {
	if len(name) > maxDeniedPathBytes || !graphqlName.MatchString(name) {
		return fmt.Errorf("%q is not a GraphQL field name: write a letter or \"_\" and then letters, digits and \"_\", %d bytes at most", name, maxDeniedPathBytes)
	}
	return nil
}

// ValidGraphQLPath says what is wrong with a GraphQL path (written as a denied path is), or
// nil.
func ValidGraphQLPath(path string) error {
	if err := ValidDeniedPath(path); err != nil {
		return fmt.Errorf("GraphQL path: %w", err)
	}
	return nil
}

// graphqlReading is the node's reading of GraphQL requests: where they are sent (paths, with
// a route's window), the fields none may name, and how much of a body is read.
type graphqlReading struct {
	paths   *deniedPaths
	fields  *graphqlFields
	maxBody int64
	// held bounds the bytes of the bodies read and not yet sent: each request holds its body
	// (up to maxBody) until the tool has it, and one Pod's concurrent requests would otherwise
	// hold as many MiB as it opens.
	held *heldBytes
	// withDenied are the node's denied paths and paths together, for the one lookup of a
	// remembered route's request (sendsAsRemembered).
	withDenied *deniedPaths
}

// newGraphQLReading compiles the node's GraphQL settings, with its denied paths; nil when no
// path is set (nothing to read), or a byte limit is not positive. Without fields of the node's
// it reads the requests of the Connectors whose class has its own (deniedCheckFor).
func newGraphQLReading(paths, fields, denied []string, maxBody, heldBytes int64) *graphqlReading {
	if maxBody <= 0 || heldBytes <= 0 {
		return nil
	}
	g := &graphqlReading{paths: &deniedPaths{byAnchor: map[string][]int{}}, fields: newGraphQLFields("", fields), maxBody: maxBody,
		held: newHeldBytes(heldBytes), withDenied: &deniedPaths{byAnchor: map[string][]int{}}}
	g.paths.add("", paths, true) // a Rails route: any extension is its format
	g.withDenied.add("", denied, false)
	g.withDenied.add("", paths, true)
	if g.paths.orNil() == nil {
		return nil
	}
	return g
}

// readsGraphQL tells whether a request to escaped, a tool path as it will be sent, is one of
// the node's GraphQL requests (a path that does not decode is: check refuses it anyway).
func (d deniedCheck) readsGraphQL(escaped string) bool {
	if d.graphql == nil {
		return false
	}
	found, undecodable := reaching(escaped, d.within, d.graphql.paths, nil)
	return found != nil || undecodable
}

// sendsAsRemembered tells whether a request to escaped may take a remembered route (the fast
// lane's): it is neither denied nor a GraphQL request, which the general path refuses or reads.
func (d deniedCheck) sendsAsRemembered(escaped string) bool {
	if d.graphql == nil {
		return d.check(escaped) == nil
	}
	found, undecodable := reaching(escaped, d.within, d.graphql.withDenied, d.class) // one lookup for both
	return found == nil && !undecodable
}

// checkGraphQL refuses r, a request of caller about to be sent to the tool, when it is one of
// the node's GraphQL requests and names a denied field or cannot be read. The body it read is
// r's again, held against the node's bound until release, which the caller calls once r is
// sent.
func (d deniedCheck) checkGraphQL(r *http.Request, caller string) (release func(), err error) {
	release = func() {}
	if !d.readsGraphQL(r.URL.EscapedPath()) {
		return release, nil
	}
	g := d.graphql
	rd := docReader{fields: fieldSets{g.fields, d.classFields}}
	if err := rd.form(r.URL.RawQuery, "query string"); err != nil {
		return nil, err
	}
	body, held, err := g.readBody(r, caller)
	if held != nil {
		release = held
	}
	if err == nil && len(body) > 0 {
		err = rd.body(r.Header, body)
	}
	if err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// graphqlFields are denied GraphQL field names, and who denies them: a class (its name), or
// the node ("").
type graphqlFields struct {
	names map[string]bool
	class string
}

// newGraphQLFields compiles class's fields, or the node's; nil for none (a name the
// validation would refuse is left out).
func newGraphQLFields(class string, names []string) *graphqlFields {
	f := &graphqlFields{names: map[string]bool{}, class: class}
	for _, name := range names {
		if ValidGraphQLField(name) == nil {
			f.names[name] = true
		}
	}
	if len(f.names) == 0 {
		return nil
	}
	return f
}

// refusal is the 403 of a request that names field.
func (f *graphqlFields) refusal(field string) error {
	if f.class == "" {
		return refusef(http.StatusForbidden, "the proxy denies the GraphQL field %q (--proxy-denied-graphql-fields): it would hand the caller a credential of the Connector", field)
	}
	return refusef(http.StatusForbidden, "ConnectorClass %q denies the GraphQL field %q through the proxy (spec.proxy.deniedGraphQLFields): "+
		"it would hand the caller a credential of the Connector", f.class, field)
}

// fieldSets are the node's and a class's denied fields (either may be nil).
type fieldSets [2]*graphqlFields

// docReader reads a GraphQL request's documents for fields.
type docReader struct{ fields fieldSets }

// graphqlUnread is the 4xx of a GraphQL request the proxy cannot read.
func graphqlUnread(status int, format string, args ...any) error {
	return refusef(status, "the proxy reads a GraphQL request before it sends it with a Connector's credential (--proxy-graphql-paths), and cannot read this one: "+format, args...)
}

// readBody reads r's body, up to the limit, and gives r a body of what it read (which may be
// read again: GetBody); release gives its bytes back to the node's bound (held) once it is
// sent.
func (g *graphqlReading) readBody(r *http.Request, caller string) (body []byte, release func(), err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil, nil
	}
	for _, coding := range r.Header.Values("Content-Encoding") {
		if !strings.EqualFold(strings.TrimSpace(coding), "identity") {
			return nil, nil, graphqlUnread(http.StatusUnsupportedMediaType, "its body is encoded (Content-Encoding %q)", coding)
		}
	}
	if r.ContentLength > g.maxBody {
		return nil, nil, graphqlUnread(http.StatusRequestEntityTooLarge, "its body is over %d bytes (--proxy-graphql-body-bytes)", g.maxBody)
	}
	in := &heldReader{r: io.LimitReader(r.Body, g.maxBody+1), held: g.held, caller: caller}
	release = func() { g.held.give(caller, in.taken) }
	var buf bytes.Buffer
	_, err = buf.ReadFrom(in)
	switch {
	case errors.Is(err, errHeldFull):
		return nil, release, graphqlUnread(http.StatusServiceUnavailable, "%s", g.held.fullMessage())
	case err != nil:
		return nil, release, graphqlUnread(http.StatusBadRequest, "its body could not be read whole: %v", err)
	case int64(buf.Len()) > g.maxBody:
		return nil, release, graphqlUnread(http.StatusRequestEntityTooLarge, "its body is over %d bytes (--proxy-graphql-body-bytes)", g.maxBody)
	}
	body = buf.Bytes()
	r.Body = struct {
		io.Reader
		io.Closer
	}{bytes.NewReader(body), r.Body}
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return body, release, nil
}

// heldStep is the most one read of a GraphQL body takes before it is counted: a body is
// counted as it arrives, not by the length it declares (a Pod declaring lengths it never sends
// would hold the bound for nothing).
const heldStep = 32 << 10

// heldReader reads a GraphQL body, counting what it has read against held as caller's.
type heldReader struct {
	r      io.Reader
	held   *heldBytes
	caller string
	taken  int64
}

// errHeldFull is a read the node's bound, or the caller's share of it, has no room for.
var errHeldFull = errors.New("the bound of GraphQL bodies held is reached")

func (h *heldReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p[:min(len(p), heldStep)])
	if !h.held.take(h.caller, int64(n)) {
		return 0, errHeldFull
	}
	h.taken += int64(n)
	return n, err
}

// heldBytes bounds the bytes of GraphQL bodies the node holds, read and not yet sent: in all,
// and each caller (a namespace, or a user) an eighth of that, so that one tenant's stalled
// uploads cannot take what the others' requests need. Written here: a weighted semaphore has
// no shares by key.
type heldBytes struct {
	mu           sync.Mutex
	total, max   int64
	byCaller     map[string]int64
	maxPerCaller int64
}

// heldShares is how many callers' shares the node's bound holds.
const heldShares = 8

// CheckGraphQLBytes says what is wrong with --proxy-graphql-body-bytes and
// --proxy-graphql-held-bytes (0: their defaults): a body must fit a namespace's share.
func CheckGraphQLBytes(body, held int64) error {
	if body < 0 || held < 0 {
		return fmt.Errorf("--proxy-graphql-body-bytes and --proxy-graphql-held-bytes must not be negative (0: their defaults)")
	}
	body, held = cmp.Or(body, DefaultGraphQLBodyBytes), cmp.Or(held, DefaultGraphQLHeldBytes)
	if body > held/heldShares {
		return fmt.Errorf("--proxy-graphql-body-bytes (%d) must be at most an eighth of --proxy-graphql-held-bytes (%d), a namespace's share", body, held)
	}
	return nil
}

func newHeldBytes(max int64) *heldBytes {
	return &heldBytes{max: max, maxPerCaller: max / heldShares, byCaller: map[string]int64{}}
}

// take counts n more bytes of caller's, if the bound and its share have room.
func (h *heldBytes) take(caller string, n int64) bool {
	if n == 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total+n > h.max || h.byCaller[caller]+n > h.maxPerCaller {
		return false
	}
	h.total += n
	h.byCaller[caller] += n
	return true
}

// give gives n bytes of caller's back.
func (h *heldBytes) give(caller string, n int64) {
	if n == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total -= n
	if h.byCaller[caller] -= n; h.byCaller[caller] <= 0 {
		delete(h.byCaller, caller)
	}
}

// fullMessage is the 503's reason.
func (h *heldBytes) fullMessage() string {
	return fmt.Sprintf("the node holds %d bytes of GraphQL bodies on their way, and each namespace %d, at most (--proxy-graphql-held-bytes); try again", h.max, h.maxPerCaller)
}

// jsonMediaTypes are the media types Rails (GitLab) parses as JSON besides "+json" ones.
var jsonMediaTypes = map[string]bool{"application/json": true, "text/x-json": true, "application/jsonrequest": true}

// body reads a GraphQL request's body as its Content-Type says a server parses it: a form
// (also when it has none: Rack parses a POST's body without one so), JSON, or text.
func (rd docReader) body(h http.Header, body []byte) error {
	types := h.Values("Content-Type")
	if len(types) > 1 {
		return graphqlUnread(http.StatusBadRequest, "it has %d Content-Type headers", len(types))
	}
	mediaType := ""
	if len(types) == 1 && strings.TrimSpace(types[0]) != "" { // empty: none, to Rack
		var err error
		if mediaType, _, err = mime.ParseMediaType(types[0]); err != nil {
			return graphqlUnread(http.StatusBadRequest, "its Content-Type does not parse: %v", err)
		}
	}
	switch {
	case mediaType == "" || mediaType == "application/x-www-form-urlencoded":
		return rd.form(string(body), "form")
	case strings.HasPrefix(mediaType, "multipart/"):
		return graphqlUnread(http.StatusUnsupportedMediaType, "its body is %s (a file upload)", mediaType)
	}
	err := rd.json(body)
	if errors.Is(err, errNotJSON) {
		if jsonMediaTypes[mediaType] || strings.HasSuffix(mediaType, "+json") {
			return graphqlUnread(http.StatusBadRequest, "its body is not JSON (%v)", err)
		}
		return rd.text(string(body)) // not JSON: a server that takes this type takes the text
	}
	return err
}

// form reads a query string's or form's parameters, split at "&" and ";" (Rack's, before
// Rack 3) and decoded: each name and value is text.
func (rd docReader) form(raw, what string) error {
	for pair := range strings.FieldsFuncSeq(raw, func(c rune) bool { return c == '&' || c == ';' }) {
		name, value, _ := strings.Cut(pair, "=")
		for _, s := range []string{name, value} {
			decoded, err := url.QueryUnescape(s)
			if err != nil {
				return graphqlUnread(http.StatusBadRequest, "a parameter of its %s does not decode", what)
			}
			if err := rd.text(decoded); err != nil {
				return err
			}
		}
	}
	return nil
}

// errNotJSON is a body that is not one JSON value.
var errNotJSON = errors.New("not one JSON value")

// json reads every string of one JSON value (object keys too) as text: a repeated key's
// every value is seen (a map keeps one of them). Once json.Valid has taken the value, its
// strings are where its unescaped quotes say; written here, without a decoder's token per
// string: a body of a million small strings would otherwise cost a second of CPU a MiB.
func (rd docReader) json(data []byte) error {
	if !json.Valid(data) {
		return errNotJSON
	}
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		start, escaped := i, false
		for i++; data[i] != '"'; i++ {
			if data[i] == '\\' {
				escaped, i = true, i+1
			}
		}
		if !escaped {
			if err := deniedWordIn(rd.fields, data[start+1:i]); err != nil {
				return err
			}
			continue
		}
		var decoded string
		if err := json.Unmarshal(data[start:i+1], &decoded); err != nil {
			return err
		}
		if err := rd.text(decoded); err != nil {
			return err
		}
	}
	return nil
}

// text refuses s when it holds a denied field's name as a word.
func (rd docReader) text(s string) error { return deniedWordIn(rd.fields, s) }

// deniedWordIn refuses s when it holds a field of sets as a word: a run of GraphQL name
// characters, less leading digits (a lexer may end a number where a name begins).
func deniedWordIn[S string | []byte](sets fieldSets, s S) error {
	start := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && nameBytes[s[i]] {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			for start < i && '0' <= s[start] && s[start] <= '9' {
				start++
			}
			for _, f := range sets {
				if f != nil && f.names[string(s[start:i])] {
					return f.refusal(string(s[start:i]))
				}
			}
			start = -1
		}
	}
	return nil
}

// nameBytes are the bytes a GraphQL name may hold: "_", digits, ASCII letters.
var nameBytes = func() (t [256]bool) {
	for c := range t {
		t[c] = c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
	}
	return t
}()
