// Package connectorsapi is the embedded Connectors API (SPEC §5): the tool's own API through
// the proxy with the Connector's credential (/proxy/...), and custom APIs for UIs and pipelines
// (/api/...): gitrefs for git classes, repositories and tags for oci classes, or a class's own
// API service. Callers authenticate with any token the cluster accepts.
package connectorsapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

// AnnotationBuiltinAPI selects the built-in custom APIs of a ConnectorClass: "git" or "oci".
const AnnotationBuiltinAPI = "connectors.alauda.io/builtin-api"

// Reviewer authenticates tokens and authorizes users (access.Reviewer with API audiences).
type Reviewer interface {
	AuthenticateToken(ctx context.Context, token string) (user.Info, bool, error)
	Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error)
}

// Server serves the Connectors API.
type Server struct {
	Proxy    *proxy.Proxy
	Reviewer Reviewer
	Flags    *features.Source
	// RegistryPageSize is the page size asked of registries (catalog and tag lists).
	RegistryPageSize int
}

// pluginTransport reaches class API services directly, never through an environment proxy, and
// leaves content encoding to the client and the service (the answer is passed on as it comes).
var pluginTransport = &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second}

// apiError is an error with its Status code and reason.
type apiError struct {
	code   int
	reason metav1.StatusReason
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(code int, reason metav1.StatusReason, format string, args ...any) error {
	return &apiError{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// writeError writes err as a Status.
func writeError(ctx context.Context, w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		if code, msg := proxy.Status(err); code != 0 {
			ae = &apiError{code: code, reason: reasonFor(code), msg: msg}
		} else {
			ae = &apiError{code: http.StatusBadGateway, reason: "BadGateway", msg: err.Error()}
		}
	}
	klog.FromContext(ctx).V(2).Info("Connectors API request failed", "code", ae.code, "reason", ae.msg)
	proxy.WriteStatus(w, ae.code, ae.reason, ae.msg)
}

func reasonFor(code int) metav1.StatusReason {
	switch code {
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	case http.StatusMethodNotAllowed:
		return metav1.StatusReasonMethodNotAllowed
	}
	return "BadGateway"
}

// ServeHTTP serves /connectors/v1alpha1/namespaces/<ns>/connectors/<name>/(proxy|api)/...
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ns, name, kind, rest, ok := parsePath(r.URL.EscapedPath())
	if !ok {
		writeError(ctx, w, errorf(http.StatusNotFound, metav1.StatusReasonNotFound,
			"path must be %snamespaces/<namespace>/connectors/<name>/(proxy|api)/...", proxy.APIPrefix))
		return
	}
	c, class, err := s.authorize(r, ns, name)
	if err != nil {
		writeError(ctx, w, err)
		return
	}
	switch kind {
	case "proxy":
		err = s.passthrough(w, r, c, class, rest)
	case "api":
		err = s.custom(w, r, c, class, strings.TrimPrefix(rest, "/"))
	}
	if err != nil {
		writeError(ctx, w, err)
	}
}

// parsePath splits the API path; rest keeps its escaping.
func parsePath(p string) (ns, name, kind, rest string, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(p, proxy.APIPrefix), "/", 6)
	if len(parts) < 5 || parts[0] != "namespaces" || parts[1] == "" || parts[2] != "connectors" || parts[3] == "" ||
		(parts[4] != "proxy" && parts[4] != "api") {
		return "", "", "", "", false
	}
	if len(parts) == 6 {
		rest = "/" + parts[5]
	}
	return parts[1], parts[3], parts[4], rest, true
}

// authorize authenticates the caller's Bearer token and checks get on the Connector and, with
// enable-connector-apis-permissions, connectors/apis with the method's verb. Writes are refused
// unless enable-connector-apis-write-passthrough is on.
func (s *Server) authorize(r *http.Request, ns, name string) (*v1alpha1.Connector, *v1alpha1.ConnectorClass, error) {
	ctx := r.Context()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return nil, nil, errorf(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "send a Bearer token the cluster accepts")
	}
	u, ok, err := s.Reviewer.AuthenticateToken(ctx, strings.TrimSpace(token))
	if err != nil {
		return nil, nil, errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot review the token now: %v", err)
	}
	if !ok {
		return nil, nil, errorf(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "token not accepted")
	}
	verb, known := proxy.VerbFor(r.Method)
	if !known {
		return nil, nil, errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "method %s is not supported", r.Method)
	}
	flags := s.Flags.Flags()
	if verb != "get" && !flags.APIsWritePassthrough {
		return nil, nil, errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"%s is a write; writes through the Connectors API are off (enable-connector-apis-write-passthrough)", r.Method)
	}
	if err := s.allow(ctx, u, ns, name, "get", ""); err != nil {
		return nil, nil, err
	}
	// While approval is in effect, get on a Connector (which a gated workload holds, to mount
	// it) must not open the tool through the API: connectors/apis is needed too (SPEC §4.7).
	if flags.APIsPermissions || flags.ApprovalEffective() {
		if err := s.allow(ctx, u, ns, name, verb, "apis"); err != nil {
			return nil, nil, err
		}
	}
	return s.Proxy.Connector(ctx, ns, name)
}

