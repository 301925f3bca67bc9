package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// waitPolicy waits until an AccessPolicy's Ready condition has the status and reason.
func waitPolicy(t *testing.T, ns, name string, ready metav1.ConditionStatus, reason string) *v1alpha1.AccessPolicy {
	t.Helper()
	return waitObjectCondition(t, &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		func(p *v1alpha1.AccessPolicy) []metav1.Condition { return p.Status.Conditions }, v1alpha1.ConditionReady, ready, reason)
}

func roleRef(name string) v1alpha1.RoleTemplate {
	return v1alpha1.RoleTemplate{Ref: v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: name}}}
}

func gatingPolicy(name, connector string, check v1alpha1.Check) *v1alpha1.AccessPolicy {
	return &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.AccessPolicySpec{
			Connector: v1alpha1.ConnectorSelector{Names: []string{connector}},
			CheckGrantedPermission: &v1alpha1.CheckGrantedPermission{Spec: v1alpha1.CheckGrantedPermissionSpec{
				Checks: []v1alpha1.Check{check}, RoleTemplate: roleRef("connectors-use-connectors-proxy-in-pod")}},
		}}
}

func TestDefaultPermissionAndBadPolicies(t *testing.T) {
	tool := startGitServer(t, false)
	setupApproval(t)
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	for _, c := range []string{"shared", "guarded-cm", "guarded-kind", "guarded-cel"} {
		gitConnector(t, ns, c, git, tool)
	}
	allowConnectors(t, ns, "allowed", "shared")
	allowConnectors(t, ns, "other", "shared", "guarded-cm", "guarded-kind", "guarded-cel")
	create(t, defaultPolicy(ns, "everyday", "shared", "allowed", v1alpha1.NamespaceSelector{Names: []string{ns}}))
	p := waitPolicy(t, ns, "everyday", metav1.ConditionTrue, "Ready")
	if len(p.Status.MatchedConnectors) != 1 || p.Status.MatchedConnectors[0].Name != "shared" {
		t.Fatalf("matchedConnectors %v", p.Status.MatchedConnectors)
	}

	t.Run("defaultPermission: the named ServiceAccount publishes and proxies at once", func(t *testing.T) {
		pod := podOf(t, env.kubelet, ns, "allowed-pod", "allowed", map[string]string{"connectors": "shared"}, nil)
		var err error
		if !kubelet.WaitUntil(15*time.Second, func() bool { err = env.kubelet.Publish(ctx, pod, "connectors"); return err == nil }) {
			t.Fatalf("publish: %v", err)
		}
		token := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
		refs := fmt.Sprintf("%s/namespaces/%s/connectors/shared/repo.git/info/refs?service=git-upload-pack", env.proxyURL, ns)
		if code, body := do(t, noRedirects, newRequest(t, "GET", refs, map[string]string{"Authorization": "Bearer " + token})); code != 200 {
			t.Fatalf("proxy: %d %s", code, body)
		}
		_ = env.kubelet.Unpublish(ctx, pod, "connectors")
	})
	t.Run("defaultPermission: other ServiceAccounts are refused", func(t *testing.T) {
		pod := podOf(t, env.kubelet, ns, "other-pod", "other", map[string]string{"connectors": "shared"}, nil)
		err := env.kubelet.Publish(ctx, pod, "connectors")
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "connectors/proxy") {
			t.Fatalf("publish: %v, want PermissionDenied naming connectors/proxy", err)
		}
	})

	bad := []struct {
		policy  *v1alpha1.AccessPolicy
		reason  string
		message string
	}{
		{gatingPolicy("unknown-configmap", "guarded-cm", v1alpha1.Check{Name: "c", Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "no-such-check"}}}),
			"InvalidCheck", "no-such-check"},
		{gatingPolicy("invalid-cel", "guarded-cel", v1alpha1.Check{Name: "c", Spec: &v1alpha1.CheckSpec{
			Selector: v1alpha1.CheckSelector{ObjectRef: v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"}},
			State:    &v1alpha1.CheckState{CEL: "object.status.state =="}}}),
			"InvalidCheck", "invalid CEL"},
		{gatingPolicy("unknown-kind", "guarded-kind", v1alpha1.Check{Name: "c", Spec: &v1alpha1.CheckSpec{
			Selector: v1alpha1.CheckSelector{ObjectRef: v1alpha1.ObjectKindRef{APIVersion: "example.com/v1", Kind: "NoSuchKind"}}}}),
			"Ready", ""},
	}
	for _, tc := range bad {
		tc.policy.Namespace = ns
		create(t, tc.policy)
		p := waitPolicy(t, ns, tc.policy.Name, map[bool]metav1.ConditionStatus{true: metav1.ConditionTrue, false: metav1.ConditionFalse}[tc.reason == "Ready"], tc.reason)
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, tc.message) {
			t.Errorf("policy %s: Ready message %q lacks %q", tc.policy.Name, c.Message, tc.message)
		}
	}
	for connector, want := range map[string]string{"guarded-cm": "no-such-check", "guarded-cel": "invalid CEL", "guarded-kind": "NoSuchKind"} {
		t.Run("bad policy never grants: "+connector, func(t *testing.T) {
			pod := podOf(t, env.kubelet, ns, "pod-"+connector, "other", map[string]string{"connectors": connector}, nil)
			var err error
			if !kubelet.WaitUntil(20*time.Second, func() bool {
				err = env.kubelet.Publish(ctx, pod, "connectors")
				return status.Code(err) == codes.FailedPrecondition
			}) {
				t.Fatalf("publish: %v, want FailedPrecondition", err)
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "AccessRequest") {
				t.Fatalf("publish error %q does not name the AccessRequest and %q", err, want)
			}
		})
	}
}

