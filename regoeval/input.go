package regoeval

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Request is a module's input.request, as Alauda defines it: headers and query as lists of
// values by name (headers in canonical MIME form, e.g. Private-Token), the JSON body parsed,
// the method, the path and the host.
type Request struct {
	Method, Path, Host string
	Headers            http.Header
	Query              url.Values
	// Body is the parsed JSON body, or nil (no body, not JSON, or larger than MaxBodyBytes).
	Body any
	// readBody, when set, gives Body the first time a module's input needs it (NewRequest's:
	// a request's body is read only for a module that refers to input.request.body).
	readBody func() any
}

// NewRequest describes r for a module; path and host are given because the proxy describes
// the request it sends on, not the one it received. r.Body is read, when it is JSON of at most
// MaxBodyBytes and a module given the request refers to it, and put back so that it is still
// sent in full.
func (e *Engine) NewRequest(r *http.Request, host, path string, query url.Values) *Request {
	return &Request{Method: r.Method, Path: path, Host: host, Headers: r.Header, Query: query,
		readBody: func() any { return e.ReadJSONBody(r) }}
}

// body is the request's parsed body, read at the first call when readBody is set.
func (r *Request) body() any {
	if r.readBody != nil {
		r.Body, r.readBody = r.readBody(), nil
	}
	return r.Body
}

// ReadJSONBody returns r's body parsed, when it is JSON of at most MaxBodyBytes, else nil; in
// either case r.Body still reads the whole body.
func (e *Engine) ReadJSONBody(r *http.Request) any {
	if !isJSON(r.Header.Get("Content-Type")) {
		return nil
	}
	raw, ok := PeekBody(r, e.cfg.MaxBodyBytes)
	if !ok {
		return nil
	}
	var body any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&body) != nil {
		return nil
	}
	return body
}

// PeekBody returns r's whole body when it has one of at most limit bytes; r.Body is replaced
// by a reader of what was read followed by the rest, so the request is unchanged.
func PeekBody(r *http.Request, limit int64) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength > limit {
		return nil, false
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	r.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(raw), r.Body), Closer: r.Body}
	if err != nil || int64(len(raw)) > limit {
		return nil, false
	}
	return raw, true
}

type readCloser struct {
	io.Reader
	io.Closer
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// value is the request as a Rego object: the request line's fields and, of the headers, the
// query and the body, those in parts (a module that refers to none of a part cannot tell it
// is missing; building the headers and query of every request, and reading its body, is most
// of what a module evaluated per request costs besides its own evaluation).
func (r *Request) value(parts requestParts) (ast.Value, error) {
	obj := ast.NewObjectWithCapacity(6)
	obj.Insert(ast.StringTerm("method"), ast.StringTerm(r.Method))
	obj.Insert(ast.StringTerm("path"), ast.StringTerm(r.Path))
	obj.Insert(ast.StringTerm("host"), ast.StringTerm(r.Host))
	if parts&partHeaders != 0 {
		obj.Insert(ast.StringTerm("headers"), ast.NewTerm(listsValue(r.Headers)))
	}
	if parts&partQuery != 0 {
		obj.Insert(ast.StringTerm("query"), ast.NewTerm(listsValue(r.Query)))
	}
	if parts&partBody != 0 {
		body, err := ast.InterfaceToValue(r.body())
		if err != nil {
			return nil, err
		}
		obj.Insert(ast.StringTerm("body"), ast.NewTerm(body))
	}
	return obj, nil
}

// listsValue converts headers or query parameters without a JSON round trip.
func listsValue(m map[string][]string) ast.Value {
	obj := ast.NewObjectWithCapacity(len(m))
	for k, vs := range m {
		items := make([]*ast.Term, len(vs))
		for i, v := range vs {
			items[i] = ast.StringTerm(v)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(items...))
	}
	return obj
}

// secretValue is a Secret's data as input.data: a string per key.
func secretValue(data map[string][]byte) ast.Value {
	obj := ast.NewObjectWithCapacity(len(data))
	for k, v := range data {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(string(v)))
	}
	return obj
}
