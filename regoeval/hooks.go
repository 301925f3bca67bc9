package regoeval

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/net/http/httpguts"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// Positions of a generator's injection.
const (
	PositionHeader = "header"
	PositionQuery  = "query"
	PositionBody   = "body"
)

// Injection is a generator's answer (Alauda's AuthInjection): where to put the credential and
// what to put there.
type Injection struct {
	// Position is header, query or body.
	Position string
	// ContentType is the body's media type for position body: application/json (the default)
	// or application/x-www-form-urlencoded.
	ContentType string
	// Headers are header values by name (position header).
	Headers map[string]string
	// Query are query parameter values by name (position query).
	Query map[string]string
	// Body are the fields set at the top level of the body (position body).
	Body map[string]any
}

// Generator returns the generator module of an auth type, or "" when it has none.
func Generator(t *v1alpha1.AuthType) string {
	if t == nil || t.Generator == nil {
		return ""
	}
	return t.Generator.Rego
}

// RequestHead is what of a request a module whose answers are kept may read: the request
// line's fields, its query and, by their names, headers. Header is nil when the caller has no
// headers at hand, and HasQuery false when it has not the query as the module sees it: either
// leaves a module that reads them to the whole request (Generate's req).
type RequestHead struct {
	Method, Path, Host string
	// RawQuery is the query as the module's input.request.query holds it (url.ParseQuery's),
	// when HasQuery.
	RawQuery string
	HasQuery bool
	Header   Headers
}

// Headers gives a request's headers by name as a module sees them: the values, and whether
// the header is there at all.
type Headers interface {
	Lookup(name string) (values []string, ok bool)
}

func (h RequestHead) field(name string) string {
	switch name {
	case "method":
		return h.Method
	case "path":
		return h.Path
	case "query":
		return h.RawQuery
	}
	return h.Host
}

// Query is RawQuery parsed as url.URL.Query does (what parses, of a bad one): the module's
// input.request.query.
func (h RequestHead) Query() url.Values {
	q, _ := url.ParseQuery(h.RawQuery)
	return q
}

// request is the input.request of a module that reads head's fields, the headers named and,
// when query, the query (none of the rest: its other fields are left empty).
func (h RequestHead) request(headers []string, query bool) *Request {
	r := &Request{Method: h.Method, Path: h.Path, Host: h.Host}
	if query {
		r.Query = h.Query()
	}
	for _, name := range headers {
		if values, ok := h.Header.Lookup(name); ok {
			if r.Headers == nil {
				r.Headers = http.Header{}
			}
			r.Headers[name] = values
		}
	}
	return r
}

// Generate evaluates an auth type's generator with the Secret's data (input.data, a string per
// key) and the request being sent (input.request: head's fields and headers, and the rest built
// by req only when the module reads more than those; req may be nil, and the answer is then an
// error for such a module). dataVersion identifies the Secret's content (UID and
// resourceVersion): the answer of a module that reads only input.data and what head has is
// kept under it and the values read, and shared by later requests, which must not change it.
// Errors name the class and auth type, never a value of the Secret or the request.
func (e *Engine) Generate(ctx context.Context, class *v1alpha1.ConnectorClass, t *v1alpha1.AuthType, data map[string][]byte, dataVersion string, head RequestHead, req func() *Request) (*Injection, error) {
	field := "auth type " + t.Name + ", " + GeneratorHook.Field
	c := e.compile(GeneratorHook, Generator(t))
	if c.err != nil {
		return nil, classError(class, field, c.err)
	}
	ans, err := e.keptOrEval(c, GeneratorHook, dataVersion, head, dataVersion != "", func() (any, error) {
		request, err := c.requestValue(head, req)
		if err != nil {
			return nil, err
		}
		input := ast.NewObject(ast.Item(ast.StringTerm("data"), ast.NewTerm(secretValue(data))), ast.Item(ast.StringTerm("request"), ast.NewTerm(request)))
		ans, err := e.Eval(ctx, GeneratorHook, Generator(t), input)
		if err != nil {
			return nil, err
		}
		return injection(ans)
	})
	if err != nil {
		return nil, classError(class, field, err)
	}
	return ans.(*Injection), nil
}

// keptOrEval is c's answer to a request of head: the one kept under hook and scope for the
// values c reads, else what eval gives, which is kept when c's answer depends on nothing of
// the request but what head has and may (the caller's condition) be kept.
func (e *Engine) keptOrEval(c *compiled, hook Hook, scope string, head RequestHead, may bool, eval func() (any, error)) (any, error) {
	keep := may && c.answersFrom(head)
	var key [32]byte
	if keep {
		key = c.answerKey(hook, scope, head)
		if ans, ok := e.answers.Get(key); ok {
			return ans, nil
		}
	}
	ans, err := eval()
	if err == nil && keep {
		e.answers.Add(key, ans)
	}
	return ans, err
}

