// Package regoeval evaluates the Rego modules Alauda's API lets a ConnectorClass or an
// AccessPolicy carry (SPEC §1): the credential generator (auth.types[].generator.rego), the
// proxy's token extractor (proxy.authExtractor.rego), the Connectors API's permission mapping
// (api.permissions.rego) and a check's state (state.rego). A module is compiled once into a
// prepared query and kept in a bounded cache keyed by its hook and its text, so a
// class generation that leaves a module unchanged reuses it and two classes with one module
// share it. Every evaluation runs under a time limit.
//
// Modules are written by cluster administrators (classes) and tenants (policies), and a
// generator runs with a credential in its input: the builtins that reach the network or the
// process (http.send, net.lookup_ip_addr, opa.runtime, json.match_schema's remote references,
// and any other builtin OPA marks non-deterministic but the clock and randomness) are not
// available, so a module cannot send what it reads anywhere. Errors name the module's hook and
// what is wrong with it; OPA's messages about the input are withheld, since they can quote it.
package regoeval

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// Config tunes an Engine; every field must be positive.
type Config struct {
	// CacheSize bounds the compiled modules kept (the least recently used go first).
	CacheSize int
	// Timeout bounds one evaluation.
	Timeout time.Duration
	// MaxBodyBytes bounds the request body read into input.request.body.
	MaxBodyBytes int64
}

// Engine compiles and evaluates modules; it is safe for concurrent use.
type Engine struct {
	cfg   Config
	caps  *ast.Capabilities
	cache *lru.Cache[moduleKey, *compiled]
	// answers keeps the answers of generators that read only input.data, the request's keyed
	// fields and headers by name, by module, Secret version and those values (see readsOf): a
	// PAT generator then runs once per Secret change, one that picks Basic or Bearer by path
	// once per path, one that reads a header once per value of it, not per request.
	answers *lru.Cache[[32]byte, any]
}

// moduleKey is a module's place in the cache: its hook's package and rule, and its text (a
// map key of the text itself, not of a hash of it: a module is looked up for every request
// its class serves, and a hash of the text cost more than the rest of a kept answer).
type moduleKey struct{ pkg, rule, module string }

// compiled is a module's prepared query, or why it does not compile (kept too, so that a
// broken class costs one compilation, not one per request).
type compiled struct {
	key   [32]byte // the sum of the hook's package and rule and the module: its answers' keys start with it
	query rego.PreparedEvalQuery
	err   error
	// reads: what the answer depends on besides input.data.
	reads reads
}

