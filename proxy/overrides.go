package proxy

import (
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Method overrides: where a request may ask a tool to run another method than its own.
// Frameworks take one from a header (Google's APIs, Rack, Symfony, Express's method-override,
// OData) or from a _method query parameter (Express's method-override, Symfony, Laravel). The
// proxy asks the verb of every method a request may be run as (useVerbs); the Connectors
// API, whose callers (UIs) send the method itself, refuses them (MethodOverride). Each is
// read as loosely as the frameworks read it: a reading stricter than the tool's would let a
// read grant write.
//
// A POST's body may name a method too (a form's _method field: Rack, so Rails and GitLab;
// Symfony; Laravel, from a JSON body as well), and a tool may do any write from a POST anyway
// (GitHub's GraphQL deletes through one): the write verbs are no boundary between each other,
// and the proxy does not read bodies for them. A read grant stays a read grant.

// methodOverrideHeaders are the headers frameworks take a method from, canonical.
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// methodParam is the query parameter and form field frameworks take a method from.
const methodParam = "_method"

// overrideHeader tells whether name is a method-override header's in any case and with '_'
// for any '-': CGI, WSGI and Rack servers give X_HTTP_METHOD_OVERRIDE and
// X-HTTP-Method-Override the same variable.
func overrideHeader[T ~string | ~[]byte](name T) bool {
	for _, o := range methodOverrideHeaders {
		if len(name) == len(o) && foldsToHeader(name, o) {
			return true
		}
	}
	return false
}

// ReadAsPrefixedBy tells whether header name begins with prefix (canonical) as CGI, WSGI and
// Rack servers read names: in any case and with '_' for any '-'.
func ReadAsPrefixedBy(name, prefix string) bool {
	return len(name) >= len(prefix) && foldsToHeader(name, prefix)
}

// foldsToHeader tells whether name, as long as canonical, is canonical in any case and with
// '_' for '-'.
func foldsToHeader[T ~string | ~[]byte](name T, canonical string) bool {
	for i := range len(canonical) {
		b := name[i]
		if b == '_' {
			b = '-'
		}
		if lower(b) != lower(canonical[i]) {
			return false
		}
	}
	return true
}

// overrideHeaders yields h's method-override headers' names and values.
func overrideHeaders(h http.Header) iter.Seq2[string, string] {
	return func(yield func(name, value string) bool) {
		for name, values := range h {
			if !overrideHeader(name) {
				continue
			}
			for _, v := range values {
				if !yield(name, v) {
					return
				}
			}
		}
	}
}

// methodParams yields the values, still escaped, of query's parameters whose names a
// framework reads as _method: pairs split at '&' and ';' (Rack splits at both), the name
// unescaped (%XX, '+' for a space), its leading spaces dropped, a first '.' or '[' read as '_'
// and a NUL ending it (as PHP names its variables), in any case.
func methodParams[T ~string | ~[]byte](query T) iter.Seq[T] {
	return func(yield func(T) bool) {
		start := 0
		for i := 0; i <= len(query); i++ {
			if i < len(query) && query[i] != '&' && query[i] != ';' {
				continue
			}
			if value, ok := methodPair(query[start:i]); ok && !yield(value) {
				return
			}
			start = i + 1
		}
	}
}

// methodPair returns the value of pair, a name=value of a query, if its name reads as
// _method (methodParams).
func methodPair[T ~string | ~[]byte](pair T) (value T, ok bool) {
	n := 0 // bytes of methodParam matched
	i := 0
	for ; i < len(pair) && pair[i] != '='; i++ {
		b := pair[i]
		switch {
		case b == '+':
			b = ' '
		case b == '%' && i+2 < len(pair) && isHex(pair[i+1]) && isHex(pair[i+2]):
			b = unhex(pair[i+1])<<4 | unhex(pair[i+2])
			i += 2
		}
		switch {
		case n == 0 && b == ' ':
			continue
		case b == 0 && n == len(methodParam):
			if eq := indexByte(pair[i:], '='); eq >= 0 {
				return pair[i+eq+1:], true
			}
			return value, true
		case n == len(methodParam):
			return value, false
		case n == 0 && (b == '.' || b == '['):
			b = '_'
		}
		if lower(b) != methodParam[n] {
			return value, false
		}
		n++
	}
	if n != len(methodParam) {
		return value, false
	}
	if i < len(pair) {
		value = pair[i+1:]
	}
	return value, true
}

func indexByte[T ~string | ~[]byte](s T, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// unhex is the value of a hex digit (isHex).
func unhex(b byte) byte {
	switch {
	case b <= '9':
		return b - '0'
	case b <= 'F':
		return b - 'A' + 10
	}
	return b - 'a' + 10
}

// hasMethodParam tells whether query has a parameter a framework reads as _method.
func hasMethodParam[T ~string | ~[]byte](query T) bool {
	for range methodParams(query) {
		return true
	}
	return false
}

// MethodOverride names where r may ask a tool to run another method than r.Method, or is ""
// if nowhere: a method-override header (any case, '_' for '-') or a _method query parameter.
func MethodOverride(r *http.Request) string {
	for name := range overrideHeaders(r.Header) {
		return "the " + name + " header"
	}
	if hasMethodParam(r.URL.RawQuery) {
		return "the " + methodParam + " query parameter"
	}
	return ""
}

// verbBeyondMethod tells whether r may need another verb than its method's: it asks to
// switch protocols or may override its method.
func verbBeyondMethod(r *http.Request) bool {
	return IsUpgrade(r.Header) || MethodOverride(r) != ""
}

// neededVerb is a connectors/proxy verb a request needs, and what in it asked for one beyond
// its method's ("" for the method's own).
type neededVerb struct{ verb, why string }

// useVerbs are the connectors/proxy verbs a request needs: its method's (VerbFor), or create for
// an upgrade whatever its method (a GET), as the upgraded connection carries writes too
// (Kubernetes asks create of pods/exec over WebSocket for the same reason); and the verb of
// each method it may be run as instead: those its override headers and _method query
// parameters name, each comma-separated one (Express takes the first), upper-cased as Rack
// does, a read among them adding nothing. TRACE and TRACK are refused, also as overrides.
func useVerbs(r *http.Request) ([]neededVerb, error) {
	verb, ok := VerbFor(r.Method)
	if !ok {
		return nil, refusef(http.StatusMethodNotAllowed, "method %s is never proxied", r.Method)
	}
	if IsUpgrade(r.Header) {
		verb = "create"
	}
	verbs := []neededVerb{{verb: verb}}
	add := func(verb, why string) {
		if verb != "get" && !slices.ContainsFunc(verbs, func(v neededVerb) bool { return v.verb == verb }) {
			verbs = append(verbs, neededVerb{verb, why})
		}
	}
	override := func(value, where string) error {
		for method := range strings.SplitSeq(value, ",") {
			overridden, ok := VerbFor(strings.ToUpper(strings.TrimSpace(method)))
			if !ok {
				return refusef(http.StatusMethodNotAllowed, "method %s (%s) is never proxied", method, where)
			}
			add(overridden, where)
		}
		return nil
	}
	for name, value := range overrideHeaders(r.Header) {
		if err := override(value, "the "+name+" header"); err != nil {
			return nil, err
		}
	}
	for value := range methodParams(r.URL.RawQuery) {
		unescaped, err := url.QueryUnescape(value)
		if err != nil {
			unescaped = value
		}
		if err := override(unescaped, "the "+methodParam+" query parameter"); err != nil {
			return nil, err
		}
	}
	return verbs, nil
}
