package v1alpha1

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NamedAddress is a named extra address of a Connector.
type NamedAddress struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="must be a URL"
	Value string `json:"value"`
}

// SecretRef refers to a Secret.
type SecretRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace of the Secret: empty or the Connector's own. A Connector may only use Secrets
	// of its own namespace; another namespace is refused and the Secret never read.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// The other fields of an object reference, accepted for Alauda's manifests; Kind, when
	// set, must be Secret.
	// +kubebuilder:validation:Enum=Secret
	// +optional
	Kind string `json:"kind,omitempty"`
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// +optional
	UID string `json:"uid,omitempty"`
	// +optional
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// +optional
	FieldPath string `json:"fieldPath,omitempty"`
}

// ConnectorAuth selects the credential of a Connector.
type ConnectorAuth struct {
	// Name of the class's auth type.
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	SecretRef *SecretRef `json:"secretRef,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	Params []Param `json:"params,omitempty"`
}

// LocalSecretRef refers to a Secret in the Connector's namespace.
type LocalSecretRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// ConnectorSpec defines one integrated tool instance.
type ConnectorSpec struct {
	// ConnectorClassName names the ConnectorClass of this Connector.
	// +kubebuilder:validation:MinLength=1
	ConnectorClassName string `json:"connectorClassName"`
	// Address of the tool: a URL of printable ASCII without user information, fragment, quote
	// or comment characters (the admission webhook says which).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="must be a URL"
	Address string `json:"address"`
	// +optional
	// +listType=map
	// +listMapKey=name
	AddressExtensions []NamedAddress `json:"addressExtensions,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=name
	Params []Param `json:"params,omitempty"`
	// +optional
	Auth *ConnectorAuth `json:"auth,omitempty"`
	// CACertSecretRef names a Secret of the Connector's namespace with the PEM certificates of
	// a tool's private CA: keys ending in .crt or .pem, or values with a PEM header. They are
	// trusted in addition to the system roots (and the global bundle, with the feature flag
	// enable-custom-ca-certs).
	// +optional
	CACertSecretRef *LocalSecretRef `json:"caCertSecretRef,omitempty"`
}

// ProxyStatus is where the proxy serves a Connector.
type ProxyStatus struct {
	// +optional
	HTTPAddress *Addressable `json:"httpAddress,omitempty"`
}

// ConnectorAPIStatus is where the Connectors API serves a Connector.
type ConnectorAPIStatus struct {
	// Path of the Connector's API, relative to the Connectors API's address.
	// +optional
	Path string `json:"path,omitempty"`
}

// Connector condition types.
const (
	ConditionConnectorClassReady = "ConnectorClassReady"
	ConditionSecretReady         = "SecretReady"
	ConditionLivenessReady       = "LivenessReady"
	ConditionAuthReady           = "AuthReady"
	ConditionProxyServiceReady   = "ProxyServiceReady"
	ConditionReady               = "Ready"
	// ConditionCACertReady is informational (it does not count towards Ready): the
	// Connector's spec.caCertSecretRef, present only with the feature flag
	// enable-custom-ca-certs.
	ConditionCACertReady = "CACertReady"
)

// ConnectorStatus is the observed state of a Connector.
type ConnectorStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Proxy *ProxyStatus `json:"proxy,omitempty"`
	// +optional
	API *ConnectorAPIStatus `json:"api,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Connector is an integrated instance of a tool: its address and its credential.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Class",type=string,JSONPath=`.spec.connectorClassName`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Connector struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ConnectorSpec `json:"spec"`
	// +optional
	Status ConnectorStatus `json:"status,omitempty"`
}

// ConnectorList is a list of Connectors.
//
// +kubebuilder:object:root=true
type ConnectorList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Connector `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &Connector{}, &ConnectorList{})
}

// SecretOutsideNamespaceError is a Connector whose credential reference names a Secret of
// another namespace. Such a reference is never read: a tenant could otherwise send any
// namespace's credential to an address of its choosing (SPEC §4.7).
// +kubebuilder:object:generate=false
type SecretOutsideNamespaceError struct {
	Connector, Namespace, Secret string
}

func (e *SecretOutsideNamespaceError) Error() string {
	return fmt.Sprintf("Connector %s refers to Secret %s in namespace %s: a Connector may only use Secrets of its own namespace",
		e.Connector, e.Secret, e.Namespace)
}

// AuthSecretName is the name of the Connector's credential Secret, always in the Connector's
// own namespace, or "" when it has none. A reference to another namespace is an error.
func (c *Connector) AuthSecretName() (string, error) {
	if c.Spec.Auth == nil || c.Spec.Auth.SecretRef == nil {
		return "", nil
	}
	ref := c.Spec.Auth.SecretRef
	if ref.Namespace != "" && ref.Namespace != c.Namespace {
		return "", &SecretOutsideNamespaceError{Connector: c.Namespace + "/" + c.Name, Namespace: ref.Namespace, Secret: ref.Name}
	}
	return ref.Name, nil
}