func (s *Server) allow(ctx context.Context, u user.Info, ns, name, verb, subresource string) error {
	d, _, err := s.Reviewer.Authorize(ctx, authorizer.AttributesRecord{
		User: u, Verb: verb, Namespace: ns, Name: name, ResourceRequest: true,
		APIGroup: v1alpha1.GroupVersion.Group, APIVersion: v1alpha1.GroupVersion.Version,
		Resource: v1alpha1.ResourceConnectors, Subresource: subresource,
	})
	if err != nil {
		return errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot authorize now: %v", err)
	}
	if d != authorizer.DecisionAllow {
		res := "connectors"
		if subresource != "" {
			res += "/" + subresource
		}
		return errorf(http.StatusForbidden, metav1.StatusReasonForbidden, "%s may not %s %s of Connector %s/%s", u.GetName(), verb, res, ns, name)
	}
	return nil
}

// passthrough forwards to the tool's own API under the Connector's address.
func (s *Server) passthrough(w http.ResponseWriter, r *http.Request, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, rest string) error {
	if err := proxy.CheckPath(rest); err != nil {
		return err
	}
	target, err := url.Parse(strings.TrimSuffix(c.Spec.Address, "/") + rest)
	if err != nil {
		return errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "bad path: %v", err)
	}
	target.RawQuery = r.URL.RawQuery
	return s.Proxy.Forward(w, r, c, class, target)
}

// custom serves a custom API resource: the class's own API service, or a built-in one.
func (s *Server) custom(w http.ResponseWriter, r *http.Request, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, resource string) error {
	if class.Spec.API != nil && class.Spec.API.URI != "" {
		return s.plugin(w, r, c, class, resource)
	}
	var list *List
	var err error
	switch kind := class.Annotations[AnnotationBuiltinAPI]; {
	case kind == "git" && resource == "gitrefs":
		list, err = s.gitRefs(r, c, class)
	case kind == "oci" && resource == "repositories":
		list, err = s.repositories(r, c, class)
	case kind == "oci" && resource == "tags":
		list, err = s.tags(r, c, class)
	default:
		return errorf(http.StatusNotFound, metav1.StatusReasonNotFound,
			"ConnectorClass %q has no custom API %q", class.Name, resource)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(list)
}

// plugin forwards a custom API request to the class's API service with the Connector's base URL
// and credential in the X-Plugin-* headers (base64 JSON), over the connection the operator
// configured for that service.
func (s *Server) plugin(w http.ResponseWriter, r *http.Request, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, resource string) error {
	up, err := s.Proxy.Upstream(r.Context(), c, class)
	if err != nil {
		return err
	}
	target, err := url.Parse(strings.TrimSuffix(class.Spec.API.URI, "/") + "/" + resource)
	if err != nil {
		return errorf(http.StatusBadGateway, "BadGateway", "ConnectorClass %q api.uri: %v", class.Name, err)
	}
	target.RawQuery = r.URL.RawQuery
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.StdEncoding.EncodeToString(b)
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL = target
	out.Host = target.Host
	out.Header.Del("Authorization")
	out.Header.Set(egress.HopHeader, "1")
	out.Header.Set("X-Plugin-Meta", enc(map[string]any{"address": c.Spec.Address, "namespace": c.Namespace, "name": c.Name,
		"connectorClassName": class.Name}))
	if c.Spec.Auth != nil {
		out.Header.Set("X-Plugin-Auth", enc(c.Spec.Auth))
	}
	out.Header.Set("X-Plugin-Secret", enc(map[string]string{"username": up.Username, "password": up.Password, "token": up.Token}))
	res, err := pluginTransport.RoundTrip(out)
	if err != nil {
		return errorf(http.StatusBadGateway, "BadGateway", "API service of ConnectorClass %q unreachable: %v", class.Name, err)
	}
	defer res.Body.Close()
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
	return nil
}
