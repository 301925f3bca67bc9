package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels of ResourceInterfaces, read by pipeline UIs.
const (
	// LabelResourceInterfaceCategory groups interfaces that offer the same attributes and
	// workspaces (GitCodeRepository, OCIArtifact, MavenRepository, …).
	LabelResourceInterfaceCategory = "resourceinterface.connectors.cpaas.io/category"
	// LabelResourceInterfaceSchemaVersion is the UI rendering capability an interface needs
	// ("1" when absent).
	LabelResourceInterfaceSchemaVersion = "resourceinterface.connectors.cpaas.io/schema-version"
)

// Parameterize says how an attribute becomes a pipeline parameter.
type Parameterize struct {
	// Name of the pipeline parameter the attribute becomes by default.
	// +optional
	Name string `json:"name,omitempty"`
	// Disable keeps the attribute from becoming a pipeline parameter.
	// +optional
	Disable bool `json:"disable,omitempty"`
}

// ResourceInterfaceAttributeSpec is a value computed from the params and the Connector for a
// pipeline (a URL, a list of image references, …).
type ResourceInterfaceAttributeSpec struct {
	// The declaration of the value (name, type, default, enum, …), as a param's.
	ParamSpec `json:",inline"`
	// Expression computes the value from `connector` and `params` (evaluated by the pipeline
	// UI, not by this project).
	// +optional
	Expression string `json:"expression,omitempty"`
	// Parameterize says how the attribute becomes a pipeline parameter.
	// +optional
	Parameterize *Parameterize `json:"parameterize,omitempty"`
	// DependsOn names the params (params.<name>) or the connector the value depends on.
	// +optional
	DependsOn []string `json:"dependsOn,omitempty"`
}

// WorkspaceMapping says how a workspace is named in a pipeline.
type WorkspaceMapping struct {
	// Name of the pipeline workspace by default.
	// +optional
	Name string `json:"name,omitempty"`
}

// WorkspaceValue is the volume a workspace is bound to: the volume sources of a Tekton
// workspace binding.
type WorkspaceValue struct {
	// SubPath within the volume.
	// +optional
	SubPath string `json:"subPath,omitempty"`
	// VolumeClaimTemplate is a claim created for each run.
	// +optional
	VolumeClaimTemplate *corev1.PersistentVolumeClaim `json:"volumeClaimTemplate,omitempty"`
	// +optional
	PersistentVolumeClaim *corev1.PersistentVolumeClaimVolumeSource `json:"persistentVolumeClaim,omitempty"`
	// +optional
	EmptyDir *corev1.EmptyDirVolumeSource `json:"emptyDir,omitempty"`
	// +optional
	ConfigMap *corev1.ConfigMapVolumeSource `json:"configMap,omitempty"`
	// +optional
	Secret *corev1.SecretVolumeSource `json:"secret,omitempty"`
	// +optional
	Projected *corev1.ProjectedVolumeSource `json:"projected,omitempty"`
	// CSI is the usual value: a connectors-csi volume of the Connector.
	// +optional
	CSI *corev1.CSIVolumeSource `json:"csi,omitempty"`
}

// ResourceInterfaceWorkspaceSpec is a workspace the interface offers a pipeline.
type ResourceInterfaceWorkspaceSpec struct {
	// Name of the workspace.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Description for people.
	// +optional
	Description string `json:"description,omitempty"`
	// Annotations for UIs and other tools.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// WorkspaceMapping says how the workspace is named in a pipeline.
	// +optional
	WorkspaceMapping *WorkspaceMapping `json:"workspaceMapping,omitempty"`
	// Value is the volume the workspace is bound to.
	// +optional
	Value *WorkspaceValue `json:"value,omitempty"`
}

// ConfigurationEntry is one switch of a ResourceInterface's configuration.
type ConfigurationEntry struct {
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// +optional
	Description string `json:"description,omitempty"`
}

// ResourceInterfaceConfigurations are switches passed to the pipeline integrations made from
// the interface.
type ResourceInterfaceConfigurations struct {
	// MultipleMergeConnectors lets an integration merge several Connectors into one workspace
	// (the csi volume's `connectors` attribute).
	// +optional
	MultipleMergeConnectors *ConfigurationEntry `json:"multipleMergeConnectors,omitempty"`
}

// ResourceInterfaceSpec describes a kind of external resource for pipelines: the params a
// person gives, the attributes computed from them and the Connector, and the workspaces.
type ResourceInterfaceSpec struct {
	// Params a pipeline integration asks for.
	// +optional
	// +listType=atomic
	Params []ParamSpec `json:"params,omitempty"`
	// Attributes computed from the params and the Connector.
	// +optional
	Attributes []ResourceInterfaceAttributeSpec `json:"attributes,omitempty"`
	// Workspaces offered to a pipeline.
	// +optional
	Workspaces []ResourceInterfaceWorkspaceSpec `json:"workspaces,omitempty"`
	// +optional
	Configurations *ResourceInterfaceConfigurations `json:"configurations,omitempty"`
}

// ResourceInterface describes how a kind of external resource (a Git repository, an OCI
// artifact, a Maven repository) is used by pipelines through a Connector. Pipeline UIs read it;
// no controller of this project acts on it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=alauda
// +kubebuilder:printcolumn:name="Category",type=string,JSONPath=`.metadata.labels.resourceinterface\.connectors\.cpaas\.io/category`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ResourceInterface struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec ResourceInterfaceSpec `json:"spec,omitempty"`
}

// ResourceInterfaceList is a list of ResourceInterfaces.
//
// +kubebuilder:object:root=true
type ResourceInterfaceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResourceInterface `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &ResourceInterface{}, &ResourceInterfaceList{})
}
