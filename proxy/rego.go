package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// This file is the Rego side of the proxy (SPEC §1, Alauda's generator and authExtractor):
// a class's generator computes the credential injected into the upstream request, and its
// authExtractor finds the caller's token where the tool's own clients send theirs.

// generate evaluates the route's generator over the request as it will be sent and keeps the
// answer in the route: headers and query parameters are set in rewrite, a body is rewritten
// here. Errors name the class and auth type, never a value.
func (p *Proxy) generate(r *http.Request, rt *route) error {
	inj, err := p.injection(r, rt)
	if err != nil {
		return err
	}
	rt.injection = inj
	if inj.Position == regoeval.PositionBody {
		return p.injectBody(r, inj)
	}
	return nil
}

// injection is the route's generator's answer for r.
func (p *Proxy) injection(r *http.Request, rt *route) (*regoeval.Injection, error) {
	head := generatorHead(r, rt, rt.target.Path)
	return p.generatorAnswer(r.Context(), rt, head, func() *regoeval.Request {
		header := r.Header.Clone()
		dropClientCredentials(header, rt.callerToken)
		in := p.rego.NewRequest(r, head.Host, head.Path, head.Query()) // the query less the caller's token (generatorHead)
		in.Headers = header
		return in
	})
}

// generatorHead is the head of r, sent along rt to path, as rt's generator sees it: its query
// is rt.target's less the parameters that carried the client's token (as injection's request
// has it).
func generatorHead(r *http.Request, rt *route, path string) regoeval.RequestHead {
	query := rt.target.RawQuery
	if rt.callerToken != "" && query != "" {
		if q := rt.target.Query(); dropParamsWith(q, rt.callerToken) {
			query = q.Encode()
		}
	}
	return regoeval.RequestHead{Method: r.Method, Path: path, Host: rt.target.Host, RawQuery: query, HasQuery: true,
		Header: &generatorHeaders{all: headerLookup(r.Header), callerToken: rt.callerToken}}
}

// headerLookup is a request's headers as a module sees them all (an authExtractor's input).
type headerLookup http.Header

func (h headerLookup) Lookup(name string) ([]string, bool) {
	values, ok := h[name]
	return values, ok
}

// generatorHeaders is a generator's view of a request's headers (regoeval.Headers): all of
// them less those that carried the client's credential (as injection's request has them).
type generatorHeaders struct {
	all         regoeval.Headers
	callerToken string
}

func (g *generatorHeaders) Lookup(name string) ([]string, bool) {
	values, ok := g.all.Lookup(name)
	if !ok || carriesClientCredential(name, values, g.callerToken) {
		return nil, false
	}
	return values, true
}

// generatorAnswer is the answer of rt's generator to a request of head, the rest of which
// request describes (nil: a generator whose answers are kept reads none of it).
func (p *Proxy) generatorAnswer(ctx context.Context, rt *route, head regoeval.RequestHead, request func() *regoeval.Request) (*regoeval.Injection, error) {
	return p.rego.Generate(ctx, rt.cred.class, rt.cred.generator, rt.cred.secret.Data, rt.cred.secretVersion, head, request)
}

// injectBody sets the generator's fields at the top level of the request's JSON or form body
// (an empty body becomes one); a body of another type, or larger than the Rego body limit, is
// refused rather than sent without the credential.
func (p *Proxy) injectBody(r *http.Request, inj *regoeval.Injection) error {
	want := inj.ContentType
	if want == "" {
		want = "application/json"
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != want {
			return refusef(http.StatusBadRequest, "the request body is %s; the class's generator injects into %s bodies", mt, want)
		}
	}
	var raw []byte
	if r.Body != nil && r.Body != http.NoBody {
		var ok bool
		if raw, ok = regoeval.PeekBody(r, p.rego.MaxBodyBytes()); !ok {
			return refusef(http.StatusRequestEntityTooLarge, "the class's generator injects into the body, and bodies larger than %d bytes are not rewritten", p.rego.MaxBodyBytes())
		}
	}
	body, err := mergeBody(want, raw, inj.Body)
	if err != nil {
		return err
	}
	r.Body, r.ContentLength, r.TransferEncoding = io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
	r.Header.Set("Content-Type", want)
	return nil
}

func mergeBody(contentType string, raw []byte, fields map[string]any) ([]byte, error) {
	if contentType == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(raw))
		if err != nil {
			return nil, refusef(http.StatusBadRequest, "the request body is not a valid form")
		}
		for k, v := range fields {
			s, ok := v.(string)
			if !ok {
				j, _ := json.Marshal(v)
				s = string(j)
			}
			form.Set(k, s)
		}
		return []byte(form.Encode()), nil
	}
	obj := map[string]any{}
	if len(bytes.TrimSpace(raw)) > 0 {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&obj); err != nil {
			return nil, refusef(http.StatusBadRequest, "the request body is not a JSON object; the class's generator injects into it")
		}
	}
	for k, v := range fields {
		obj[k] = v
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode the body: %w", err)
	}
	return out, nil
}

// applyInjection sets the generator's headers and query parameters on the upstream request,
// replacing any the client sent under the same names.
func applyInjection(out *http.Request, inj *regoeval.Injection) {
	for k, v := range inj.Headers {
		out.Header.Set(k, v)
	}
	if len(inj.Query) > 0 {
		q := out.URL.Query()
		for k, v := range inj.Query {
			q.Set(k, v)
		}
		u := *out.URL
		u.RawQuery = q.Encode()
		out.URL = &u
	}
}

// dropClientCredentials removes what carried the client's credential to the proxy: every
// Proxy-* header, Authorization, and any header whose value holds the token an authExtractor
// found (token "" when none did). The tool never sees the caller's token.
func dropClientCredentials(h http.Header, token string) {
	dropProxyHeaders(h, token)
	delete(h, "Authorization")
}

