// Package connectorsapi is the embedded Connectors API (SPEC §5) at Alauda's paths:
// /connectors/v1alpha1/<namespace>/<connector>/path/<api-path> (a Connector's status.api.path
// plus the path of a request), routed by the class's spec.api.openapi: an operation with
// x-provider-type "api" goes to the class's API service (a plugin) or to a built-in API (git
// refs, registry repositories and tags), any other path through the proxy to the tool with the
// Connector's credential. It also serves GET /connectors-operator/featureflags. Callers
// authenticate with any token the cluster accepts.
package connectorsapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/proxy"
)

// pathSegment separates a Connector from the API path in a Connectors API URL.
const pathSegment = "path"

// ConnectorPath is a Connector's status.api.path: where the Connectors API serves it, relative
// to the API's address. Requests append the tool's or the custom API's path to it.
func ConnectorPath(namespace, name string) string {
	return proxy.APIPrefix + namespace + "/" + name + "/" + pathSegment
}

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
	// Verbs computes the verb a request needs on connectors/apis; nil is MethodVerbs.
	Verbs VerbMapper
	// Routes keeps the classes' OpenAPI route tables; nil decodes the document per request.
	Routes *Routes
	// RegistryPageSize is the page size asked of registries (catalog and tag lists).
	RegistryPageSize int
	// Answers bound what the list calls read from tools; nil takes the defaults.
	Answers *AnswerLimits
}

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
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
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

// ServeHTTP serves /connectors/v1alpha1/<ns>/<connector>/path/<api-path> and the operator API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if strings.HasPrefix(r.URL.Path, proxy.OperatorPrefix) {
		s.serveOperator(w, r)
		return
	}
	ns, name, apiPath, ok := parsePath(r.URL.EscapedPath())
	if !ok {
		writeError(ctx, w, errorf(http.StatusNotFound, metav1.StatusReasonNotFound,
			"path must be %s<namespace>/<connector>/%s/<api-path> (the Connector's status.api.path, then the API's path)", proxy.APIPrefix, pathSegment))
		return
	}
	if err := s.serveConnector(w, r, ns, name, apiPath); err != nil {
		writeError(ctx, w, err)
	}
}

// serveConnector authorizes a request to a Connector's API and routes it by the class's OpenAPI.
func (s *Server) serveConnector(w http.ResponseWriter, r *http.Request, ns, name, apiPath string) error {
	u, token, err := s.authenticate(r)
	if err != nil {
		return err
	}
	r = withCallGrants(r, token, u)
	ctx := r.Context()
	// The flags are read once for the request: read again between its checks, a flag turned
	// on in between (enable-connector-apis-permissions) could skip both the check it adds and
	// the one it replaces.
	flags := s.Flags.Flags()
	if err := methodAllowed(flags, r.Method); err != nil {
		return err
	}
	if proxy.IsUpgrade(r.Header) {
		// An upgraded connection would carry writes whatever the method, and outlive every
		// check; the API's callers (UIs) read JSON.
		return errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"the Connectors API does not switch protocols (Upgrade); use the proxy")
	}
	if where := proxy.MethodOverride(r); where != "" {
		// A tool may run the method an override names instead of the request's: a GET that
		// says DELETE would pass a read grant, the write gate and a class's permissions module
		// (which judge the request's method) and delete with the Connector's credential. The
		// API's callers (UIs) send the method itself.
		return errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"the Connectors API does not take method overrides (%s): send the method itself", where)
	}
	// get on the Connector before it is looked up: a stranger gets the same 403 for a
	// Connector that exists and one that does not.
	if err := s.allow(ctx, u, ns, name, "get", ""); err != nil {
		return err
	}
	c, class, err := s.Proxy.Connector(ctx, ns, name)
	if err != nil {
		return err
	}
	if err := proxy.CheckPath(apiPath); err != nil {
		return err
	}
	op, err := s.Routes.route(class, apiPath, r.Method)
	if err != nil {
		return err
	}
	if err := s.authorizeAPIs(r, flags, u, c, class, op); err != nil {
		return err
	}
	if op.Provider != providerAPI || APIAddress(class) != "" {
		// The tool's own API with the credential, or the class's API service, which is given
		// the credential whole: what the proxy serves (the built-in lists need get).
		if err := s.authorizePassthrough(r, flags, u, c, class, op); err != nil {
			return err
		}
	}
	if op.Provider == providerAPI {
		return s.custom(w, r, u, c, class, apiPath)
	}
	return s.passthrough(w, r, u, c, class, op, apiPath)
}