// ErrNeedsRequest is Generate's answer, given no request, for a module that reads more of it
// than the head given has.
var ErrNeedsRequest = errors.New("the module reads more of the request than was given")

// answersFrom tells whether c's answer depends on nothing of the request but what head has.
func (c *compiled) answersFrom(head RequestHead) bool {
	return !c.reads.all && (len(c.reads.headers) == 0 || head.Header != nil) && (!c.reads.query() || head.HasQuery)
}

// requestValue is input.request for c: nothing for a module of the Secret alone, what head
// has for one that reads no more of the request (the rest is then never looked at), else the
// whole request req describes.
func (c *compiled) requestValue(head RequestHead, req func() *Request) (ast.Value, error) {
	switch {
	case c.reads.dataOnly():
		return ast.NullValue, nil
	case c.answersFrom(head):
		return head.request(c.reads.headers, c.reads.query()).value(c.reads.requestParts())
	case req == nil:
		return nil, ErrNeedsRequest
	}
	return req().value(c.reads.requestParts())
}

// answerKey is where an answer of c is kept: the sum of the hook, the scope (a generator's
// Secret version), the module and the values c reads, each a tagged, length-prefixed part
// (no two inputs share a key: the names read are c's, in one order, and a header's parts
// end with a mark of its end, or are one that it is absent).
func (c *compiled) answerKey(hook Hook, scope string, head RequestHead) [32]byte {
	buf := keyBuffers.Get().(*[]byte)
	b := append((*buf)[:0], c.key[:]...)
	b = AppendKeyPart(AppendKeyPart(b, hook.Field), scope)
	for _, name := range c.reads.fields {
		b = AppendKeyPart(b, head.field(name))
	}
	for _, name := range c.reads.headers {
		b = appendHeaderKey(b, head.Header, name)
	}
	key := sha256.Sum256(b)
	if cap(b) <= maxKeyBuffer {
		*buf = b
		keyBuffers.Put(buf)
	}
	return key
}

// keyBuffers hold answer keys' inputs while they are summed: a key is made for every request
// a kept module serves, of values (a token, a header) that may be a kilobyte or more.
var keyBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxKeyBuffer bounds the buffers kept in keyBuffers: a rare large header is not held on to.
const maxKeyBuffer = 16 << 10

// AppendKeyPart appends s to an answer key's input as one value: tagged and length-prefixed.
// It is for HeaderKeys implementations.
func AppendKeyPart[S string | []byte](key []byte, s S) []byte {
	key = binary.BigEndian.AppendUint64(append(key, 'v'), uint64(len(s)))
	return append(key, s...)
}

// HeaderKeys is what a Headers may also do: append a header's values to an answer key's
// input itself (AppendKeyPart for each, in order; ok false, and nothing appended, when the
// header is absent), without the strings Lookup makes. Its values must be Lookup's.
type HeaderKeys interface {
	AppendKey(key []byte, name string) (out []byte, ok bool)
}

// appendHeaderKey appends header name of h to an answer key's input.
func appendHeaderKey(key []byte, h Headers, name string) []byte {
	var ok bool
	if hk, has := h.(HeaderKeys); has {
		key, ok = hk.AppendKey(key, name)
	} else {
		var values []string
		values, ok = h.Lookup(name)
		for _, v := range values {
			key = AppendKeyPart(key, v)
		}
	}
	if !ok {
		return append(key, 'a')
	}
	return append(key, 'e')
}

// injection reads an `auth` answer; its errors name fields, never values.
func injection(ans any) (*Injection, error) {
	m, ok := ans.(map[string]any)
	if !ok {
		return nil, errors.New("auth must be an object {position, contentType, auth}")
	}
	fields, ok := m["auth"].(map[string]any)
	if !ok {
		return nil, errors.New("auth.auth must be an object of names to values")
	}
	ct, _ := m["contentType"].(string)
	inj := &Injection{ContentType: ct}
	switch inj.Position, _ = m["position"].(string); inj.Position {
	case PositionHeader:
		inj.Headers = map[string]string{}
		for k, v := range fields {
			s, ok := v.(string)
			if !ok || !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(s) {
				return nil, errors.New("auth.auth must map valid header names to strings without control characters")
			}
			inj.Headers[k] = s
		}
	case PositionQuery:
		inj.Query = map[string]string{}
		for k, v := range fields {
			s, ok := v.(string)
			if !ok {
				return nil, errors.New("auth.auth must map query parameter names to strings")
			}
			inj.Query[k] = s
		}
	case PositionBody:
		switch ct {
		case "", "application/json", "application/x-www-form-urlencoded":
		default:
			return nil, errors.New("auth.contentType must be application/json or application/x-www-form-urlencoded")
		}
		inj.Body = fields
	default:
		return nil, errors.New("auth.position must be header, query or body")
	}
	return inj, nil
}

