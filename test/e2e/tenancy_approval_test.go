package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// The tenant-isolation tests of the approval side (SPEC §4.7): a hostile tenant creates
// Connectors, Pods and AccessPolicies (and AccessRequests) in its own namespace, nothing more.

// pipelineGate creates, in ns, the Connector prod (the git class, for tool) usable by builder,
// gated by policy promote with the built-in checks and role template.
func pipelineGate(t *testing.T, ns string) {
	t.Helper()
	tool := startGitServer(t, false)
	gitConnector(t, ns, "prod", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "prod")
	policy := gatingPolicy("promote", "prod", v1alpha1.Check{Name: "approval",
		Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-approvals-in-pipeline"}}})
	policy.Namespace = ns
	create(t, policy)
}

// publishOutcome publishes until the answer is no longer Unavailable (the controller has not
// decided yet) and returns it; the volume is unpublished when the test ends.
func publishOutcome(t *testing.T, env *proxyEnv, pod *corev1.Pod) error {
	t.Helper()
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	var err error
	kubelet.WaitUntil(20*time.Second, func() bool {
		err = env.kubelet.Publish(context.Background(), pod, "connectors")
		return status.Code(err) != codes.Unavailable
	})
	return err
}

// TestApprovalsCannotBeBorrowed: the built-in check finds the ApprovalTask of the PipelineRun
// that really runs the Pod (Pod → TaskRun → PipelineRun, by controller ownerReferences and
// UIDs), not of whatever PipelineRun the Pod's own label names.
func TestApprovalsCannotBeBorrowed(t *testing.T) {
	setupApproval(t)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")

	legit := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, legit); err != nil {
		t.Fatalf("the Pod of the approved PipelineRun: %v", err)
	}

	yes := true
	borrowers := []struct {
		name, pod string
		adjust    func(*corev1.Pod)
	}{
		{"a bare Pod labelled with the approved PipelineRun", "bare", func(p *corev1.Pod) {
			p.Labels = map[string]string{"tekton.dev/pipelineRun": "release-1"}
		}},
		{"a Pod naming the approved run's TaskRun with another UID", "forged-owner", func(p *corev1.Pod) {
			p.Labels = map[string]string{"tekton.dev/pipelineRun": "release-1"}
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "tekton.dev/v1", Kind: "TaskRun",
				Name: "release-1-promote", UID: types.UID("00000000-0000-0000-0000-000000000001"), Controller: &yes}}
		}},
	}
	for _, b := range borrowers {
		t.Run(b.name, func(t *testing.T) {
			pod := podOf(t, env.kubelet, ns, b.pod, "builder", map[string]string{"connectors": "prod"}, nil, b.adjust)
			err := publishOutcome(t, env, pod)
			want := "Pod " + ns + "/" + pod.Name + " is not run by a TaskRun of a PipelineRun (owner chain checked by UID)"
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
				t.Fatalf("publish: %v, want FailedPrecondition saying %q", err, want)
			}
		})
	}
}

// waitRequest waits until the AccessRequest's condition typ has a reason other than Pending
// (the controller decided) and returns the request.
func waitRequest(t *testing.T, key types.NamespacedName, typ string) *v1alpha1.AccessRequest {
	t.Helper()
	var ar v1alpha1.AccessRequest
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		if cp.Client.Get(context.Background(), key, &ar) != nil {
			return false
		}
		c := meta.FindStatusCondition(ar.Status.Conditions, typ)
		return c != nil && c.Reason != v1alpha1.ReasonPending
	}) {
		t.Fatalf("AccessRequest %s: %s was never decided: %+v", key, typ, ar.Status.Conditions)
	}
	return &ar
}

// TestAccessRequestSubjectComesFromThePod: an AccessRequest for a real Pod whose checks pass,
// but whose spec names another subject than the Pod's ServiceAccount, grants nothing, and
// says why; made under the name the driver would use, it fails the Pod's publish.
func TestAccessRequestSubjectComesFromThePod(t *testing.T) {
	setupApproval(t)
	env := startProxyDriver(t, nil)
	ns := newNamespace(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	forged := &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)}),
			Namespace: ns, Labels: map[string]string{
				v1alpha1.LabelAccessRequestConnector: "prod", v1alpha1.LabelContextObjectKind: "Pod",
				v1alpha1.LabelContextObjectName: pod.Name, v1alpha1.LabelContextObjectNamespace: ns}},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "intruder", Namespace: ns},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: "prod"},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, Namespace: ns, UID: pod.UID}},
		},
	}
	create(t, forged)
	ar := waitRequest(t, client.ObjectKeyFromObject(forged), v1alpha1.ConditionAccessPermissionSync)
	var rb rbacv1.RoleBinding
	if err := cp.Client.Get(context.Background(), client.ObjectKeyFromObject(forged), &rb); !apierrors.IsNotFound(err) {
		t.Errorf("a RoleBinding for the forged request exists (%v): subjects %+v", err, rb.Subjects)
	}
	for _, typ := range []string{v1alpha1.ConditionAccessPermissionSync, v1alpha1.ConditionReady} {
		c := meta.FindStatusCondition(ar.Status.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "SubjectMismatch" ||
			!strings.Contains(c.Message, ns+"/intruder") || !strings.Contains(c.Message, ns+"/builder") {
			t.Errorf("%s: %+v, want False/SubjectMismatch naming %s/intruder and %s/builder", typ, c, ns, ns)
		}
	}
	if err := publishOutcome(t, env, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "is not the Pod's ServiceAccount") {
		t.Errorf("publish with the forged request: %v, want FailedPrecondition naming the subject mismatch", err)
	}
}
