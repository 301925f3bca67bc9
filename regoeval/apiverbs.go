package regoeval

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
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

// Verb implements VerbMapper. The module decides on each spelling of the path: as sent (which
// the tool receives, and routes by its own decoding) and decoded once, twice and three times
// (as the proxy's denied paths are matched); spellings that need different verbs are refused.
// Decided on the decoded path alone, files/ci%2Fgit-upload-pack, one file of GitLab's API that
// a POST writes, would read to a module as a git fetch's path, and need only get.
func (a APIVerbs) Verb(ctx context.Context, class *v1alpha1.ConnectorClass, r *http.Request) (string, error) {
	methodVerb, err := a.Methods.Verb(ctx, class, r)
	if err != nil {
		return "", err
	}
	in := a.Engine.NewRequest(r, r.Host, "", r.URL.Query()) // one request: its body is read once
	verb, sent := "", ""
	for i, path := range pathSpellings(APIPath(r.URL.EscapedPath())) {
		in.Path = path
		v, err := a.Engine.Verb(ctx, class, in)
		switch {
		case err != nil:
			return "", err
		case i == 0:
			verb, sent = v, path
		case v != verb:
			return "", fmt.Errorf("the class's api.permissions.rego answers %q for the path %s as sent and %q for %s, which a tool may read it as: the verb cannot be decided",
				verb, sent, v, path)
		}
	}
	return RBACVerb(verb, methodVerb), nil
}

// pathSpellings are path as sent and its decodings, up to three, while each changes it and
// decodes; without a percent sign, path alone.
func pathSpellings(path string) []string {
	spellings := []string{path}
	for range 3 {
		decoded, err := url.PathUnescape(path)
		if err != nil || decoded == path {
			break
		}
		spellings, path = append(spellings, decoded), decoded
	}
	return spellings
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
