// Package v1alpha1 holds the connectors.alauda.io/v1alpha1 API types. The CRDs under
// deploy/crds and zz_generated.deepcopy.go are generated from these types by controller-gen
// (`make generate`); never edit them by hand.
//
// +kubebuilder:object:generate=true
// +groupName=connectors.alauda.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "connectors.alauda.io", Version: "v1alpha1"}

var (
	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// knownTypes are added to the scheme by each type file's init.
var knownTypes []runtime.Object

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, knownTypes...)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Resource names, as used in RBAC rules and SubjectAccessReviews.
const (
	ResourceConnectors       = "connectors"
	ResourceConnectorClasses = "connectorclasses"
)

// LabelConnectorClass is kept on every Connector so that policies can select by class.
const LabelConnectorClass = "connectors.alauda.io/connectorclass"