// Extractor returns a class's authExtractor module, or "" when it has none.
func Extractor(class *v1alpha1.ConnectorClass) string {
	if class.Spec.Proxy == nil || class.Spec.Proxy.AuthExtractor == nil {
		return ""
	}
	return class.Spec.Proxy.AuthExtractor.Rego
}

// ExtractToken evaluates a class's authExtractor over the request a client sent to the proxy
// and returns the token it finds ({"token": "..."}), or "" when it finds none (an empty token
// or an undefined answer). As a generator's, the answer of an extractor that reads only what
// head has (GitLab's reads PRIVATE-TOKEN) is kept by those values, and req, which describes
// the whole request, is called only for one that reads more.
func (e *Engine) ExtractToken(ctx context.Context, class *v1alpha1.ConnectorClass, head RequestHead, req func() *Request) (string, error) {
	c := e.compile(ExtractorHook, Extractor(class))
	if c.err != nil {
		return "", classError(class, ExtractorHook.Field, c.err)
	}
	token, err := e.keptOrEval(c, ExtractorHook, "", head, true, func() (any, error) {
		in, err := c.requestValue(head, req)
		if err != nil {
			return nil, err
		}
		return e.stringField(ctx, ExtractorHook, Extractor(class), in, "token")
	})
	if err != nil {
		return "", classError(class, ExtractorHook.Field, err)
	}
	return token.(string), nil
}

// Permission verbs of api.permissions.rego.
const (
	VerbRead   = "read"
	VerbWrite  = "write"
	VerbDelete = "delete"
)

// Verb evaluates a class's api.permissions module over a Connectors API request and returns
// the verb it maps the request to: read, write or delete, or "" when the class has no module
// or the module leaves the request to the HTTP method's verb ({"verb": ""}, or undefined).
// See RBACVerb for the verb to authorize.
func (e *Engine) Verb(ctx context.Context, class *v1alpha1.ConnectorClass, req *Request) (string, error) {
	if class.Spec.API == nil || class.Spec.API.Permissions == nil || class.Spec.API.Permissions.Rego == "" {
		return "", nil
	}
	in, err := req.value(allParts) // the module's input is the request itself
	if err != nil {
		return "", classError(class, PermissionsHook.Field, err)
	}
	verb, err := e.stringField(ctx, PermissionsHook, class.Spec.API.Permissions.Rego, in, "verb")
	if err != nil {
		return "", classError(class, PermissionsHook.Field, err)
	}
	switch verb {
	case "", VerbRead, VerbWrite, VerbDelete:
		return verb, nil
	}
	return "", classError(class, PermissionsHook.Field, errors.New("result.verb must be read, write, delete or empty"))
}

// RBACVerb is the Kubernetes verb to check on connectors/apis for a request: get for read (so
// that a module can let git's POST git-upload-pack pass with a read grant), delete for delete,
// the method's own write verb for write (update when the method reads), and methodVerb (the
// method's verb, proxy.VerbFor) when the module said nothing.
func RBACVerb(verb, methodVerb string) string {
	switch verb {
	case VerbRead:
		return "get"
	case VerbDelete:
		return "delete"
	case VerbWrite:
		if methodVerb == "get" {
			return "update"
		}
	}
	return methodVerb
}

// State evaluates a check's state.rego with the matched object as input and returns
// status.state ("" when the module leaves it undefined). Errors name the module's problem,
// never a value of the object; the caller names the object.
func (e *Engine) State(ctx context.Context, module string, object map[string]any) (string, error) {
	input, err := ast.InterfaceToValue(object)
	if err != nil {
		return "", fmt.Errorf("%s: the object cannot be a Rego input", StateHook.Field)
	}
	ans, err := e.Eval(ctx, StateHook, module, input)
	if errors.Is(err, ErrUndefined) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%s %v", StateHook.Field, err)
	}
	m, ok := ans.(map[string]any)
	state, isString := m["state"].(string)
	if !ok || (m["state"] != nil && !isString) {
		return "", fmt.Errorf("%s: status must be an object whose state is a string", StateHook.Field)
	}
	return state, nil
}

// stringField evaluates a module over {request: in} and reads one string field of its
// answer; an undefined answer or field is "".
func (e *Engine) stringField(ctx context.Context, h Hook, module string, in ast.Value, field string) (string, error) {
	ans, err := e.Eval(ctx, h, module, ast.NewObject(ast.Item(ast.StringTerm("request"), ast.NewTerm(in))))
	if errors.Is(err, ErrUndefined) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	m, ok := ans.(map[string]any)
	s, isString := m[field].(string)
	if !ok || (m[field] != nil && !isString) {
		return "", fmt.Errorf("%s must be an object whose %s is a string", h.Rule, field)
	}
	return s, nil
}

func classError(class *v1alpha1.ConnectorClass, field string, err error) error {
	return fmt.Errorf("ConnectorClass %s, %s: %w", class.Name, field, err)
}
