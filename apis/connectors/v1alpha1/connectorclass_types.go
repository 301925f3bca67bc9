package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AddressSpec declares the address parameter of a ConnectorClass.
type AddressSpec struct {
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
	// +optional
	Default string `json:"default,omitempty"`
	// +optional
	Description string `json:"description,omitempty"`
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
	// SecretType is the type of the Secret holding the credential.
	// +kubebuilder:validation:MinLength=1
	SecretType string `json:"secretType"`
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

// ServiceRef points at a service: an object reference or a URI.
type ServiceRef struct {
	// +optional
	Ref *ObjectRef `json:"ref,omitempty"`
	// +optional
	URI string `json:"uri,omitempty"`
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
}

// HTTPHeader is a header sent by a probe.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPProbe checks a tool over HTTP.
type HTTPProbe struct {
	// +optional
	Path string `json:"path,omitempty"`
	// +optional
	Method string `json:"method,omitempty"`
	// +optional
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
	// +optional
	Scheme string `json:"scheme,omitempty"`
}

// Probe describes how to check a Connector.
type Probe struct {
	// +optional
	HTTP *HTTPProbe `json:"http,omitempty"`
}

// AuthProbe checks that a credential of one auth type works.
type AuthProbe struct {
	// AuthName is the auth type this probe checks.
	// +optional
	AuthName string `json:"authName,omitempty"`
	// +optional
	Probe `json:",inline"`
	// +optional
	Params []Param `json:"params,omitempty"`
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
	Proxy *ServiceRef `json:"proxy,omitempty"`
	// API is the custom API provider; empty means the built-in custom APIs, if any.
	// +optional
	API *ServiceRef `json:"api,omitempty"`
	// Configurations are the files the CSI driver renders.
	// +optional
	// +listType=map
	// +listMapKey=name
	Configurations []Configuration `json:"configurations,omitempty"`
	// +optional
	LivenessProbe *Probe `json:"livenessProbe,omitempty"`
	// +optional
	AuthProbes []AuthProbe `json:"authProbes,omitempty"`
}

// ConnectorClassStatus is the observed state of a ConnectorClass.
type ConnectorClassStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConnectorClass defines the parameters, auth, proxy and files of a kind of tool.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
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
