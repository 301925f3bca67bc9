package connectorstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/templates"
)

// maxProbeBody bounds what a probe reads of a response for its CEL expression.
const maxProbeBody = 1 << 20

// maxProbeRedirects bounds a liveness probe that follows redirects, as net/http does.
const maxProbeRedirects = 10

// probeTemplates renders probe paths and header values: class templates over values a tenant
// sets (params, the Secret), so with the restricted function set (no env, no network).
var probeTemplates = templates.NewCache(templates.Restricted())

// probeResult is what a probe learnt.
type probeResult struct {
	ok   bool
	code int
	why  string // for a failure: what did not match, never a header or the body
	// notAuth marks an auth probe's failure that says nothing about the credential (a class
	// API's answer other than 401 or 403).
	notAuth bool
}

// templateData is what probe templates see, with the names Alauda's templates use:
// .Connector (Go field names; a param's value as .Value.StringVal, .ArrayVal or .ObjectVal)
// and .Secret (nil without a credential; its data also as .StringData).
type templateData struct {
	Connector connectorView
	Secret    *corev1.Secret
}

type connectorView struct {
	Name, Namespace string
	Labels          map[string]string
	Annotations     map[string]string
	Spec            connectorSpecView
}

type connectorSpecView struct {
	ConnectorClassName string
	Address            string
	AddressExtensions  []v1alpha1.NamedAddress
	Params             []paramView
	Auth               *authView
}

type authView struct {
	Name   string
	Params []paramView
}

type paramView struct {
	Name  string
	Value paramValue
}

// paramValue is a param's value in the shape of Tekton's ParamValue, which Alauda's
// templates read.
type paramValue struct {
	Type      string
	StringVal string
	ArrayVal  []string
	ObjectVal map[string]string
}

func newTemplateData(c *v1alpha1.Connector, sec *corev1.Secret) templateData {
	d := templateData{Connector: connectorView{Name: c.Name, Namespace: c.Namespace, Labels: c.Labels, Annotations: c.Annotations,
		Spec: connectorSpecView{ConnectorClassName: c.Spec.ConnectorClassName, Address: c.Spec.Address,
			AddressExtensions: c.Spec.AddressExtensions, Params: paramViews(c.Spec.Params)}}}
	if c.Spec.Auth != nil {
		d.Connector.Spec.Auth = &authView{Name: c.Spec.Auth.Name, Params: paramViews(c.Spec.Auth.Params)}
	}
	if sec != nil {
		s := sec.DeepCopy()
		s.StringData = make(map[string]string, len(s.Data))
		for k, v := range s.Data {
			s.StringData[k] = string(v)
		}
		d.Secret = s
	}
	return d
}

func paramViews(params []v1alpha1.Param) []paramView {
	out := make([]paramView, 0, len(params))
	for _, p := range params {
		out = append(out, paramView{Name: p.Name, Value: toParamValue(p.Value.Raw)})
	}
	return out
}

func toParamValue(raw []byte) paramValue {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return paramValue{Type: "string", StringVal: s}
	}
	var a []string
	if json.Unmarshal(raw, &a) == nil {
		return paramValue{Type: "array", ArrayVal: a}
	}
	var o map[string]string
	if json.Unmarshal(raw, &o) == nil {
		return paramValue{Type: "object", ObjectVal: o}
	}
	return paramValue{Type: "string", StringVal: string(raw)}
}

// invalidProbeError is a probe the class got wrong (a template that does not render, a
// response.cel that does not compile or yield a bool): the class's author must fix it.
type invalidProbeError struct{ err error }

func (e *invalidProbeError) Error() string { return e.err.Error() }
func (e *invalidProbeError) Unwrap() error { return e.err }

func invalid(err error) error { return &invalidProbeError{err: err} }

// renderProbe executes one probe template; the error names the field, never the values.
func renderProbe(field, text string, data templateData) (string, error) {
	if !strings.Contains(text, "{{") {
		return text, nil
	}
	out, err := probeTemplates.Execute(field, text, data)
	if err != nil {
		return "", invalid(fmt.Errorf("the ConnectorClass's %s does not render: %w", field, templateError(err)))
	}
	return strings.TrimSpace(string(out)), nil
}