// TestNamespaceChangesReachOnlyPoliciesSelectingThem: a namespace created with a label that a
// defaultPermission's bindingTemplate selects joins that policy's RoleBinding, and reconciles no
// policy whose subjects do not depend on namespace labels, nor one whose labels do not select it
// (each policy reconciled reads its
// grant from the API server: every namespace created in a cluster of a thousand policies would
// cost two thousand reads). The controller as deployed, its reads from the audit log.
func TestNamespaceChangesReachOnlyPoliciesSelectingThem(t *testing.T) {
	setupApproval(t)
	startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	gitConnector(t, ns, "shared", gitClass(t), startGitServer(t, false))
	team := "team-" + rand.String(6)
	create(t, defaultPolicy(ns, "by-label", "shared", "builder", v1alpha1.NamespaceSelector{MatchLabels: map[string]string{"e2e.example/team": team}}))
	create(t, defaultPolicy(ns, "other-team", "shared", "builder", v1alpha1.NamespaceSelector{MatchLabels: map[string]string{"e2e.example/team": team + "-other"}}))
	gate := gatingPolicy("gate", "shared", pipelineCheck)
	gate.Namespace = ns
	create(t, gate)
	for _, name := range []string{"by-label", "other-team", "gate"} {
		waitPolicy(t, ns, name, metav1.ConditionTrue, "Ready")
	}
	// The status controller labels the Connector with its class (before its status), which
	// reconciles the policies selecting it: done before the count settles.
	waitCondition(t, ns, "shared", v1alpha1.ConditionConnectorClassReady, metav1.ConditionTrue, "Found")

	start := time.Now()
	gateReads := func() int {
		events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.ControllerUser && ev.ObjectRef != nil && ev.ObjectRef.Namespace == ns &&
				(ev.ObjectRef.Name == "connectors-default-gate" || ev.ObjectRef.Name == "connectors-default-other-team") &&
				!ev.RequestReceivedTimestamp.Time.Before(start)
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(events)
	}
	// The policies' own status writes reconcile them once more; the count starts after.
	var settled int
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		before := gateReads()
		time.Sleep(500 * time.Millisecond)
		settled = gateReads()
		return before == settled
	}) {
		t.Fatal("the policies' reconciles did not settle")
	}

	joined := "t-" + rand.String(8)
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: joined, Labels: map[string]string{"e2e.example/team": team}}})
	t.Cleanup(func() {
		_ = cp.Client.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: joined}})
	})
	var rb rbacv1.RoleBinding
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		if err := cp.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "connectors-default-by-label"}, &rb); err != nil {
			return false
		}
		return slices.ContainsFunc(rb.Subjects, func(s rbacv1.Subject) bool { return s.Namespace == joined && s.Name == "builder" })
	}) {
		t.Fatalf("the labelled namespace %s did not join the policy's RoleBinding: %v", joined, rb.Subjects)
	}
	if n := gateReads() - settled; n != 0 {
		t.Errorf("a namespace created had the policies gate (which selects no namespace by label) or other-team (whose labels it lacks) reconciled: %d reads of their grants", n)
	}
}

// TestAPolicyIsNotReconciledForItsOwnStatus: the policy controller writes a policy's status;
// that write, nor anyone's to the status alone, reconciles it again (each reconcile reads its
// default grant from the API server, and one for each policy changed is enough). Its spec
// changes do. The controller as deployed, its reads of the policies' grants from the audit log:
// one reconcile, two reads (a gating policy's, whose status then says it has none, at its first).
func TestAPolicyIsNotReconciledForItsOwnStatus(t *testing.T) {
	setupApproval(t)
	startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	gitConnector(t, ns, "shared", gitClass(t), startGitServer(t, false))
	// The status controller labels the Connector with its class, which reconciles the policies
	// selecting it: done before the count starts.
	waitCondition(t, ns, "shared", v1alpha1.ConditionConnectorClassReady, metav1.ConditionTrue, "Found")
	start := time.Now()
	gate := gatingPolicy("gate", "shared", pipelineCheck)
	gate.Namespace = ns
	create(t, gate)
	create(t, defaultPolicy(ns, "builders", "shared", "builder", v1alpha1.NamespaceSelector{Names: []string{ns}}))
	for _, name := range []string{"gate", "builders"} {
		waitPolicy(t, ns, name, metav1.ConditionTrue, "Ready")
	}
	time.Sleep(time.Second) // a reconcile of its own status write would come within it
	reads := func(policy string) int {
		events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.ControllerUser && ev.Verb == "get" && ev.ObjectRef != nil && ev.ObjectRef.Namespace == ns &&
				ev.ObjectRef.Name == "connectors-default-"+policy && !ev.RequestReceivedTimestamp.Time.Before(start)
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(events)
	}
	// A gating policy's grant is read at its first reconcile only (its status says none after).
	for _, policy := range []string{"builders", "gate"} {
		if n := reads(policy); n != 2 {
			t.Errorf("the new policy %s's grant was read %d times, want 2 (its Role and RoleBinding, once)", policy, n)
		}
	}
}

// defaultPolicy is a policy name of ns whose defaultPermission lets ServiceAccount sa of the
// namespaces selected use Connector connector through the proxy.
func defaultPolicy(ns, name, connector, sa string, namespaces v1alpha1.NamespaceSelector) *v1alpha1.AccessPolicy {
	return &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.AccessPolicySpec{
			Connector: v1alpha1.ConnectorSelector{Names: []string{connector}},
			DefaultPermission: &v1alpha1.DefaultPermission{RoleTemplate: roleRef("connectors-use-connectors-proxy"),
				BindingTemplate: v1alpha1.BindingTemplate{ServiceAccounts: []v1alpha1.ServiceAccountSelector{{
					Names: []string{sa}, NamespaceSelector: namespaces}}}},
		}}
}