// New returns an Engine whose cache is reported as cacheName in connectors_cache_entries.
func New(cacheName string, cfg Config) (*Engine, error) {
	if cfg.CacheSize <= 0 || cfg.Timeout <= 0 || cfg.MaxBodyBytes <= 0 {
		return nil, fmt.Errorf("rego: cache size, timeout and body limit must be positive")
	}
	cache, err := lru.New[moduleKey, *compiled](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	answers, err := lru.New[[32]byte, any](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	cachemetrics.Register(cacheName, cache.Len)
	cachemetrics.Register(cacheName+"_answers", answers.Len)
	return &Engine{cfg: cfg, caps: capabilities(), cache: cache, answers: answers}, nil
}

// allowedNondeterministic are the non-deterministic builtins a module may call: they read the
// clock or randomness, and reach nothing outside the process.
var allowedNondeterministic = map[string]bool{
	"time.now_ns": true, "rand.intn": true, "uuid.rfc4122": true,
	"io.jwt.decode_verify": true, "io.jwt.encode_sign": true, "io.jwt.encode_sign_raw": true,
}

// capabilities are this OPA's builtins less the ones that reach the network or the process.
// Filtering OPA's non-deterministic flag, rather than listing today's network builtins, keeps
// one that a later OPA adds out as well.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	kept := caps.Builtins[:0]
	for _, b := range caps.Builtins {
		if !b.Nondeterministic || allowedNondeterministic[b.Name] {
			kept = append(kept, b)
		}
	}
	caps.Builtins = kept
	caps.AllowNet = []string{} // no host, should a network builtin remain
	return caps
}

// Hook is where a module is used: the package it must declare and the rule that is its answer.
type Hook struct {
	// Field names the module's field for errors, e.g. "generator.rego".
	Field string
	// Package is the package the module must declare; Rule the rule the answer is read from.
	Package, Rule string
}

// The four hooks of Alauda's API.
var (
	GeneratorHook   = Hook{Field: "generator.rego", Package: "proxy", Rule: "auth"}
	ExtractorHook   = Hook{Field: "proxy.authExtractor.rego", Package: "proxy", Rule: "auth"}
	PermissionsHook = Hook{Field: "api.permissions.rego", Package: "permissions", Rule: "result"}
	StateHook       = Hook{Field: "state.rego", Package: "approval", Rule: "status"}
)

// ErrUndefined is the answer of a module whose rule is undefined for the input.
var ErrUndefined = errors.New("undefined")

// Eval evaluates the module's answer rule with input. The answer is JSON-shaped (maps, slices,
// strings, json.Number, bools, nil). An undefined answer is ErrUndefined.
func (e *Engine) Eval(ctx context.Context, h Hook, module string, input ast.Value) (any, error) {
	c := e.compile(h, module)
	if c.err != nil {
		return nil, c.err
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	// No metrics: OPA's default makes maps and timers for every evaluation, which nothing reads.
	rs, err := c.query.Eval(ctx, rego.EvalParsedInput(input), rego.EvalMetrics(metrics.NoOp()))
	if err != nil {
		return nil, e.evalProblem(ctx, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, fmt.Errorf("%s is %w for this input", h.Rule, ErrUndefined)
	}
	return rs[0].Expressions[0].Value, nil
}

// MaxBodyBytes is the largest request body read into input.request.body.
func (e *Engine) MaxBodyBytes() int64 { return e.cfg.MaxBodyBytes }

// Check compiles a module and returns what is wrong with it, or nil.
func (e *Engine) Check(h Hook, module string) error { return e.compile(h, module).err }

func (e *Engine) compile(h Hook, module string) *compiled {
	mk := moduleKey{h.Package, h.Rule, module}
	if c, ok := e.cache.Get(mk); ok {
		return c
	}
	q, reads, err := e.prepare(h, module)
	key := sha256.Sum256([]byte(h.Package + "\x00" + h.Rule + "\x00" + module))
	c := &compiled{key: key, query: q, err: err, reads: reads}
	// Two requests may compile the same module at once; the second Add replaces the first.
	e.cache.Add(mk, c)
	return c
}

// prepare parses the module as Rego v1 and, when that fails, as v0 — the syntax of most of
// Alauda's published examples (`auth = {...} { cond }`) — and reports the v1 error when
// neither parses.
func (e *Engine) prepare(h Hook, module string) (rego.PreparedEvalQuery, reads, error) {
	version := ast.RegoV1
	mod, err := ast.ParseModuleWithOpts("policy.rego", module, ast.ParserOptions{RegoVersion: version, Capabilities: e.caps})
	if err != nil {
		v0, err0 := ast.ParseModuleWithOpts("policy.rego", module, ast.ParserOptions{RegoVersion: ast.RegoV0, Capabilities: e.caps})
		if err0 != nil {
			return rego.PreparedEvalQuery{}, reads{}, fmt.Errorf("does not parse: %v", err)
		}
		mod, version = v0, ast.RegoV0
	}
	want := ast.Ref{ast.DefaultRootDocument, ast.StringTerm(h.Package)}
	if !mod.Package.Path.Equal(want) {
		return rego.PreparedEvalQuery{}, reads{}, fmt.Errorf("declares package %s; it must be package %s", mod.Package.Path, h.Package)
	}
	q, err := rego.New(
		rego.Query("data."+h.Package+"."+h.Rule),
		rego.ParsedModule(mod),
		rego.SetRegoVersion(version),
		rego.Capabilities(e.caps),
	).PrepareForEval(context.Background())
	if err != nil {
		return rego.PreparedEvalQuery{}, reads{}, fmt.Errorf("does not compile: %v (network and process builtins such as http.send, net.lookup_ip_addr and opa.runtime are not available)", err)
	}
	return q, readsOf(mod), nil
}

// keyedFields are the request fields by whose values alone an answer may be kept: the request
// line's, few per client (git's paths, an API's); the query by its raw form, however much of
// it a module reads (input.request.query, .query.page, .query[x]: all of them functions of it).
var keyedFields = map[string]bool{"method": true, "path": true, "host": true, "query": true}

// reads are what of its input a module's answer depends on, besides input.data: the request's
// keyed fields and the headers it names by constant names (each sorted), or all, for a module
// that may read more (a bare `input`, input[x], input.request.headers[x], another field of
// input.request) or calls a builtin whose answer changes from call to call (the clock,
// randomness). A module of no fields and no headers answers as a function of the Secret alone.
// parts are the parts of input.request beyond the request line's fields that the module can
// see (partsOf), so that an input built for every request holds only those.
type reads struct {
	fields  []string
	headers []string
	all     bool
	parts   requestParts
}

// requestParts are parts of input.request: the headers, the query and the body, each built
// into a module's input only when the module refers to it.
type requestParts uint8

const (
	partHeaders requestParts = 1 << iota
	partQuery
	partBody
	allParts = partHeaders | partQuery | partBody
)

// requestParts are the parts of input.request the module's input needs: those it refers to,
// the headers when it names any, and the query when it is keyed by it.
func (r reads) requestParts() requestParts {
	parts := r.parts
	if len(r.headers) > 0 {
		parts |= partHeaders
	}
	if r.query() {
		parts |= partQuery
	}
	return parts
}

// query tells whether the module reads the query (and, unless it reads more, has its answers
// kept by it).
func (r reads) query() bool { return slices.Contains(r.fields, "query") }

// partsOf is what of input.request a reference to input other than to input.data or a keyed
// field may see: the part it names (input.request.query...), or every part for one that names
// none or names it by a variable (input, input[x], input.request, input.request[x]), which
// the module may then read whole (walk, json.marshal, object.get).
func partsOf(ref ast.Ref) requestParts {
	if len(ref) <= 2 || !ref[1].Equal(ast.StringTerm("request")) {
		return allParts
	}
	switch field, _ := fieldOf(ref, 2); field {
	case "headers":
		return partHeaders
	case "query":
		return partQuery
	case "body":
		return partBody
	case "method", "path", "host":
		return 0
	}
	return allParts // input.request[x], or a field Request has none of (nothing is lost)
}

func (r reads) dataOnly() bool {
	return !r.all && len(r.fields) == 0 && len(r.headers) == 0 && r.parts == 0
}

func readsOf(mod *ast.Module) reads {
	var r reads
	refs, vars := 0, 0
	data, request := ast.StringTerm("data"), ast.StringTerm("request")
	fields, headers := map[string]bool{}, map[string]bool{}
	// One walk counts the references to input and the input variables alike, so that the
	// headers object an access it recognises names (headerAccess) counts in neither.
	var walk func(node any, recognise bool)
	walk = func(node any, recognise bool) {
		ast.NewGenericVisitor(func(x any) bool {
			var call []*ast.Term
			switch x := x.(type) {
			case *ast.Expr:
				if len(x.With) != 0 && recognise { // it replaces input: nothing in it is recognised
					walk(x, false)
					return true
				}
				if terms, ok := x.Terms.([]*ast.Term); ok && x.IsCall() {
					call = terms
				}
			case ast.Call:
				call = x
			case ast.Var:
				if x.Equal(ast.InputRootDocument.Value) {
					vars++
				}
			case ast.Ref:
				if x[0].Equal(ast.InputRootDocument) {
					refs++
					field, isString := fieldOf(x, 2)
					header, isHeader := fieldOf(x, 3)
					switch fromRequest := len(x) > 2 && x[1].Equal(request) && isString; {
					case len(x) > 1 && x[1].Equal(data):
					case fromRequest && keyedFields[field]:
						fields[field] = true
					case fromRequest && field == "headers" && isHeader:
						headers[header] = true
					default:
						r.all = true
						r.parts |= partsOf(x)
					}
				}
				r.all = r.all || allowedNondeterministic[x.String()]
			}
			if recognise && call != nil {
				if name, rest, ok := headerAccess(call); ok {
					r.parts |= partHeaders // the headers are there, as an object: never null
					if name != "" {
						headers[name] = true
					}
					for _, t := range rest {
						walk(t, recognise)
					}
					return true
				}
			}
			return false
		}).Walk(node)
	}
	walk(mod, true)
	if refs != vars { // input itself, not in a reference (x := input): it may be read whole
		r.all, r.parts = true, allParts
	}
	r.fields, r.headers = slices.Sorted(maps.Keys(fields)), slices.Sorted(maps.Keys(headers))
	return r
}

// inputHeaders is input.request.headers, whole.
var inputHeaders = ast.MustParseRef("input.request.headers")

// headerAccess tells whether a call (its operator, then its operands) reads the headers
// object, whole, only by a constant name or not at all: object.get(input.request.headers,
// "<name>", default), which reads that header as input.request.headers["<name>"] does, or a
// comparison of the object with null (`input.request.headers != null`, as Alauda's robust
// authExtractor example makes), which answers alike for every request: the input always holds
// the headers as an object (an empty one when a head has none). name is the header read ("" for
// none), rest the operands that remain to be walked (the default).
func headerAccess(call []*ast.Term) (name string, rest []*ast.Term, ok bool) {
	if len(call) == 0 {
		return "", nil, false
	}
	op, isRef := call[0].Value.(ast.Ref)
	args := call[1:]
	switch {
	case !isRef:
		return "", nil, false
	case op.Equal(ast.ObjectGet.Ref()) && len(args) == 3 && isInputHeaders(args[0]):
		key, isString := args[1].Value.(ast.String)
		return string(key), args[2:], isString
	case (op.Equal(ast.Equal.Ref()) || op.Equal(ast.NotEqual.Ref())) && len(args) == 2:
		a, b := args[0], args[1]
		if _, null := a.Value.(ast.Null); null {
			a, b = b, a
		}
		_, null := b.Value.(ast.Null)
		return "", nil, null && isInputHeaders(a)
	}
	return "", nil, false
}

func isInputHeaders(t *ast.Term) bool {
	ref, ok := t.Value.(ast.Ref)
	return ok && ref.Equal(inputHeaders)
}

// fieldOf is ref's i-th term when it is a constant string.
func fieldOf(ref ast.Ref, i int) (string, bool) {
	if len(ref) <= i {
		return "", false
	}
	s, ok := ref[i].Value.(ast.String)
	return string(s), ok
}

// evalProblem says why an evaluation failed: the code and line of OPA's error, without its
// message, which can quote the input (even a conflict's lists the conflicting values).
func (e *Engine) evalProblem(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || topdown.IsCancel(err) {
		return fmt.Errorf("evaluation ran longer than %s", e.cfg.Timeout)
	}
	var te *topdown.Error
	if !errors.As(err, &te) {
		return errors.New("evaluation failed (OPA's message is withheld: it can quote the input)")
	}
	where := ""
	if te.Location != nil {
		where = fmt.Sprintf(" at line %d", te.Location.Row)
	}
	return fmt.Errorf("evaluation failed%s: %s (OPA's message is withheld: it can quote the input)", where, te.Code)
}