// templateError keeps text/template's message up to the failing action ("template: name:1:2:
// executing "name" at <.Secret.x>"): what follows may quote a value (a Secret's: "range can't
// iterate over <value>", a function's error), which a status message, read by whoever may get
// the Connector, must not.
func templateError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, " at <"); i >= 0 {
		if j := strings.Index(msg[i:], ">: "); j >= 0 {
			return errors.New(msg[:i+j+1] + ": it failed there (what it read is not quoted)")
		}
	}
	if i := strings.Index(msg, ": error calling"); i >= 0 {
		msg = msg[:i] + ": a function failed"
	}
	return errors.New(msg)
}

// probeURL is where a probe goes: its path on the tool's host (the address's path is not
// prepended, as Alauda's probes), the host and scheme of the probe when it sets them.
func probeURL(address string, p *v1alpha1.HTTPProbe, path string) (*url.URL, error) {
	base, err := url.Parse(address)
	if err != nil {
		return nil, fmt.Errorf("the Connector's address: %w", err)
	}
	u := &url.URL{Scheme: base.Scheme, Host: base.Host}
	if p.Host != "" {
		if h, err := url.Parse(p.Host); err == nil && h.Scheme != "" && h.Host != "" {
			u.Scheme, u.Host = h.Scheme, h.Host
		} else {
			u.Host = p.Host
		}
	}
	if p.Scheme != "" {
		u.Scheme = strings.ToLower(p.Scheme)
	}
	rel, err := url.Parse("/" + strings.TrimPrefix(path, "/"))
	if err != nil {
		// url.Parse's error quotes the path, which a class may render from the Secret.
		return nil, errors.New("the probe's path, as rendered, is not a URL path")
	}
	u.Path, u.RawPath, u.RawQuery = rel.Path, rel.RawPath, rel.RawQuery
	return u, nil
}

// probeHTTP sends one probe. sec is the credential for an auth probe (nil for liveness);
// builtInAuth the Authorization value the credential's type gives, sent when the probe's
// own headers set none. Only a liveness probe (no credential) follows redirects, and only
// when the probe allows it: a credential never follows one. Errors never carry a header.
func (r *Reconciler) probeHTTP(ctx context.Context, client *http.Client, c *v1alpha1.Connector, p *v1alpha1.HTTPProbe, sec *corev1.Secret, builtInAuth string) (probeResult, error) {
	data := newTemplateData(c, sec)
	path, err := renderProbe("probe path", p.Path, data)
	if err != nil {
		return probeResult{}, err
	}
	u, err := probeURL(c.Spec.Address, p, path)
	if err != nil {
		return probeResult{}, invalid(err)
	}
	method := p.Method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return probeResult{}, err
	}
	req.Header.Set("User-Agent", ProbeUserAgent)
	for _, h := range p.HTTPHeaders {
		v, err := renderProbe("probe header "+h.Name, h.Value, data)
		if err != nil {
			return probeResult{}, err
		}
		if v != "" {
			req.Header.Add(h.Name, v)
		}
	}
	if builtInAuth != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", builtInAuth)
	}
	req.Header.Set(egress.HopHeader, "1")
	if sec == nil && !p.DisableRedirect {
		client = following(client)
	}
	res, err := client.Do(req)
	if err != nil {
		return probeResult{}, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxProbeBody))
	return r.judge(ctx, p.Response, res, body)
}

// following is client with redirects followed (a liveness probe sends nothing secret); each
// hop dials through the same destination policy.
func following(client *http.Client) *http.Client {
	c := *client
	c.CheckRedirect = func(_ *http.Request, via []*http.Request) error {
		if len(via) >= maxProbeRedirects {
			return fmt.Errorf("stopped after %d redirects", maxProbeRedirects)
		}
		return nil
	}
	return &c
}

// judge decides a response: the class's CEL expression, else a 2xx status.
func (r *Reconciler) judge(ctx context.Context, want *v1alpha1.ProbeResponse, res *http.Response, body []byte) (probeResult, error) {
	if want == nil || want.CEL == "" {
		ok := res.StatusCode >= 200 && res.StatusCode < 300
		return probeResult{ok: ok, code: res.StatusCode, why: fmt.Sprintf("the tool answered %d", res.StatusCode)}, nil
	}
	ok, err := r.responses.accepts(ctx, want.CEL, res, body)
	if err != nil {
		return probeResult{}, invalid(err)
	}
	return probeResult{ok: ok, code: res.StatusCode,
		why: fmt.Sprintf("the tool's answer (%d) does not satisfy the probe's response.cel", res.StatusCode)}, nil
}
