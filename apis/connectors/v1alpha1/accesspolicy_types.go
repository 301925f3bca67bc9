package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConnectorSelector selects Connectors of the policy's namespace; empty selects every one.
type ConnectorSelector struct {
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	Names []string `json:"names,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// ConfigMapRef names a ConfigMap in the system namespace.
type ConfigMapRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// TemplateRef refers to a template.
type TemplateRef struct {
	// +optional
	ConfigMap *ConfigMapRef `json:"configMap,omitempty"`
}

// RoleTemplate is a ConfigMap whose data.rules is a YAML list of RBAC PolicyRules; strings in
// them are templates over the request context (.object is the Pod, .connector the Connector).
type RoleTemplate struct {
	Ref TemplateRef `json:"ref"`
}

// NamespaceSelector selects namespaces by name or labels.
type NamespaceSelector struct {
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	Names []string `json:"names,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// ServiceAccountSelector selects ServiceAccounts; empty names means every ServiceAccount of
// the selected namespaces.
type ServiceAccountSelector struct {
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	Names []string `json:"names,omitempty"`
	// +optional
	NamespaceSelector NamespaceSelector `json:"namespaceSelector,omitempty"`
}

// BindingTemplate says who a role is bound to.
type BindingTemplate struct {
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ServiceAccounts []ServiceAccountSelector `json:"serviceAccounts,omitempty"`
}

// DefaultPermission grants proxy access at once to the selected ServiceAccounts.
type DefaultPermission struct {
	RoleTemplate    RoleTemplate    `json:"roleTemplate"`
	BindingTemplate BindingTemplate `json:"bindingTemplate"`
}

// ObjectKindRef names a kind of object and, optionally, one object of it. Name and namespace
// are templates over the request context; the namespace must come out as the Pod's (a check
// never reads another namespace).
type ObjectKindRef struct {
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// The other fields of an object reference, accepted for Alauda's manifests and not used.
	// +optional
	UID string `json:"uid,omitempty"`
	// +optional
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// +optional
	FieldPath string `json:"fieldPath,omitempty"`
}

// CheckSelector finds the objects a check reads: of a kind, in the Pod's namespace, with labels
// whose values are templates over the request context (.object is the Pod).
type CheckSelector struct {
	ObjectRef ObjectKindRef `json:"objectRef"`
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// MatchExpressions are label requirements (values are templates, as in MatchLabels).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
	// CreatedSince, a template as MatchLabels' values that renders a time (RFC 3339), leaves out
	// the objects created before it: '{{ .pipelineRun.metadata.creationTimestamp }}' reads only
	// the run's own objects, not those of an earlier run of the same name (an approved
	// ApprovalTask its PipelineRun left, deleted without its dependents, when one of that name
	// was created again).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	CreatedSince string `json:"createdSince,omitempty"`
}

// CheckState says how a matched object's state is read.
type CheckState struct {
	// CEL is an expression over `object` (the matched object) yielding one of approved, passed,
	// rejected or pending. Without it the object's status.state is read.
	// +optional
	// +kubebuilder:validation:MaxLength=8192
	CEL string `json:"cel,omitempty"`
	// Rego is a module of package approval over `input` (the matched object) whose
	// `status.state` is one of approved, passed, rejected or pending.
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	Rego string `json:"rego,omitempty"`
}

// CheckSpec is an inline check.
type CheckSpec struct {
	Selector CheckSelector `json:"selector"`
	// +optional
	State *CheckState `json:"state,omitempty"`
}

// Check must pass before access is granted: a reference to a check template ConfigMap (its
// data.check is a CheckSpec in YAML) or an inline spec.
// +kubebuilder:validation:XValidation:rule="has(self.ref) != has(self.spec)",message="set exactly one of ref and spec"
type Check struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +optional
	Ref *TemplateRef `json:"ref,omitempty"`
	// +optional
	Spec *CheckSpec `json:"spec,omitempty"`
}

// CheckGrantedPermissionSpec lists the checks and the role granted once all pass.
type CheckGrantedPermissionSpec struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Checks       []Check      `json:"checks"`
	RoleTemplate RoleTemplate `json:"roleTemplate"`
}

// CheckGrantedPermission grants access only after every check passes.
type CheckGrantedPermission struct {
	Spec CheckGrantedPermissionSpec `json:"spec"`
}

// AccessPolicySpec defines who may use which Connectors through the proxy, and when.
type AccessPolicySpec struct {
	// +optional
	Connector ConnectorSelector `json:"connector,omitempty"`
	// +optional
	DefaultPermission *DefaultPermission `json:"defaultPermission,omitempty"`
	// +optional
	CheckGrantedPermission *CheckGrantedPermission `json:"checkGrantedPermission,omitempty"`
}

// LocalObjectRef names an object in the same namespace.
type LocalObjectRef struct {
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// AccessPolicy condition types.
const (
	ConditionConnectorsMatched = "ConnectorsMatched"
	ConditionPermissionSync    = "PermissionSync"
)

// AccessPolicyStatus is the observed state of an AccessPolicy.
type AccessPolicyStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// +optional
	MatchedConnectors []LocalObjectRef `json:"matchedConnectors,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AccessPolicy defines, for the Connectors of its namespace, who may use them through the proxy
// at once (defaultPermission) and who only after checks pass (checkGrantedPermission).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AccessPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AccessPolicySpec `json:"spec,omitempty"`
	// +optional
	Status AccessPolicyStatus `json:"status,omitempty"`
}

// AccessPolicyList is a list of AccessPolicies.
//
// +kubebuilder:object:root=true
type AccessPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessPolicy `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &AccessPolicy{}, &AccessPolicyList{})
}
