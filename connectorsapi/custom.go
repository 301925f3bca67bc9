package connectorsapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

// The headers a class's API service (plugin) receives, each base64 (connectorclass_api_spec).
const (
	// HeaderPluginMeta carries {"baseURL": the Connector's address}.
	HeaderPluginMeta = "X-Plugin-Meta"
	// HeaderPluginAuth carries the credential Secret's type.
	HeaderPluginAuth = "X-Plugin-Auth"
	// HeaderPluginSecret carries the Secret's data as JSON, each value base64 itself.
	HeaderPluginSecret = "X-Plugin-Secret"
)

// pluginTransport is the settings class API services are reached with: directly, never through
// an environment proxy, leaving content encoding to the client and the service (the answer is
// passed on as it comes). Its own pool is never used: each Connector and caller gets a clone
// (Proxy.OwnPool).
var pluginTransport = &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second}

// passthrough forwards to the tool's own API under the operation's address, with the
// Connector's credential injected as the proxy does, and its paging links kept on the API.
func (s *Server) passthrough(w http.ResponseWriter, r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, op operation, apiPath string) error {
	base, err := toolAddress(c, class, op.Address)
	if err != nil {
		return err
	}
	baseURL, err := url.Parse(base)
	if err != nil {
		return errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "address %q: %v", base, err)
	}
	target, err := url.Parse(strings.TrimSuffix(base, "/") + apiPath)
	if err != nil {
		return errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "bad path: %v", err)
	}
	target.RawQuery = r.URL.RawQuery
	in, stop := s.guard(r)
	defer stop()
	in.Header = withoutCaller(r.Header)
	return s.Proxy.Forward(newLinkWriter(w, baseURL, target, apiPath), in, u, c, class, target)
}

// toolAddress resolves an x-openapi-address: empty is the Connector's address, an http(s) URL
// is itself (the class is trusted: an administrator wrote it), anything else names one of the
// Connector's address extensions.
func toolAddress(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, selector string) (string, error) {
	if selector == "" {
		return c.Spec.Address, nil
	}
	if strings.Contains(selector, "://") {
		u, err := url.Parse(selector)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest,
				"x-openapi-address %q of ConnectorClass %q is not an http(s) URL", selector, class.Name)
		}
		return selector, nil
	}
	for _, e := range c.Spec.AddressExtensions {
		if e.Name == selector {
			return e.Value, nil
		}
	}
	return "", errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest,
		"Connector %s/%s has no address extension %q (x-openapi-address of ConnectorClass %q)", c.Namespace, c.Name, selector, class.Name)
}

// builtins are the custom APIs served here for classes without an API service of their own,
// by the path their OpenAPI operation (x-provider-type: api) declares.
var builtins = map[string]func(*Server, *http.Request, user.Info, *v1alpha1.Connector, *v1alpha1.ConnectorClass) (*List, error){
	"/git/gitrefs":      (*Server).gitRefs,
	"/oci/repositories": (*Server).repositories,
	"/oci/tags":         (*Server).tags,
}

// custom serves an x-provider-type: api request of u: the class's API service, or a built-in
// API.
func (s *Server) custom(w http.ResponseWriter, r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, apiPath string) error {
	if addr := APIAddress(class); addr != "" {
		return s.plugin(w, r, u, c, class, addr, apiPath)
	}
	list := builtins[apiPath]
	if list == nil {
		// Alauda's wording for a class whose API service is unknown.
		return errorf(http.StatusBadRequest, metav1.StatusReasonBadRequest, "api address of connectorclass '%s' is not resolved", class.Name)
	}
	if !isRead(r.Method) {
		return errorf(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "%s is read-only", apiPath)
	}
	// The bytes the call read stay its caller's until its answer is written, within toolTimeout:
	// what the list holds is of their size, and a client that does not read its answer would
	// otherwise hold it uncounted (a node's memory, a stalled call at a time).
	budget := s.answerLimits().newCall(proxy.CallerOf(u))
	defer budget.release()
	out, err := list(s, r.WithContext(context.WithValue(r.Context(), callBudgetKey{}, budget)), u, c, class)
	if err != nil {
		return err
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(toolTimeout))
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// APIAddress is the class's API service address: status.api.address.url once resolved, or an
// absolute spec.api.uri; "" when it has none.
func APIAddress(class *v1alpha1.ConnectorClass) string {
	if st := class.Status.API; st != nil && st.Address != nil && st.Address.URL != "" {
		return st.Address.URL
	}
	if class.Spec.API == nil {
		return ""
	}
	if u, err := url.Parse(class.Spec.API.URI); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return class.Spec.API.URI
	}
	return ""
}

