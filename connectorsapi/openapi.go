package connectorsapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/proxy"
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
	// EscapedSlash tells that a {template} of Path matched a segment holding an escaped '/' or
	// '\' (%2F, %5C), which a tool that decodes them before it routes reads as more segments.
	EscapedSlash bool
}

// routeTable is a class's OpenAPI document as routing needs it: by path, by operation key, the
// operation (Path unset) or the error that operation is answered with.
type routeTable struct {
	paths map[string]map[string]routeEntry
	err   error // the whole document is unreadable
}

type routeEntry struct {
	op  operation
	err error
}

// Routes keeps the route tables of the ConnectorClasses in use, by class UID and generation:
// decoding a class's document on every request costs more than the request's own routing.
type Routes struct {
	cache *lru.Cache[routeKey, *routeTable]
}

type routeKey struct {
	uid        types.UID
	generation int64
}

// NewRoutes returns Routes keeping at most size tables (the least recently used go first).
func NewRoutes(size int) (*Routes, error) {
	c, err := lru.New[routeKey, *routeTable](size)
	if err != nil {
		return nil, err
	}
	cachemetrics.Register("openapi_routes", c.Len)
	return &Routes{cache: c}, nil
}

// table returns the class's route table; nil Routes decode it each time.
func (rs *Routes) table(class *v1alpha1.ConnectorClass) *routeTable {
	if rs == nil || class.UID == "" {
		return newRouteTable(class)
	}
	key := routeKey{uid: class.UID, generation: class.Generation}
	if t, ok := rs.cache.Get(key); ok {
		return t
	}
	t := newRouteTable(class)
	rs.cache.Add(key, t)
	return t
}

// route finds the operation of a request in the class's spec.api.openapi: the path that
// matches apiPath (literal segments preferred over {templates}) and its operation for the
// method (HEAD and OPTIONS use get's). A request nothing matches goes through the proxy.
func (rs *Routes) route(class *v1alpha1.ConnectorClass, apiPath, method string) (operation, error) {
	t := rs.table(class)
	if t.err != nil {
		return operation{}, t.err
	}
	path := matchPath(t.paths, apiPath)
	op, err := operation{Path: path, Provider: providerProxy}, error(nil)
	if e, ok := t.paths[path][operationKey(method)]; ok {
		op, err = e.op, e.err
	}
	op.EscapedSlash = templateHoldsEscapedSlash(path, apiPath)
	return op, err
}

// templateHoldsEscapedSlash tells whether a {template} segment of tmpl matches a segment of
// apiPath (escaped) holding an escaped '/' or '\', under any of the layers of escaping the
// proxy looks through: a %252F is a '/' to a tool behind a front that decodes once more (an
// nginx proxy_pass with a path), as %2F is to one that decodes before it routes.
func templateHoldsEscapedSlash(tmpl, apiPath string) bool {
	if tmpl == "" {
		return false
	}
	segs := strings.Split(apiPath, "/")
	for i, t := range strings.Split(tmpl, "/") {
		if i < len(segs) && strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") && holdsEscapedSlash(segs[i]) {
			return true
		}
	}
	return false
}

// holdsEscapedSlash tells whether a path segment, decoded once and again up to
// proxy.MaxDecodings times, ever holds a '/' or '\'.
func holdsEscapedSlash(seg string) bool {
	for range proxy.MaxDecodings {
		dec, err := url.PathUnescape(seg)
		if err != nil || dec == seg {
			return false
		}
		if strings.ContainsAny(dec, "/\\") {
			return true
		}
		seg = dec
	}
	return false
}

// operationKeys are the operations of an OpenAPI path item.
var operationKeys = map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}

// newRouteTable decodes a class's spec.api.openapi; errors name the class and the field.
func newRouteTable(class *v1alpha1.ConnectorClass) *routeTable {
	t := &routeTable{}
	if class.Spec.API == nil || class.Spec.API.OpenAPI == nil {
		return t
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(class.Spec.API.OpenAPI.Raw, &doc); err != nil {
		t.err = errorf(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"ConnectorClass %q: spec.api.openapi is not an OpenAPI document: %v", class.Name, err)
		return t
	}
	t.paths = make(map[string]map[string]routeEntry, len(doc.Paths))
	for path, item := range doc.Paths {
		ops := map[string]routeEntry{}
		for key, raw := range item {
			if operationKeys[key] {
				ops[key] = newRouteEntry(class.Name, path, key, raw)
			}
		}
		t.paths[path] = ops
	}
	return t
}

func newRouteEntry(class, path, key string, raw json.RawMessage) routeEntry {
	var ext struct {
		Provider string `json:"x-provider-type"`
		Address  string `json:"x-openapi-address"`
	}
	e := routeEntry{op: operation{Path: path, Provider: providerProxy}}
	if err := json.Unmarshal(raw, &ext); err != nil {
		e.err = errorf(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"ConnectorClass %q: spec.api.openapi.paths[%q].%s: %v", class, path, key, err)
		return e
	}
	switch ext.Provider {
	case "", providerProxy:
	case providerAPI:
		e.op.Provider = providerAPI
	default:
		e.err = errorf(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"ConnectorClass %q: spec.api.openapi.paths[%q].%s.x-provider-type %q is neither %q nor %q",
			class, path, key, ext.Provider, providerAPI, providerProxy)
	}
	e.op.Address = ext.Address
	return e
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
			if dec, err := url.PathUnescape(segs[i]); err != nil || dec != t && servedAs(dec, i == len(segs)-1) != t {
				return 0, false
			}
		}
		score++
	}
	return score, true
}

// servedAs is the segment seg as tools that strip them route it: without ;parameters (Tomcat
// and Jetty: Nexus, Artifactory, SonarQube), and the last without a format extension (Rails
// and Grape: GitLab). A request whose segment a literal segment of the class's paths matches
// only so is that literal path's, for its grant and its provider, as it is the tool's: routed
// as a template's ({id} taking admin;x), it would need the template's grant for what the tool
// serves as the literal path.
func servedAs(seg string, last bool) string {
	seg, _, _ = strings.Cut(seg, ";")
	if dot := strings.LastIndexByte(seg, '.'); last && dot > 0 {
		seg = seg[:dot]
	}
	return seg
}
