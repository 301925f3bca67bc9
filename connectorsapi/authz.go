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

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/proxy"
)

// VerbMapper computes the Kubernetes verb a Connectors API request needs on connectors/apis.
// The default is MethodVerbs; a class's spec.api.permissions (Rego) can plug in here.
type VerbMapper interface {
	Verb(ctx context.Context, class *v1alpha1.ConnectorClass, r *http.Request) (string, error)
}

// MethodVerbs is the documented mapping: GET, HEAD, OPTIONS → get; POST → create; PUT → update;
// PATCH → patch; DELETE → delete; any other method → create (only reads pass with get).
type MethodVerbs struct{}

// Verb implements VerbMapper.
func (MethodVerbs) Verb(_ context.Context, _ *v1alpha1.ConnectorClass, r *http.Request) (string, error) {
	verb, ok := proxy.VerbFor(r.Method)
	if !ok {
		return "", errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "method %s is not supported", r.Method)
	}
	return verb, nil
}

func (s *Server) verbs() VerbMapper {
	if s.Verbs == nil {
		return MethodVerbs{}
	}
	return s.Verbs
}

// apisSubresources are the connectors subresources that grant API use of a class's path, from
// the widest: apis (any class), apis/<class> (any path of the class) and, when the request
// matched a path of the class's OpenAPI document, apis/<class><path> (e.g.
// connectors/apis/gitlab/api/v4/projects/{id}). RBAC matches resources exactly, so each is
// asked; one allowing is enough.
func apisSubresources(class, openAPIPath string) []string {
	out := []string{"apis", "apis/" + class}
	if openAPIPath != "" {
		out = append(out, "apis/"+class+openAPIPath)
	}
	return out
}

// authorizeAPIs checks connectors/apis with enable-connector-apis-permissions and, always, while
// approval is effective: a gated workload holds get on the Connector it mounts, which must not
// open the tool through the API (SPEC §4.7).
func (s *Server) authorizeAPIs(r *http.Request, flags features.Flags, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, op operation) error {
	if !flags.APIsPermissions && !flags.ApprovalEffective() {
		return nil
	}
	return s.authorizeAny(r, u, c, class, op, nil)
}

// authorizePassthrough checks, with enable-connector-proxy-permissions, that a passthrough
// request (the tool's own API with the Connector's credential: what the proxy serves), or one
// to the class's API service (given the credential whole), has what
// the proxy would ask of it, connectors/proxy with the request's verb, or the API's own grant,
// connectors/apis: get alone would open through the API what the flag closes at the proxy
// (a shared Connector that every ServiceAccount may get, its use granted to a few). Where
// authorizeAPIs asked connectors/apis already, that answer stands.
func (s *Server) authorizePassthrough(r *http.Request, flags features.Flags, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, op operation) error {
	if !flags.ProxyPermissions || flags.APIsPermissions || flags.ApprovalEffective() {
		return nil
	}
	return s.authorizeAny(r, u, c, class, op, []string{"proxy"})
}

// authorizeAny checks that u may do the request's verb on one of the connectors subresources
// first, then connectors/apis of the class and of op's path (apisSubresources).
func (s *Server) authorizeAny(r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, op operation, first []string) error {
	verb, err := s.verbs().Verb(r.Context(), class, r)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return err
		}
		// Fail closed, without the evaluator's detail (it may quote the request).
		return errorf(http.StatusForbidden, metav1.StatusReasonForbidden, "the verb of this request on ConnectorClass %q cannot be computed", class.Name)
	}
	path, why := op.Path, ""
	if op.EscapedSlash && !class.APIEscapedSlashesInSegment() {
		path = ""
		why = fmt.Sprintf(" (a grant of path %s does not cover a segment with an escaped '/' or '\\', which a tool may read as more segments: ConnectorClass %q does not say its tool reads them within one, annotation %s)",
			op.Path, class.Name, v1alpha1.AnnotationAPIEscapedSlashes)
	}
	subs := append(first, apisSubresources(class.Name, path)...)
	for _, sub := range subs {
		ok, err := s.allowed(r.Context(), u, c.Namespace, c.Name, verb, sub)
		if ok {
			// Any of them will do while the call lasts (its rechecks).
			anyOf := make([]authorizer.AttributesRecord, len(subs))
			for i, sub := range subs {
				anyOf[i] = connectorAttrs(u, c.Namespace, c.Name, verb, sub)
			}
			recordAllowed(r.Context(), anyOf...)
		}
		if err != nil || ok {
			return err
		}
	}
	return errorf(http.StatusForbidden, metav1.StatusReasonForbidden, "%s may not %s connectors/%s of Connector %s/%s%s",
		u.GetName(), verb, strings.Join(subs, " nor connectors/"), c.Namespace, c.Name, why)
}
