package v1alpha1

import (
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AddressSpec declares the address parameter of a ConnectorClass (a parameter declaration, as
// Alauda's; only string addresses are understood).
type AddressSpec struct {
	// Name of the address parameter, for UIs.
	// +optional
	Name string `json:"name,omitempty"`
	// Type of the address; only string is understood.
	// +kubebuilder:default=string
	// +kubebuilder:validation:Enum=string
	// +optional
	Type ParamType `json:"type,omitempty"`
	// Default address for Connectors of this class.
	// +optional
	Default string `json:"default,omitempty"`
	// Description for people.
	// +optional
	Description string `json:"description,omitempty"`
	// Enum lists the allowed addresses, when not empty.
	// +optional
	Enum []string `json:"enum,omitempty"`
	// +optional
	Properties map[string]PropertySpec `json:"properties,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// AddressExtensionSpec declares an extra named address, e.g. a registry's token host.
// An extension without a default is required on Connectors.
type AddressExtensionSpec struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:default=string
	// +kubebuilder:validation:Enum=string
	// +optional
	Type ParamType `json:"type,omitempty"`
	// Default value. A pointer: `default: ""` declares an optional extension, no default a
	// required one (admission tells them apart).
	// +optional
	Default *string `json:"default,omitempty"`
	// +optional
	Description string `json:"description,omitempty"`
	// +optional
	Enum []string `json:"enum,omitempty"`
	// +optional
	Properties map[string]PropertySpec `json:"properties,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Secret types understood by the built-in proxy.
const (
	SecretTypeBasicAuth                = "kubernetes.io/basic-auth"
	SecretTypeBearerToken              = "connectors.cpaas.io/bearer-token"
	SecretTypeDistributionRegistryAuth = "cpaas.io/distribution-registry-token"
	SecretTypeSSHAuth                  = "kubernetes.io/ssh-auth"
)

// AuthType is one way of authenticating to the tool.
type AuthType struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// DisplayName is the auth type's name for people.
	// +optional
	DisplayName string `json:"displayName,omitempty"`
	// SecretType is the type of the Secret holding the credential.
	// +optional
	SecretType string `json:"secretType,omitempty"`
	// Generator computes what is injected into requests to the tool (a Rego module whose
	// `auth` object names headers, query parameters or a body), for credentials the built-in
	// injection of SecretType does not cover.
	// +optional
	Generator *RegoPolicy `json:"generator,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// Optional auth may be left out of a Connector.
	// +optional
	Optional bool `json:"optional,omitempty"`
	// +optional
	Params []ParamSpec `json:"params,omitempty"`
	// +optional
	Description string `json:"description,omitempty"`
}

// AuthSpec lists the auth types of a class.
type AuthSpec struct {
	// +optional
	// +listType=map
	// +listMapKey=name
	Types []AuthType `json:"types,omitempty"`
}

// ProxySpec is a class's own proxy, and how the proxy reads the caller's token.
type ProxySpec struct {
	Destination `json:",inline"`
	// AuthExtractor is a Rego module that finds the caller's token in a request, for tools
	// whose clients send it in their own format.
	// +optional
	AuthExtractor *RegoPolicy `json:"authExtractor,omitempty"`
	// DeniedPaths are the tool's endpoints the built-in proxy (and the Connectors API's
	// pass-through) never sends a request to with a Connector's credential, besides the
	// node's --proxy-denied-paths: those that would hand the caller the credential itself or
	// a new one (a user's API key, a token's rotation), which the caller could then use
	// outside the proxy, past its Pod's end and any approval's revocation. Each is a sequence
	// of path segments ("/api/security/apiKey"), "*" standing for any one segment; it denies
	// every request whose path, in any percent-decoding, holds those segments in a row from
	// its start under the Connector's address, or one segment further (a context path such
	// as /artifactory), compared without regard to ASCII case, ";" parameters or a format
	// suffix (".json"). An entry ending in "$" denies only a path that ends where it does (a
	// registry's token service at /service/token, not an image named service/token pulled at
	// /v2/service/token/manifests/latest). The answer is 403.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^(/[A-Za-z0-9._~!$&'()*+,=:@-]+)+/?$`
	// +kubebuilder:validation:XValidation:rule="self.all(p, p.split('/').exists(s, s != '' && s != '*' && s != '$' && s != '*$'))",message="an entry of \"*\" segments alone would deny every path"
	// +listType=set
	DeniedPaths []string `json:"deniedPaths,omitempty"`
	// DeniedGraphQLFields are GraphQL field names no request of the class's Connectors to the
	// node's GraphQL paths (--proxy-graphql-paths) may name, besides the node's
	// --proxy-denied-graphql-fields: mutations that mint a credential the caller would hold,
	// fields that answer one. The proxy reads each such request before it sends it, and
	// answers 403 to one that names a field as a word anywhere a server could take a document
	// from (a field in both lists names the node's flag). Without node GraphQL paths, nothing
	// is read.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[_A-Za-z][_0-9A-Za-z]*$`
	// +listType=set
	DeniedGraphQLFields []string `json:"deniedGraphQLFields,omitempty"`
}

// APISpec is a class's API: its own server (a plugin) and the OpenAPI document that routes
// requests to it or through the proxy.
type APISpec struct {
	Destination `json:",inline"`
	// OpenAPI describes the class's API (x-provider-type, x-openapi-address).
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	OpenAPI *apiextensionsv1.JSON `json:"openapi,omitempty"`
	// Permissions is a Rego module that maps an API request to the verb it needs.
	// +optional
	Permissions *RegoPolicy `json:"permissions,omitempty"`
}

// Configuration is a set of files the CSI driver renders for Connectors of this class.
type Configuration struct {
	// Name selects the configuration in the volume attribute configuration.names.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Data maps a file name in the volume to a Go text/template (sprig functions available).
	// +optional
	Data map[string]string `json:"data,omitempty"`
	// Params this configuration accepts through the volume attribute configuration.params.
	// +optional
	// +listType=map
	// +listMapKey=name
	Params []ParamSpec `json:"params,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// HTTPHeader is a header sent by a probe.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPProbe checks a tool over HTTP.
type HTTPProbe struct {
	// Path on the tool's host (the address's path is not prepended). A template over
	// .Connector and .Secret.
	Path string `json:"path"`
	// +kubebuilder:validation:Enum=GET;POST
	// +optional
	Method string `json:"method,omitempty"`
	// Headers, templates over .Connector and .Secret.
	// +optional
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
	// Scheme; the address's when empty.
	// +kubebuilder:validation:Enum=http;https
	// +optional
	Scheme string `json:"scheme,omitempty"`
	// Host to probe instead of the address's host.
	// +optional
	Host string `json:"host,omitempty"`
	// DisableRedirect stops the probe at a redirect.
	// +optional
	DisableRedirect bool `json:"disableRedirect,omitempty"`
	// Response decides success; a 2xx status when empty.
	// +optional
	Response *ProbeResponse `json:"response,omitempty"`
}

// ProbeResponse decides whether a probe's response is a success.
type ProbeResponse struct {
	// CEL is a boolean expression over response.statusCode, response.headers,
	// response.bodyString and response.body (the body as JSON).
	// +optional
	CEL string `json:"cel,omitempty"`
}

// APIProbe checks a tool through the class's API.
type APIProbe struct {
	// Path relative to the class's API address.
	// +optional
	Path string `json:"path,omitempty"`
}

// Probe describes how to check a Connector.
type Probe struct {
	// +optional
	HTTP *HTTPProbe `json:"http,omitempty"`
	// +optional
	API *APIProbe `json:"api,omitempty"`
}

// AuthProbe checks that a credential of one auth type works.
type AuthProbe struct {
	// AuthName is the auth type this probe checks.
	// +kubebuilder:validation:MinLength=1
	AuthName string `json:"authName"`
	// Params declares the values the probe uses (a Connector gives them in spec.auth.params).
	// +optional
	Params []ParamSpec `json:"params,omitempty"`
	// +optional
	Probe Probe `json:"probe,omitempty"`
}

// ConnectorClassSpec defines a kind of tool.
type ConnectorClassSpec struct {
	// +optional
	Address *AddressSpec `json:"address,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	AddressExtensions []AddressExtensionSpec `json:"addressExtensions,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	Params []ParamSpec `json:"params,omitempty"`
	// +optional
	Auth *AuthSpec `json:"auth,omitempty"`
	// Proxy says where this class's proxy lives; empty means the built-in proxy.
	// +optional
	Proxy *ProxySpec `json:"proxy,omitempty"`
	// API is the custom API provider; empty means the built-in custom APIs, if any.
	// +optional
	API *APISpec `json:"api,omitempty"`
	// Configurations are the files the CSI driver renders.
	// +optional
	// +listType=map
	// +listMapKey=name
	Configurations []Configuration `json:"configurations,omitempty"`
	// +optional
	LivenessProbe *Probe `json:"livenessProbe,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=authName
	AuthProbes []AuthProbe `json:"authProbes,omitempty"`
}

// ConnectorClassStatus is the observed state of a ConnectorClass.
type ConnectorClassStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// API is where the class's API is served.
	// +optional
	API *ClassAPIStatus `json:"api,omitempty"`
	// Proxy is where the class's proxy is served.
	// +optional
	Proxy *ClassProxyStatus `json:"proxy,omitempty"`
}

// ClassAPIStatus is the resolved address of a class's API.
type ClassAPIStatus struct {
	// +optional
	Address *Addressable `json:"address,omitempty"`
}

// ClassProxyStatus is the resolved address of a class's proxy.
type ClassProxyStatus struct {
	// +optional
	HTTPAddress *Addressable `json:"httpAddress,omitempty"`
}

// ConnectorClass defines the parameters, auth, proxy and files of a kind of tool.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ConnectorClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ConnectorClassSpec `json:"spec,omitempty"`
	// +optional
	Status ConnectorClassStatus `json:"status,omitempty"`
}

// ConnectorClassList is a list of ConnectorClasses.
//
// +kubebuilder:object:root=true
type ConnectorClassList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ConnectorClass `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &ConnectorClass{}, &ConnectorClassList{})
}

// Configuration returns the configuration with the given name, or nil.
func (c *ConnectorClass) Configuration(name string) *Configuration {
	for i := range c.Spec.Configurations {
		if c.Spec.Configurations[i].Name == name {
			return &c.Spec.Configurations[i]
		}
	}
	return nil
}

// AuthType returns the auth type a Connector's spec.auth.name selects (the first type when the
// name is empty), or nil.
func (c *ConnectorClass) AuthType(name string) *AuthType {
	if c.Spec.Auth == nil {
		return nil
	}
	for i := range c.Spec.Auth.Types {
		if name == "" || c.Spec.Auth.Types[i].Name == name {
			return &c.Spec.Auth.Types[i]
		}
	}
	return nil
}

// AuthProbe returns the auth probe for an auth type, or nil.
func (c *ConnectorClass) AuthProbe(authName string) *AuthProbe {
	for i := range c.Spec.AuthProbes {
		if c.Spec.AuthProbes[i].AuthName == authName {
			return &c.Spec.AuthProbes[i]
		}
	}
	return nil
}

// ConnectorClass condition types (Alauda's) and the reasons nodes read.
const (
	ConditionAPIReady   = "APIReady"
	ConditionProxyReady = "ProxyReady"
	// ReasonResolved (ProxyReady, APIReady): the class's own proxy or API was resolved to
	// its status address.
	ReasonResolved = "Resolved"
	// ReasonBuiltIn (ProxyReady): the built-in proxy serves the class.
	ReasonBuiltIn = "BuiltIn"
)

// AnnotationProxyResolver says how a class's own proxy tells Connectors apart: "host" (the
// class's proxy address is each Connector's) or "path" (/namespaces/<ns>/connectors/<name>
// under it). Alauda's default is host.
const AnnotationProxyResolver = "connectors.cpaas.io/proxy-resolver"

// AnnotationAPIEscapedSlashes, "segment" on a class, says that its tool reads an escaped '/'
// or '\' (%2F, %5C) within one path segment (GitLab's group%2Fproject ids): then a Connectors
// API grant of a templated path (connectors/apis/<class>/api/v4/projects/{id}) covers such a
// segment. Without it, such a request needs a grant of the class's every path: a tool that
// decodes them before it routes (or an nginx in front of it) would run another path.
const AnnotationAPIEscapedSlashes = "connectors.cpaas.io/api-escaped-slashes"

// APIEscapedSlashesInSegment tells whether the class says its tool reads escaped slashes
// within one segment (AnnotationAPIEscapedSlashes).
func (c *ConnectorClass) APIEscapedSlashesInSegment() bool {
	return c.Annotations[AnnotationAPIEscapedSlashes] == "segment"
}

// OwnProxyURL is the address of the class's own proxy as the controller resolved it, or ""
// when the built-in proxy serves the class (or its proxy is not resolved).
func (c *ConnectorClass) OwnProxyURL() string {
	cond := meta.FindStatusCondition(c.Status.Conditions, ConditionProxyReady)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != ReasonResolved ||
		c.Status.Proxy == nil || c.Status.Proxy.HTTPAddress == nil {
		return ""
	}
	return strings.TrimSuffix(c.Status.Proxy.HTTPAddress.URL, "/")
}

// ProxyResolvesByPath tells whether the class's own proxy picks the Connector by path.
func (c *ConnectorClass) ProxyResolvesByPath() bool {
	return c.Annotations[AnnotationProxyResolver] == "path"
}

// BuiltInProxyResolvesByHost tells whether the built-in proxy, serving this class, gives each
// Connector a host of its own (c-<name>.<namespace>.svc...) instead of a path: only when the
// class asks for it with the annotation's "host".
func (c *ConnectorClass) BuiltInProxyResolvesByHost() bool {
	if c.Annotations[AnnotationProxyResolver] != "host" || c.OwnProxyURL() != "" {
		return false
	}
	// Not while the class's own proxy is unresolved: that is not the built-in one.
	cond := meta.FindStatusCondition(c.Status.Conditions, ConditionProxyReady)
	return cond == nil || cond.Reason == ReasonBuiltIn
}

// HostServicePrefix starts the name of the Service that gives a Connector its own host on the
// built-in proxy: c-<Connector name>.
const HostServicePrefix = "c-"

// HostServiceName is the name of the Service that gives the Connector named connector its own
// host, and what keeps that from being a Service's name (a dot, too long), if anything.
func HostServiceName(connector string) (name string, problems []string) {
	name = HostServicePrefix + connector
	return name, validation.IsDNS1035Label(name)
}
