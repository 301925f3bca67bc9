package connectorsapi

import (
	"encoding/json"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy"
)

// FeatureFlagsPath is the operator API's feature flags endpoint.
const FeatureFlagsPath = proxy.OperatorPrefix + "featureflags"

// serveOperator serves the Connectors operator API: GET /connectors-operator/featureflags, the
// flags in force as {"<key>": "true"|"false"}, to callers who may get or list ConnectorClasses.
func (s *Server) serveOperator(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.URL.Path != FeatureFlagsPath {
		writeError(ctx, w, errorf(http.StatusNotFound, metav1.StatusReasonNotFound, "the operator API serves %s only", FeatureFlagsPath))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(ctx, w, errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "%s is read-only", FeatureFlagsPath))
		return
	}
	if err := s.authorizeClasses(r); err != nil {
		writeError(ctx, w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.Flags.Flags().Values())
}

// authorizeClasses checks that the caller may access ConnectorClasses (get or list).
func (s *Server) authorizeClasses(r *http.Request) error {
	u, _, err := s.authenticate(r)
	if err != nil {
		return err
	}
	for _, verb := range []string{"get", "list"} {
		d, _, err := s.Reviewer.Authorize(r.Context(), authorizer.AttributesRecord{
			User: u, Verb: verb, ResourceRequest: true,
			APIGroup: v1alpha1.GroupVersion.Group, APIVersion: v1alpha1.GroupVersion.Version, Resource: v1alpha1.ResourceConnectorClasses,
		})
		if err != nil {
			return unavailable(r.Context(), "authorize", err)
		}
		if d == authorizer.DecisionAllow {
			return nil
		}
	}
	return errorf(http.StatusForbidden, metav1.StatusReasonForbidden, "%s may not get or list connectorclasses", u.GetName())
}