// plugin forwards a request of u to the class's API service at {address}{api-path}, with the
// Connector's address and credential in the X-Plugin-* headers (connectorclass_api_spec).
//
// One service serves every tenant's Connectors of its class, each request carrying a
// credential: a read is sent without a body (a service that ignores a GET's or an OPTIONS' body
// would read it as the next request on the connection, and take that request's credential
// with it), nothing hop-by-hop of the caller's goes, and the connections are the Connector's
// and the caller's own (Proxy.OwnPool), so that what a write's body could smuggle stays with
// its own tenant and credential.
func (s *Server) plugin(w http.ResponseWriter, r *http.Request, u user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, addr, apiPath string) error {
	up, err := s.Proxy.Upstream(r.Context(), c, class, u)
	if err != nil {
		return credentialError(err)
	}
	target, err := url.Parse(strings.TrimSuffix(addr, "/") + apiPath)
	if err != nil {
		return errorf(http.StatusBadGateway, "BadGateway", "API address %q of ConnectorClass %q: %v", addr, class.Name, err)
	}
	target.RawQuery = r.URL.RawQuery
	r, stop := s.guard(r)
	defer stop()
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL = target
	out.Host = target.Host
	if isRead(r.Method) {
		out.Body, out.ContentLength, out.TransferEncoding = http.NoBody, 0, nil
	}
	out.Header = withoutCaller(r.Header)
	proxy.RemoveHopByHop(out.Header)
	dropPluginHeaders(out.Header)
	out.Header.Set(egress.HopHeader, "1")
	SetPluginHeaders(out.Header, c.Spec.Address, up.SecretType, up.SecretData)
	res, err := s.Proxy.OwnPool(pluginTransport, c, u).RoundTrip(out)
	if err != nil {
		if refused := context.Cause(r.Context()); refused != nil {
			return refused // the call's guard ended it: the caller is no longer allowed
		}
		return errorf(http.StatusBadGateway, "BadGateway", "API service of ConnectorClass %q unreachable: %v", class.Name, err)
	}
	defer res.Body.Close()
	proxy.RemoveHopByHop(res.Header)
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	confineAnswer(w.Header())
	w.WriteHeader(res.StatusCode)
	if _, err := io.Copy(w, res.Body); err != nil {
		// An answer cut short (the service failed, or the guard ended it) must not end as if
		// it were whole: net/http then closes the connection without the closing chunk, as
		// ReverseProxy does.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// dropPluginHeaders drops the caller's X-Plugin-* headers, also under the names a service
// behind CGI, WSGI or Rack reads as theirs (X_Plugin_Meta, X-PLUGIN_META): such a server gives
// both one variable, and the caller's could be the one it keeps. A caller's X-Plugin-Meta
// naming its own server as baseURL would then have the service send a Connector's credential
// there, a shared Connector's too, whose users may use it but never read it.
func dropPluginHeaders(h http.Header) {
	for name := range h {
		if proxy.ReadAsPrefixedBy(name, "X-Plugin-") {
			delete(h, name)
		}
	}
}

// SetPluginHeaders sets X-Plugin-Meta to base64 {"baseURL":address} and, for a Connector with a
// Secret, X-Plugin-Auth to base64 of its type and X-Plugin-Secret to base64 of its data as
// JSON (encoding/json writes the []byte values base64, as the spec asks).
func SetPluginHeaders(h http.Header, address, secretType string, data map[string][]byte) {
	b64 := base64.StdEncoding.EncodeToString
	meta, _ := json.Marshal(map[string]string{"baseURL": address})
	h.Set(HeaderPluginMeta, b64(meta))
	if secretType == "" && data == nil {
		return
	}
	h.Set(HeaderPluginAuth, b64([]byte(secretType)))
	if data == nil {
		data = map[string][]byte{}
	}
	secret, _ := json.Marshal(data)
	h.Set(HeaderPluginSecret, b64(secret))
}
