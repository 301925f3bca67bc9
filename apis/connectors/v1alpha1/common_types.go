package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
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
}

// Param is a named parameter value.
type Param struct {
	// Name of the parameter.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Value of the parameter: a string, an array or an object.
	Value apiextensionsv1.JSON `json:"value"`
}

// ObjectRef refers to an object by kind, name and namespace.
type ObjectRef struct {
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// +optional
	Kind string `json:"kind,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}
