package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
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
