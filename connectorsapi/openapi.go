package connectorsapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// x-provider-type values of an OpenAPI operation in a class's spec.api.openapi.
const (
	providerAPI   = "api"
	providerProxy = "proxy"
)

// operation is where a request goes, by the class's OpenAPI document.
type operation struct {
	// Path is the OpenAPI path (template) the request matched, "" when none did.
	Path string
	// Provider is providerAPI or providerProxy.
	Provider string
	// Address is the operation's x-openapi-address: "" (the Connector's address), the name of
	// an address extension, or an http(s) URL.
	Address string
}

// route finds the operation of a request in the class's spec.api.openapi: the path that
// matches apiPath (literal segments preferred over {templates}) and its operation for the
// method (HEAD and OPTIONS use get's). A request nothing matches goes through the proxy.
func route(class *v1alpha1.ConnectorClass, apiPath, method string) (operation, error) {
	op := operation{Provider: providerProxy}
	if class.Spec.API == nil || class.Spec.API.OpenAPI == nil {
		return op, nil
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(class.Spec.API.OpenAPI.Raw, &doc); err != nil {
		return op, errorf(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"ConnectorClass %q: spec.api.openapi is not an OpenAPI document: %v", class.Name, err)
	}
	op.Path = matchPath(doc.Paths, apiPath)
	raw, found := doc.Paths[op.Path][operationKey(method)]
	if op.Path == "" || !found {
		return op, nil
	}
	var ext struct {
		Provider string `json:"x-provider-type"`
		Address  string `json:"x-openapi-address"`
	}
	if err := json.Unmarshal(raw, &ext); err != nil {
		return op, errorf(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"ConnectorClass %q: spec.api.openapi.paths[%q].%s: %v", class.Name, op.Path, operationKey(method), err)
	}
	switch ext.Provider {
	case "", providerProxy:
	case providerAPI:
		op.Provider = providerAPI
	default:
		return op, errorf(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"ConnectorClass %q: spec.api.openapi.paths[%q].%s.x-provider-type %q is neither %q nor %q",
			class.Name, op.Path, operationKey(method), ext.Provider, providerAPI, providerProxy)
	}
	op.Address = ext.Address
	return op, nil
}

// operationKey is the OpenAPI operation a method is routed by.
func operationKey(method string) string {
	if isRead(method) {
		return "get"
	}
	return strings.ToLower(method)
}

// matchPath returns the OpenAPI path that apiPath matches, "" for none. A {template} segment
// matches one non-empty segment; of several matches, the one with the most literal segments
// wins (OpenAPI: concrete paths before templated ones), then the first by name.
func matchPath[V any](paths map[string]V, apiPath string) string {
	segs := strings.Split(apiPath, "/")
	best, bestScore := "", -1
	for p := range paths {
		score, ok := pathScore(strings.Split(p, "/"), segs)
		if ok && (score > bestScore || (score == bestScore && p < best)) {
			best, bestScore = p, score
		}
	}
	return best
}

// pathScore counts a template's literal segments when it matches segs (escaped).
func pathScore(tmpl, segs []string) (int, bool) {
	if len(tmpl) != len(segs) {
		return 0, false
	}
	score := 0
	for i, t := range tmpl {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			if segs[i] == "" {
				return 0, false
			}
			continue
		}
		if t != segs[i] {
			if dec, err := url.PathUnescape(segs[i]); err != nil || dec != t {
				return 0, false
			}
		}
		score++
	}
	return score, true
}
