package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ParamType is the type of a parameter value.
// +kubebuilder:validation:Enum=string;array;object
type ParamType string

// Parameter types.
const (
	ParamTypeString ParamType = "string"
	ParamTypeArray  ParamType = "array"
	ParamTypeObject ParamType = "object"
)

// ParamSpec declares a parameter. A parameter without a default is required.
type ParamSpec struct {
	// Name of the parameter.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Type of the value; string when empty.
	// +optional
	Type ParamType `json:"type,omitempty"`
	// Default value; when absent the parameter is required.
	// +optional
	Default *apiextensionsv1.JSON `json:"default,omitempty"`
	// Description for people.
	// +optional
	Description string `json:"description,omitempty"`
	// Enum lists the allowed string values, when not empty.
	// +optional
	Enum []string `json:"enum,omitempty"`
	// Properties declares the keys of an object parameter and their types (for UIs).
	// +optional
	Properties map[string]PropertySpec `json:"properties,omitempty"`
	// Annotations for UIs and other tools.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PropertySpec is the type of one key of an object parameter.
type PropertySpec struct {
	// +optional
	Type ParamType `json:"type,omitempty"`
}

// Param is a named parameter value.
type Param struct {
	// Name of the parameter.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Value of the parameter: a string, an array or an object.
	Value apiextensionsv1.JSON `json:"value"`
}

// Reference points at an addressable object, such as a Service (the shape of Knative's
// KReference, which Alauda's classes use).
type Reference struct {
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace of the object; the system namespace when empty.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Group of the object, an alternative to APIVersion.
	// +optional
	Group string `json:"group,omitempty"`
	// Address names one of the object's addresses.
	// +optional
	Address string `json:"address,omitempty"`
}

// Destination is where a class's own proxy or API lives: a referenced object (a Service),
// a URI, or a URI relative to the referenced object.
type Destination struct {
	// +optional
	Ref *Reference `json:"ref,omitempty"`
	// +optional
	URI string `json:"uri,omitempty"`
	// CACerts are PEM CA certificates to trust for the destination.
	// +optional
	CACerts string `json:"CACerts,omitempty"`
	// Audience is the audience of tokens sent to the destination.
	// +optional
	Audience string `json:"audience,omitempty"`
}

// RegoPolicy is an Open Policy Agent Rego module.
type RegoPolicy struct {
	// +optional
	Rego string `json:"rego,omitempty"`
}

// Addressable is one address of a class's proxy or API, as resolved by the controller.
type Addressable struct {
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	URL string `json:"url,omitempty"`
	// +optional
	CACerts string `json:"CACerts,omitempty"`
	// +optional
	Audience string `json:"audience,omitempty"`
}

// Condition is a condition of the shape Knative's duck types use (Alauda's check results).
type Condition struct {
	// +kubebuilder:validation:MinLength=1
	Type string `json:"type"`
	// +kubebuilder:validation:Enum=True;False;Unknown
	Status metav1.ConditionStatus `json:"status"`
	// Severity of a False condition: Error (when empty), Warning or Info.
	// +optional
	Severity string `json:"severity,omitempty"`
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}
