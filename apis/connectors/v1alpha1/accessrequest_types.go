package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels of an AccessRequest, for selecting the requests of a Connector or a Pod.
const (
	LabelAccessRequestConnector = "connectors.cpaas.io/connector"
	LabelContextObjectKind      = "connectors.cpaas.io/contextObjectKind"
	LabelContextObjectName      = "connectors.cpaas.io/contextObjectName"
	LabelContextObjectNamespace = "connectors.cpaas.io/contextObjectNamespace"
	// LabelNode is the node whose volume made the request: each node watches only its own.
	LabelNode = "connectors.cpaas.io/node"
)

// AccessRequest condition types and reasons (SPEC §2.4).
const (
	ConditionContextObjectValid   = "ContextObjectValid"
	ConditionConnectorResolved    = "ConnectorResolved"
	ConditionAccessPolicyMatched  = "AccessPolicyMatched"
	ConditionAccessCheckReady     = "AccessCheckReady"
	ConditionAccessPermissionSync = "AccessPermissionSync"

	ReasonPassed               = "Passed"
	ReasonPending              = "Pending"
	ReasonRejected             = "Rejected"
	ReasonFailed               = "Failed"
	ReasonSynced               = "Synced"
	ReasonSyncFailed           = "SyncFailed"
	ReasonPermissionCleanUp    = "PermissionCleanUp"
	ReasonNoPermissionRequired = "NoPermissionRequired"
	// ReasonSubjectMismatch (AccessPermissionSync, Ready): spec.subject is not the Pod's
	// ServiceAccount; nothing is granted.
	ReasonSubjectMismatch = "SubjectMismatch"
	// ReasonConnectorNotMounted (AccessPermissionSync, Ready): the Pod has no volume of the
	// driver naming the request's Connector, so no node asked for it; nothing is evaluated or
	// granted.
	ReasonConnectorNotMounted = "ConnectorNotMounted"
	// ReasonInvalidRoleTemplate (AccessPermissionSync, Ready; an AccessPolicy's PermissionSync
	// and Ready): the role template does not render, or renders a rule outside the allow-list.
	ReasonInvalidRoleTemplate = "InvalidRoleTemplate"
	// ReasonGranting (AccessPermissionSync, Unknown): the grant is being written. It is
	// recorded before the grant exists, so that a request's status never says it holds no
	// grant while it may hold one (the proxy relies on that to tell whose a Pod-scoped grant is).
	ReasonGranting = "Granting"
	// ReasonPoliciesTooLarge (AccessPolicyMatched, Ready): the policies that select the
	// Connector are larger together than a request records; nothing is granted.
	ReasonPoliciesTooLarge = "PoliciesTooLarge"
)

// Check states.
const (
	StateApproved = "approved"
	StatePassed   = "passed"
	StateRejected = "rejected"
	StatePending  = "pending"
)

// A request's strings are bounded (the subject's and the Connector's name too), so that a
// request is small: every node keeps those labelled for it, and whoever may write
// AccessRequests could otherwise fill a node's memory with a few hundred of a megabyte each.

// ContextObjectRef identifies the object a request is made for: the Pod.
type ContextObjectRef struct {
	// +kubebuilder:validation:MaxLength=256
	APIVersion string `json:"apiVersion"`
	// +kubebuilder:validation:Enum=Pod
	Kind string `json:"kind"`
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// UID of the Pod; a request without it never grants (Alauda's schema lets it out).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=128
	UID types.UID `json:"uid,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=256
	FieldPath string `json:"fieldPath,omitempty"`
}

// AccessContext is the context of a request.
type AccessContext struct {
	ObjectRef ContextObjectRef `json:"objectRef"`
}

// AccessRequestSpec is one workload's request to use one Connector. It never changes.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
// +kubebuilder:validation:XValidation:rule="size(self.subject.kind) <= 63 && size(self.subject.name) <= 253 && (!has(self.subject.apiGroup) || size(self.subject.apiGroup) <= 253) && (!has(self.subject.__namespace__) || size(self.subject.__namespace__) <= 63)",message="subject: kind at most 63 characters, name 253, apiGroup 253, namespace 63"
type AccessRequestSpec struct {
	// Subject is the Pod's ServiceAccount.
	Subject      rbacv1.Subject `json:"subject"`
	ConnectorRef LocalObjectRef `json:"connectorRef"`
	Context      AccessContext  `json:"context"`
}

// CheckObjectRef names a matched check object.
type CheckObjectRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
}

// MatchedCheck is the state of one check of a policy.
type MatchedCheck struct {
	Name string `json:"name"`
	// Ref is the matched object (Alauda's field; ObjectRef is the same, kept for readers of
	// earlier versions).
	// +optional
	Ref *corev1.ObjectReference `json:"ref,omitempty"`
	// Condition is the check's result: Ready True (approved or passed), False (rejected) or
	// Unknown (pending), the state as reason.
	// +optional
	Condition *Condition `json:"condition,omitempty"`
	// +optional
	ObjectRef *CheckObjectRef `json:"objectRef,omitempty"`
	// +optional
	State string `json:"state,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// PolicyStatus is what one matched policy says about the request.
type PolicyStatus struct {
	Name string `json:"name"`
	// PolicySpec is the policy as it was when it first matched.
	// +optional
	PolicySpec *AccessPolicySpec `json:"policySpec,omitempty"`
	// +optional
	MatchedChecks []MatchedCheck `json:"matchedChecks,omitempty"`
	// +optional
	PermissionSync *metav1.Condition `json:"permissionSync,omitempty"`
}

// AccessRequestStatus is the observed state of an AccessRequest.
type AccessRequestStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// +optional
	Policies []PolicyStatus `json:"policies,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AccessRequest records one Pod's attempt to use one Connector through the proxy: the policies
// that matched, the state of their checks, and the temporary permission.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Connector",type=string,JSONPath=`.spec.connectorRef.name`
// +kubebuilder:printcolumn:name="Subject",type=string,JSONPath=`.spec.subject.name`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.context.objectRef.name`
// +kubebuilder:printcolumn:name="Check",type=string,JSONPath=`.status.conditions[?(@.type=="AccessCheckReady")].reason`
// +kubebuilder:printcolumn:name="Permission",type=string,JSONPath=`.status.conditions[?(@.type=="AccessPermissionSync")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AccessRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AccessRequestSpec `json:"spec"`
	// +optional
	Status AccessRequestStatus `json:"status,omitempty"`
}

// AccessRequestList is a list of AccessRequests.
//
// +kubebuilder:object:root=true
type AccessRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessRequest `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &AccessRequest{}, &AccessRequestList{})
}