// parsePath splits the API path; apiPath keeps its escaping and its leading slash.
func parsePath(p string) (ns, name, apiPath string, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(p, proxy.APIPrefix), "/", 4)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] != pathSegment {
		return "", "", "", false
	}
	apiPath = "/"
	if len(parts) == 4 {
		apiPath += parts[3]
	}
	return parts[0], parts[1], apiPath, true
}

// unavailable is the error of a request the API server could not be asked about now: 503, for
// the client to try again. What went wrong goes to the log, not to the client, which may not
// even be authenticated yet: the error names the API server's address.
func unavailable(ctx context.Context, what string, err error) error {
	klog.FromContext(ctx).Error(err, "Could not ask the API server", "asking", what)
	return errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot %s now (the node's log says why); try again", what)
}

// authenticate reviews the caller's Bearer token, and returns its user and the token.
func (s *Server) authenticate(r *http.Request) (user.Info, string, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return nil, "", errorf(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "send a Bearer token the cluster accepts")
	}
	u, ok, err := s.Reviewer.AuthenticateToken(r.Context(), token)
	if err != nil {
		return nil, "", unavailable(r.Context(), "review the token", err)
	}
	if !ok {
		return nil, "", errorf(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "token not accepted")
	}
	return u, token, nil
}

// methodAllowed refuses methods that are never forwarded (TRACE would echo the credential) and,
// unless enable-connector-apis-write-passthrough is on, every method but GET, HEAD and OPTIONS.
// It goes by the method, not the verb a VerbMapper computes: the flag gates writes as sent.
func methodAllowed(flags features.Flags, method string) error {
	if _, known := proxy.VerbFor(method); !known {
		return errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "method %s is not supported", method)
	}
	if !isRead(method) && !flags.APIsWritePassthrough {
		return errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"%s is a write; writes through the Connectors API are off (enable-connector-apis-write-passthrough)", method)
	}
	return nil
}

func isRead(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// allow checks one permission on a Connector (subresource "" is the Connector itself).
func (s *Server) allow(ctx context.Context, u user.Info, ns, name, verb, subresource string) error {
	ok, err := s.allowed(ctx, u, ns, name, verb, subresource)
	if err != nil {
		return err
	}
	attrs := connectorAttrs(u, ns, name, verb, subresource)
	if !ok {
		return errorf(http.StatusForbidden, metav1.StatusReasonForbidden, "%s may not %s %s of Connector %s/%s", u.GetName(), verb, resourceOf(attrs), ns, name)
	}
	recordAllowed(ctx, attrs)
	return nil
}

// allowed asks whether u may verb the Connector (subresource "" is the Connector itself).
func (s *Server) allowed(ctx context.Context, u user.Info, ns, name, verb, subresource string) (bool, error) {
	d, _, err := s.Reviewer.Authorize(ctx, connectorAttrs(u, ns, name, verb, subresource))
	if err != nil {
		return false, unavailable(ctx, "authorize", err)
	}
	return d == authorizer.DecisionAllow, nil
}

func connectorAttrs(u user.Info, ns, name, verb, subresource string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{
		User: u, Verb: verb, Namespace: ns, Name: name, ResourceRequest: true,
		APIGroup: v1alpha1.GroupVersion.Group, APIVersion: v1alpha1.GroupVersion.Version,
		Resource: v1alpha1.ResourceConnectors, Subresource: subresource,
	}
}
