package regoeval

import (
	"context"
	"net/http"
	"strings"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// VerbMapper computes the Kubernetes verb a Connectors API request needs on connectors/apis
// (the shape of connectorsapi.VerbMapper, which APIVerbs implements).
type VerbMapper interface {
	Verb(ctx context.Context, class *v1alpha1.ConnectorClass, r *http.Request) (string, error)
}

// APIVerbs applies a class's api.permissions.rego to Connectors API requests: the module sees
// the request with its path inside the Connector's API (`/search/code` for
// /connectors/v1alpha1/<ns>/<connector>/path/search/code), and its verb is mapped by RBACVerb
// over the method's verb that Methods gives (connectorsapi.MethodVerbs), whose errors (a
// method never allowed) pass through. Without a module the answer is Methods' alone.
type APIVerbs struct {
	Engine  *Engine
	Methods VerbMapper
}

// Verb implements VerbMapper.
func (a APIVerbs) Verb(ctx context.Context, class *v1alpha1.ConnectorClass, r *http.Request) (string, error) {
	methodVerb, err := a.Methods.Verb(ctx, class, r)
	if err != nil {
		return "", err
	}
	verb, err := a.Engine.Verb(ctx, class, a.Engine.NewRequest(r, r.Host, APIPath(r.URL.Path), r.URL.Query()))
	if err != nil {
		return "", err
	}
	return RBACVerb(verb, methodVerb), nil
}

// APIPath is the path inside the Connector's API of a Connectors API request path
// (/connectors/v1alpha1/<ns>/<connector>/path/<api-path> → /<api-path>), or the path itself in
// any other layout.
func APIPath(path string) string {
	parts := strings.SplitN(strings.TrimPrefix(path, "/connectors/v1alpha1/"), "/", 4)
	if len(parts) < 3 || parts[2] != "path" || !strings.HasPrefix(path, "/connectors/v1alpha1/") {
		return path
	}
	if len(parts) == 3 {
		return "/"
	}
	return "/" + parts[3]
}