// carriesClientCredential tells whether a header of the client's carried its credential:
// Authorization, or one dropProxyHeaders drops.
func carriesClientCredential(name string, values []string, token string) bool {
	return name == "Authorization" || carriesProxyCredential(name, values, token)
}

// dropProxyHeaders removes every Proxy-* header (the Pod token travels in
// Proxy-Authorization) and any header holding token (none when "").
func dropProxyHeaders(h http.Header, token string) {
	for name, values := range h {
		if carriesProxyCredential(name, values, token) {
			delete(h, name)
		}
	}
}

func carriesProxyCredential(name string, values []string, token string) bool {
	return strings.HasPrefix(name, "Proxy-") || token != "" && anyContains(values, token)
}

// dropParamsWith removes the query parameters whose value holds token (none when "").
func dropParamsWith(q url.Values, token string) bool {
	dropped := false
	for name, values := range q {
		if token != "" && anyContains(values, token) {
			delete(q, name)
			dropped = true
		}
	}
	return dropped
}

func anyContains(values []string, token string) bool {
	for _, v := range values {
		if strings.Contains(v, token) {
			return true
		}
	}
	return false
}

// callerToken is the token a reverse-proxy client sent: Bearer or the Basic password, else
// what a ConnectorClass's authExtractor finds in the request. The Connector is not looked up
// before its caller is authenticated and allowed to get it (SPEC §4.7), so every class's
// extractor is tried (classes are few and cached; equal modules run once); foundBy names the
// classes whose extractor found the token, and reverseRoute then requires the Connector's
// class to be one of them. An extractor that fails is logged and skipped: the client is told
// only that no token was found, as for any request without one.
func (p *Proxy) callerToken(r *http.Request) extracted {
	if t := clientToken(r.Header); t != "" {
		return extracted{token: t}
	}
	found, _ := p.extract(r.Context(), p.extractors(r.Context()), r)
	return found
}

// extract is what the extractors of classes find in r.
func (p *Proxy) extract(ctx context.Context, classes []*v1alpha1.ConnectorClass, r *http.Request) (extracted, bool) {
	head := regoeval.RequestHead{Method: r.Method, Path: r.URL.Path, Host: r.Host, RawQuery: r.URL.RawQuery, HasQuery: true,
		Header: headerLookup(r.Header)}
	var in *regoeval.Request
	return p.extractFrom(ctx, classes, head, func() *regoeval.Request {
		if in == nil {
			in = p.rego.NewRequest(r, r.Host, r.URL.Path, r.URL.Query())
		}
		return in
	}, nil)
}

// extractors are the classes that have an authExtractor, by name.
func (p *Proxy) extractors(ctx context.Context) []*v1alpha1.ConnectorClass {
	var classes v1alpha1.ConnectorClassList
	if err := p.objects.List(ctx, &classes); err != nil {
		klog.FromContext(ctx).Error(err, "List ConnectorClasses for their authExtractors")
		return nil
	}
	var out []*v1alpha1.ConnectorClass
	for i := range classes.Items {
		if regoeval.Extractor(&classes.Items[i]) != "" {
			out = append(out, &classes.Items[i])
		}
	}
	slices.SortFunc(out, func(a, b *v1alpha1.ConnectorClass) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// extractFrom is what the extractors of classes find in a request of head, request describing
// the rest of it, or nil when that is not at hand (a head read in place). ok is false when an
// extractor failed, or needed more of the request than head has and request was nil: its
// answer is then not known, and taken as none. Failures are logged when request is given.
// The names of the classes that found the token are appended to foundBy (nil, or a buffer
// of the caller's: a head read in place is compared without allocating).
func (p *Proxy) extractFrom(ctx context.Context, classes []*v1alpha1.ConnectorClass, head regoeval.RequestHead, request func() *regoeval.Request, foundBy []string) (found extracted, ok bool) {
	// Classes often share a module (copies of one class); each module runs once. A few
	// classes have extractors, so a list on the stack, not a map.
	type answer struct{ module, token string }
	var answers [4]answer
	done := answers[:0]
	found.foundBy = foundBy[:0]
	ok = true
	for _, class := range classes {
		module := regoeval.Extractor(class)
		i := slices.IndexFunc(done, func(a answer) bool { return a.module == module })
		if i < 0 {
			t, err := p.rego.ExtractToken(ctx, class, head, request)
			if err != nil {
				ok = false
				if request != nil {
					klog.FromContext(ctx).Info("An authExtractor failed", "err", err)
				}
			}
			i, done = len(done), append(done, answer{module, t})
		}
		if t := done[i].token; t != "" && (found.token == "" || t == found.token) {
			found.token, found.foundBy = t, append(found.foundBy, class.Name)
		}
	}
	if len(found.foundBy) == 0 {
		found.foundBy = nil // no class found one (checkExtracted: nil is Authorization's token)
	}
	return found, ok
}

// checkExtracted refuses a token that an authExtractor of another class than the Connector's
// found, and a request whose body carries the token: a body is sent on as it is.
func (p *Proxy) checkExtracted(r *http.Request, class *v1alpha1.ConnectorClass, token string, foundBy []string) error {
	if foundBy == nil {
		return nil
	}
	if !slices.Contains(foundBy, class.Name) {
		return refusef(http.StatusUnauthorized, "no token: ConnectorClass %s does not find one in this request; send the Pod's token as the password or a Bearer token", class.Name)
	}
	if raw, ok := regoeval.PeekBody(r, p.rego.MaxBodyBytes()); ok && bytes.Contains(raw, []byte(token)) {
		return refusef(http.StatusBadRequest, "the request body carries the caller's token, and the proxy sends bodies on unchanged: send the token in a header")
	}
	return nil
}
