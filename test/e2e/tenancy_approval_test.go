package e2e

import (
	"context"
	"fmt"
	"net/http"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// The tenant-isolation tests of the approval side (SPEC §4.7): a hostile tenant creates
// Connectors, Pods and AccessPolicies (and AccessRequests) in its own namespace, nothing more.

// pipelineCheck is the built-in check: the approval of the Pod's PipelineRun.
var pipelineCheck = v1alpha1.Check{Name: "approval", Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-approvals-in-pipeline"}}}

// podRole is the built-in role template: connectors/proxy for the one Pod.
const podRole = "connectors-use-connectors-proxy-in-pod"

// pipelineGate creates, in ns, the Connector prod (the git class, for a Git server) usable by
// builder, gated by policy prod with the built-in check and role template.
func pipelineGate(t *testing.T, ns string) {
	t.Helper()
	gatedConnector(t, ns, "prod", gitClass(t), startGitServer(t, false), pipelineCheck, podRole)
}

// gatedConnector creates a git Connector usable (get) by builder and gated by a policy of the
// same name with check and roleTemplate.
func gatedConnector(t *testing.T, ns, name, class string, tool *gitserver.Server, check v1alpha1.Check, roleTemplate string) {
	t.Helper()
	gitConnector(t, ns, name, class, tool)
	allowConnectorsAs(t, ns, "builder", "use-"+name, name)
	policy := gatingPolicy(name, name, check)
	policy.Namespace = ns
	policy.Spec.CheckGrantedPermission.Spec.RoleTemplate = roleRef(roleTemplate)
	create(t, policy)
}

// roleTemplate creates a role template ConfigMap in the system namespace for the test.
func roleTemplate(t *testing.T, name, rules string) string {
	t.Helper()
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: systemNS}, Data: map[string]string{"rules": rules}})
	t.Cleanup(func() {
		_ = cp.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: systemNS}})
	})
	return name
}

// approvalEnv sets up approval (setupApproval), starts a driver with its proxy and makes the
// test's namespace.
func approvalEnv(t *testing.T) (*proxyEnv, string) {
	t.Helper()
	setupApproval(t)
	return startProxyDriver(t, nil), newNamespace(t)
}

// waitRevoked waits until the AccessRequest's grant is revoked (PermissionCleanUp) and checks
// that its Role and RoleBinding are gone.
func waitRevoked(t *testing.T, key types.NamespacedName) {
	t.Helper()
	var ar v1alpha1.AccessRequest
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		if cp.Client.Get(context.Background(), key, &ar) != nil {
			return false
		}
		c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
		return c != nil && c.Reason == v1alpha1.ReasonPermissionCleanUp
	}) {
		t.Fatalf("AccessRequest %s was not revoked: %+v", key, ar.Status.Conditions)
	}
	for _, p := range ar.Status.Policies {
		if p.PolicySpec != nil {
			t.Errorf("revoked AccessRequest %s keeps the spec of policy %s", key, p.Name)
		}
	}
	for _, obj := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if err := cp.Client.Get(context.Background(), key, obj); !apierrors.IsNotFound(err) {
			t.Errorf("the %T of revoked AccessRequest %s is still there: %v", obj, key, err)
		}
	}
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
	env, ns := approvalEnv(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")

	legit := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, legit); err != nil {
		t.Fatalf("the Pod of the approved PipelineRun: %v", err)
	}
	// The TaskRun records its Pod, as Tekton does once it made it.
	taskRun := tektonRun("TaskRun", ns, "release-1-promote", nil)
	if err := cp.Client.Get(context.Background(), client.ObjectKeyFromObject(taskRun), taskRun); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(taskRun.Object, legit.Name, "status", "podName"); err != nil {
		t.Fatal(err)
	}
	if err := cp.Client.Update(context.Background(), taskRun); err != nil {
		t.Fatal(err)
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
		// Its UID is readable by whoever may get TaskRuns; the TaskRun's record is not theirs.
		{"a bare Pod naming the approved run's TaskRun by its UID", "borrowed-owner", func(p *corev1.Pod) {
			p.Labels = map[string]string{"tekton.dev/pipelineRun": "release-1"}
			p.OwnerReferences = []metav1.OwnerReference{controllerRef(taskRun)}
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

	// The run is over and its Pod gone: a bare Pod of the recorded name, naming the TaskRun by
	// its UID, is not the run's.
	t.Run("a bare Pod of the finished run's recorded name", func(t *testing.T) {
		if err := unstructured.SetNestedField(taskRun.Object, time.Now().UTC().Format(time.RFC3339), "status", "completionTime"); err != nil {
			t.Fatal(err)
		}
		if err := cp.Client.Update(context.Background(), taskRun); err != nil {
			t.Fatal(err)
		}
		_ = env.kubelet.Unpublish(context.Background(), legit, "connectors")
		zero := int64(0)
		if err := cp.Client.Delete(context.Background(), legit, &client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			return apierrors.IsNotFound(cp.Client.Get(context.Background(), client.ObjectKeyFromObject(legit), &corev1.Pod{}))
		}) {
			t.Fatal("the run's Pod was not deleted")
		}
		pod := podOf(t, env.kubelet, ns, legit.Name, "builder", map[string]string{"connectors": "prod"}, nil, func(p *corev1.Pod) {
			p.Labels = map[string]string{"tekton.dev/pipelineRun": "release-1"}
			p.OwnerReferences = []metav1.OwnerReference{controllerRef(taskRun)}
		})
		err := publishOutcome(t, env, pod)
		want := "Pod " + ns + "/" + pod.Name + " is not run by a TaskRun of a PipelineRun (owner chain checked by UID)"
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
			t.Fatalf("publish: %v, want FailedPrecondition saying %q", err, want)
		}
	})
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
	env, ns := approvalEnv(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	forged := podRequest("prod", pod, "intruder")
	forged.Labels = map[string]string{
		v1alpha1.LabelAccessRequestConnector: "prod", v1alpha1.LabelContextObjectKind: "Pod",
		v1alpha1.LabelContextObjectName: pod.Name, v1alpha1.LabelContextObjectNamespace: ns}
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
	// The node does not take another's request of its name for the Pod's
	// (TestTenancyAForeignRequestOfTheNameIsNotUsed).
	if err := publishOutcome(t, env, pod); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), forged.Name+" exists and asks for another Connector, subject or Pod") {
		t.Errorf("publish with the forged request: %v, want PermissionDenied naming the forged request", err)
	}
}

// TestTenancyARequestForAnotherNamespacesPodIsNotEvaluated: anyone who may create
// AccessRequests in their own namespace could name another namespace's Pod in one (its name,
// UID and ServiceAccount are no secret to many), for a Connector and a policy of their own:
// evaluated, its checks would read the Pod's namespace (its ApprovalTasks, through the writer's
// own check) and report on them in the request's status. The Pod has no volume naming that
// Connector, so no node asked for the request: it is refused, unevaluated, and grants nothing,
// while the Pod's own request is evaluated as ever.
func TestTenancyARequestForAnotherNamespacesPodIsNotEvaluated(t *testing.T) {
	env, victim := approvalEnv(t)
	pipelineGate(t, victim)
	approvalTask(t, victim, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, victim, "release-1", "promote", map[string]string{"connectors": "prod"})
	attacker := newNamespace(t)
	gatedConnector(t, attacker, "tool", gitClass(t), startGitServer(t, false), pipelineCheck, podRole)
	forged := podRequest("tool", pod, "builder")
	forged.Namespace = attacker
	create(t, forged)
	ar := waitRequest(t, client.ObjectKeyFromObject(forged), v1alpha1.ConditionReady)
	if c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse ||
		c.Reason != v1alpha1.ReasonConnectorNotMounted || !strings.Contains(c.Message, attacker+"/tool") {
		t.Errorf("Ready: %+v, want False/%s naming %s/tool", c, v1alpha1.ReasonConnectorNotMounted, attacker)
	}
	if c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady); c != nil && c.Status == metav1.ConditionTrue {
		t.Errorf("the request's checks were evaluated over the other namespace's objects: %+v", c)
	}
	var rb rbacv1.RoleBinding
	if err := cp.Client.Get(context.Background(), client.ObjectKeyFromObject(forged), &rb); !apierrors.IsNotFound(err) {
		t.Errorf("a RoleBinding for the forged request exists (%v)", err)
	}
	if err := publishOutcome(t, env, pod); err != nil {
		t.Errorf("the Pod's own publish, approved: %v", err)
	}
}

// TestAPublishFailsWhenTheRolesNameAnotherDriver: the controller evaluates only requests whose
// Pod has a volume of its --driver-name naming the Connector. Were the roles given different
// names, every gated publish would be refused: the publish says so (FailedPrecondition, naming
// what is wrong) rather than wait for an evaluation that never comes.
func TestAPublishFailsWhenTheRolesNameAnotherDriver(t *testing.T) {
	setupApproval(t)
	node := true // the node's options come first, then the controller's
	env := startDeployedDrivers(t, func(o *driver.Options) {
		if !node {
			o.DriverName = "another.csi.example"
		}
		node = false
	})
	ns := newNamespace(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "has no volume naming Connector "+ns+"/prod") {
		t.Errorf("publish with the controller on another driver name: %v, want FailedPrecondition naming the volume", err)
	}
}

// TestRoleTemplatesAreCheckedAndEscaped: a role template whose rules reach beyond Connectors
// grants nothing (for a request and for a policy's defaultPermission) and says which rule;
// a Pod's annotation read by a role template stays one string: it cannot add a rule or a
// resource name.
func TestRoleTemplatesAreCheckedAndEscaped(t *testing.T) {
	env, ns := approvalEnv(t)
	ctx := context.Background()
	tool, git := startGitServer(t, false), gitClass(t)
	approvalTask(t, ns, "release-1", "approved")
	annotated := roleTemplate(t, ns+"-annotated", `- apiGroups: [connectors.alauda.io]
  resources: [connectors/proxy]
  verbs: ["*"]
  resourceNames: ['{{ index .object.metadata.annotations "example.com/connector" }}']
`)

	forbidden := []struct{ name, rules, rule string }{
		{"secrets", "- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get]\n", "secrets"},
		{"roles", "- apiGroups: [rbac.authorization.k8s.io]\n  resources: [roles]\n  verbs: [\"*\"]\n", "rbac.authorization.k8s.io"},
		{"connector-write", "- apiGroups: [connectors.alauda.io]\n  resources: [connectors]\n  verbs: [update]\n", "update"},
	}
	for _, tc := range forbidden {
		t.Run("a role template granting "+tc.name, func(t *testing.T) {
			gatedConnector(t, ns, tc.name, git, tool, pipelineCheck, roleTemplate(t, ns+"-"+tc.name, tc.rules))
			pod := pipelineRunPod(t, env.kubelet, ns, "release-1", tc.name, map[string]string{"connectors": tc.name})
			err := publishOutcome(t, env, pod)
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("publish: %v, want FailedPrecondition naming the rule (%s)", err, tc.rule)
			}
			key := types.NamespacedName{Namespace: ns, Name: approval.RequestName(tc.name, records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
			ar := waitRequest(t, key, v1alpha1.ConditionAccessPermissionSync)
			if c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, tc.rule) {
				t.Errorf("AccessPermissionSync %+v does not refuse naming the rule", c)
			}
			if err := cp.Client.Get(ctx, key, &rbacv1.Role{}); !apierrors.IsNotFound(err) {
				t.Errorf("the Role of the refused request exists: %v", err)
			}
		})
	}
	t.Run("defaultPermission with a role template granting secrets", func(t *testing.T) {
		newConnector(t, ns, "everyday", git, tool.URL)
		create(t, &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "everyday", Namespace: ns},
			Spec: v1alpha1.AccessPolicySpec{
				Connector: v1alpha1.ConnectorSelector{Names: []string{"everyday"}},
				DefaultPermission: &v1alpha1.DefaultPermission{RoleTemplate: roleRef(roleTemplate(t, ns+"-default", forbidden[0].rules)),
					BindingTemplate: v1alpha1.BindingTemplate{ServiceAccounts: []v1alpha1.ServiceAccountSelector{{
						Names: []string{"builder"}, NamespaceSelector: v1alpha1.NamespaceSelector{Names: []string{ns}}}}}},
			}})
		p := waitPolicy(t, ns, "everyday", metav1.ConditionFalse, "InvalidRoleTemplate")
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionPermissionSync); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "secrets") {
			t.Errorf("PermissionSync %+v does not refuse naming the rule", c)
		}
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "connectors-default-everyday"}, &rbacv1.Role{}); !apierrors.IsNotFound(err) {
			t.Errorf("the default permission's Role exists: %v", err)
		}
	})

	annotatedPod := func(t *testing.T, task, value string) (*corev1.Pod, types.NamespacedName) {
		gatedConnector(t, ns, task, git, tool, pipelineCheck, annotated)
		pod := pipelineRunPod(t, env.kubelet, ns, "release-1", task, map[string]string{"connectors": task})
		pod.Annotations = map[string]string{"example.com/connector": value}
		if err := cp.Client.Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
		return pod, types.NamespacedName{Namespace: ns, Name: approval.RequestName(task, records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
	}
	t.Run("an annotation cannot add a resource name", func(t *testing.T) {
		value := "flow', 'prod"
		pod, key := annotatedPod(t, "flow", value)
		if err := publishOutcome(t, env, pod); err != nil {
			t.Fatalf("publish: %v", err)
		}
		var role rbacv1.Role
		if err := cp.Client.Get(ctx, key, &role); err != nil {
			t.Fatal(err)
		}
		if len(role.Rules) != 1 || len(role.Rules[0].ResourceNames) != 1 || role.Rules[0].ResourceNames[0] != value {
			t.Errorf("the Role grants %+v, want one rule on the one resource name %q", role.Rules, value)
		}
	})
	t.Run("an annotation cannot add a rule", func(t *testing.T) {
		pod, key := annotatedPod(t, "block", "block']\n- apiGroups: [connectors.alauda.io]\n  resources: [connectors/proxy]\n  verbs: ['*")
		err := publishOutcome(t, env, pod)
		var role rbacv1.Role
		if getErr := cp.Client.Get(ctx, key, &role); getErr == nil {
			t.Errorf("the Role grants %+v", role.Rules)
		}
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "control character") {
			t.Errorf("publish: %v, want FailedPrecondition naming the control character", err)
		}
	})
}

// TestTenantChecksAreBounded: what a tenant writes into an AccessPolicy's inline check runs
// with restricted template functions, straight-line templates, a CEL cost limit, Rego without
// network builtins, and messages
// that print no value of the matched object; a check kind that is a Secret, or that the
// controller may not list and watch (the driver runs with the deployed RBAC), is refused
// before any informer is started.
func TestTenantChecksAreBounded(t *testing.T) {
	setupApproval(t)
	// Time enough for the memory bound to end rego-memory first on a loaded machine (its
	// clock bound, --rego-eval-timeout, is 250 ms by default).
	env := startDeployedDrivers(t, func(o *driver.Options) { o.RegoTimeout = 5 * time.Second })
	ctx := context.Background()
	ns := newNamespace(t)
	tool, git := startGitServer(t, false), gitClass(t)
	approvalTask(t, ns, "release-1", "approved")
	approvalTaskObj := &unstructured.Unstructured{}
	approvalTaskObj.SetAPIVersion("openshift-pipelines.org/v1alpha1")
	approvalTaskObj.SetKind("ApprovalTask")
	if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "approve-release-1"}, approvalTaskObj); err != nil {
		t.Fatal(err)
	}

	ofRun := map[string]string{"tekton.dev/pipelineRun": "{{ .pipelineRun.metadata.name }}"}
	approvalTasks := v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"}
	numbers := make([]string, 100)
	for i := range numbers {
		numbers[i] = strconv.Itoa(i)
	}
	list := "[" + strings.Join(numbers, ",") + "]"
	cases := []struct {
		name     string
		kind     v1alpha1.ObjectKindRef
		labels   map[string]string
		cel      string
		rego     string // Alauda's state.rego
		policy   string // what the policy's Ready condition names, or "" when the policy is fine
		publish  string // what the failed publish names, or "" when it succeeds
		withheld string // what no message may show
	}{
		// One builtin call that asks for 400 MB at once (a replace of "" in a string of 20,000
		// characters by itself: OPA's builtins do not stop for a deadline) ends the child
		// evaluating it, not the controller (this test process). First: the later cases'
		// requests are read again every second (PodRecheck) and allocate meanwhile (cel-cost's
		// some 28 MiB each time), which is not what this case measures.
		{name: "rego-memory", kind: approvalTasks, labels: ofRun,
			rego: "package approval\nx := concat(\"\", [\"aaaaaaaaaa\" | some _ in numbers.range(1, 2000)])\n" +
				"status := {\"state\": \"approved\"} if count(replace(x, \"\", x)) > 0",
			publish: "state.rego needed more than the 64 MiB of memory an evaluation may take (--rego-state-memory-limit)"},
		{name: "repeat", kind: approvalTasks, labels: map[string]string{"tekton.dev/pipelineRun": `{{ repeat 30000000 "x" | trunc 10 }}`},
			publish: "repeat would make"},
		// text/template's escapers double a string of backslashes at each step: unchecked, 80
		// bytes of label took gigabytes, in the controller every tenant's approvals wait on.
		{name: "escapers", kind: approvalTasks, labels: map[string]string{"tekton.dev/pipelineRun": `{{ repeat 200000 "\\" | js | js | js | js | js | js | js | js | js | js | len }}`},
			publish: "js made a value"},
		// Small values, long work: 4,000 instructions over 20,000 bytes (about a second before
		// the bound; a dozen such calls fit a label), in the controller whose four workers
		// serve every tenant.
		{name: "regex", kind: approvalTasks, labels: map[string]string{"tekton.dev/pipelineRun": `{{ regexMatch (printf "%sb" (repeat 1000 "a*")) (repeat 20000 "a") | ternary "x" "y" }}`},
			publish: "regexMatch would take about"},
		{name: "env", kind: approvalTasks, labels: map[string]string{"tekton.dev/pipelineRun": `{{ env "HOME" | trimPrefix "/" }}`},
			policy: `function "env" not defined`, publish: `function "env" not defined`},
		{name: "range", kind: approvalTasks, labels: map[string]string{"tekton.dev/pipelineRun": `{{ range until 3 }}{{ end }}{{ .pipelineRun.metadata.name }}`},
			policy: "range is not allowed", publish: "range is not allowed"},
		{name: "cel-cost", kind: approvalTasks, labels: ofRun,
			cel: fmt.Sprintf("string(%s.map(x, %s.map(y, %s.map(z, x + y + z))).size())", list, list, list),
			// Cost and clock bound it together; on a loaded machine the second may come first.
			publish: "cost limit|ran longer than"},
		{name: "cel-value", kind: approvalTasks, labels: ofRun, cel: "object.metadata.uid",
			publish: "not one of approved, passed, rejected, pending", withheld: string(approvalTaskObj.GetUID())},
		{name: "cel-type", kind: approvalTasks, labels: ofRun, cel: "object.status", publish: "a map, not a string", withheld: "approved"},
		{name: "rego-approved", kind: approvalTasks, labels: ofRun, rego: "package approval\nstatus := {\"state\": input.status.state}"},
		{name: "rego-network", kind: approvalTasks, labels: ofRun,
			rego:   "package approval\nstatus := http.send({\"method\": \"GET\", \"url\": concat(\"\", [\"http://127.0.0.1:1/\", input.metadata.uid])}).body",
			policy: "undefined function http.send", publish: "undefined function http.send"},
		{name: "rego-value", kind: approvalTasks, labels: ofRun, rego: "package approval\nstatus := {\"state\": input.metadata.uid}",
			publish: "not one of approved, passed, rejected, pending", withheld: string(approvalTaskObj.GetUID())},
		// An inline check sees the Pod's identity and labels, not its spec (the image here).
		{name: "pod-spec", kind: approvalTasks, labels: map[string]string{"tekton.dev/pipelineRun": `{{ fail (toJson .object) }}`},
			publish: `"serviceAccountName":"builder"`, withheld: "busybox"},
		{name: "secret", kind: v1alpha1.ObjectKindRef{APIVersion: "v1", Kind: "Secret"}, labels: map[string]string{"a": "b"},
			policy: "Secret", publish: "Secret"},
		// The controller lists RBAC objects to cache its grants; a check may not read them.
		{name: "rbac", kind: v1alpha1.ObjectKindRef{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"}, labels: map[string]string{"a": "b"},
			policy: "RBAC objects", publish: "RBAC objects"},
		// The controller caches only its own Services and the system namespace's ConfigMaps: a
		// check of those kinds would read stubs, or nothing.
		{name: "service", kind: v1alpha1.ObjectKindRef{APIVersion: "v1", Kind: "Service"}, labels: map[string]string{"a": "b"},
			policy: "Services: the controller caches only its own", publish: "Services: the controller caches only its own"},
		{name: "configmap", kind: v1alpha1.ObjectKindRef{APIVersion: "v1", Kind: "ConfigMap"}, labels: map[string]string{"a": "b"},
			policy: "ConfigMaps: the controller caches only its own", publish: "ConfigMaps: the controller caches only its own"},
		// Cached whole already: a check's informer would be a second cluster-wide copy.
		{name: "accessrequest", kind: v1alpha1.ObjectKindRef{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AccessRequest"}, labels: map[string]string{"a": "b"},
			policy: "AccessRequest objects: the controller caches them already", publish: "AccessRequest objects: the controller caches them already"},
		{name: "unlistable", kind: v1alpha1.ObjectKindRef{APIVersion: "apps/v1", Kind: "Deployment"}, labels: map[string]string{"a": "b"},
			policy: "deployments.apps", publish: "deployments.apps"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := v1alpha1.Check{Name: "tenant", Spec: &v1alpha1.CheckSpec{
				Selector: v1alpha1.CheckSelector{ObjectRef: tc.kind, MatchLabels: tc.labels}}}
			if tc.cel != "" || tc.rego != "" {
				check.Spec.State = &v1alpha1.CheckState{CEL: tc.cel, Rego: tc.rego}
			}
			gatedConnector(t, ns, tc.name, git, tool, check, podRole)
			pod := pipelineRunPod(t, env.kubelet, ns, "release-1", tc.name, map[string]string{"connectors": tc.name})
			allocated := heapAllocated()
			err := publishOutcome(t, env, pod)
			if allocated = heapAllocated() - allocated; tc.name == "rego-memory" && allocated > 100<<20 {
				t.Errorf("this process (the controller) allocated %d MiB while the check was evaluated", allocated>>20)
			}
			if tc.publish == "" {
				if err != nil {
					t.Errorf("publish: %v, want success", err)
				}
			} else if status.Code(err) != codes.FailedPrecondition || !slices.ContainsFunc(strings.Split(tc.publish, "|"), func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Errorf("publish: %v, want FailedPrecondition naming %q", err, tc.publish)
			}
			if tc.withheld != "" && err != nil && strings.Contains(err.Error(), tc.withheld) {
				t.Errorf("the error shows the matched object's value %q: %v", tc.withheld, err)
			}
			if tc.policy != "" {
				p := waitPolicy(t, ns, tc.name, metav1.ConditionFalse, "InvalidCheck")
				if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, tc.policy) {
					t.Errorf("policy Ready %q does not name %q", c.Message, tc.policy)
				}
			}
		})
	}
}

// heapAllocated is how many bytes this process has allocated on its heap so far.
func heapAllocated() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// gauge reads metric{label=value} from the default Prometheus registry (the one
// --metrics-listen serves), and whether it is there.
func gauge(t *testing.T, metric, label, value string) (float64, bool) {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestCELProgramCacheIsBounded: policies with more distinct CEL states than --cel-cache-size
// leave at most that many compiled programs, as connectors_cache_entries reports.
func TestCELProgramCacheIsBounded(t *testing.T) {
	setupApproval(t)
	startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.CELCacheSize = 2 })
	ns := newNamespace(t)
	approvalTasks := v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"}
	for i := range 5 {
		name := fmt.Sprintf("cel-%d", i)
		policy := gatingPolicy(name, name, v1alpha1.Check{Name: "c", Spec: &v1alpha1.CheckSpec{
			Selector: v1alpha1.CheckSelector{ObjectRef: approvalTasks},
			State:    &v1alpha1.CheckState{CEL: fmt.Sprintf("object.status.state + %q", strings.Repeat(" ", i))}}})
		policy.Namespace = ns
		create(t, policy)
		waitPolicy(t, ns, name, metav1.ConditionTrue, "Ready") // its CEL was compiled
	}
	if n, found := gauge(t, "connectors_cache_entries", "cache", "cel_programs"); !found || n > 2 {
		t.Fatalf("connectors_cache_entries{cache=\"cel_programs\"} = %v (found %v), want at most --cel-cache-size 2", n, found)
	}
}

// TestInvalidFeatureFlagKeepsLastValue: enable-connector-proxy-permissions "true" makes the
// proxy ask for connectors/proxy; changed to the unparsable "yes" it stays on (it used to mean
// false), with an Event on the ConfigMap and connectors_feature_flag_invalid at 1; a valid
// "false" turns it off and clears the gauge.
func TestInvalidFeatureFlagKeepsLastValue(t *testing.T) {
	tool := startGitServer(t, false)
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	pod := podWithVolume(t, env.kubelet, ns, "client", map[string]string{"connectors": "tool"}, nil)
	if err := publishOutcome(t, env, pod); err != nil {
		t.Fatal(err)
	}
	token := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
	url := fmt.Sprintf("%s/namespaces/%s/connectors/tool/repo.git/info/refs?service=git-upload-pack", env.proxyURL, ns)
	proxied := func() (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", url, map[string]string{"Authorization": "Bearer " + token}))
	}
	refused := func() bool { code, body := proxied(); return code == 403 && strings.Contains(body, "connectors/proxy") }
	const flag = "enable-connector-proxy-permissions"
	t.Cleanup(func() { setFlags(t, map[string]string{}) })

	setFlags(t, map[string]string{flag: "true"})
	if !kubelet.WaitUntil(10*time.Second, refused) {
		t.Fatal("with the flag \"true\" a request without connectors/proxy was not refused")
	}
	setFlags(t, map[string]string{flag: "yes"})
	var event string
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		evs, err := cp.Kube.CoreV1().Events(systemNS).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + features.ConfigMapName + ",reason=InvalidFeatureFlag"})
		for _, e := range evs.Items {
			if strings.Contains(e.Message, flag) && strings.Contains(e.Message, `"yes"`) {
				event = e.Message
			}
		}
		return err == nil && event != ""
	}) {
		t.Error("no InvalidFeatureFlag Event on the ConfigMap names the flag and its value")
	}
	t.Logf("event: %s", event)
	if code, body := proxied(); code != 403 || !strings.Contains(body, "connectors/proxy") {
		t.Errorf("with the flag \"yes\" after \"true\": %d %s, want the refusal (the last valid value stays)", code, body)
	}
	if v, found := gauge(t, "connectors_feature_flag_invalid", "flag", flag); v != 1 {
		t.Errorf("connectors_feature_flag_invalid{flag=%q} = %v (found %v), want 1", flag, v, found)
	}

	setFlags(t, map[string]string{flag: "false"})
	if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := proxied(); return code == 200 }) {
		t.Fatal("with the flag \"false\" the request is still refused")
	}
	if v, _ := gauge(t, "connectors_feature_flag_invalid", "flag", flag); v != 0 {
		t.Errorf("connectors_feature_flag_invalid{flag=%q} = %v after a valid value, want 0", flag, v)
	}
}

// TestLongPodNameThroughApproval: a Pod with a 253-character name goes through the approval
// flow (AccessRequest labels carry its name; the request's name is cut to fit, here right
// after a dot): pending, approved, published, revoked on unpublish.
func TestLongPodNameThroughApproval(t *testing.T) {
	env, ns := approvalEnv(t)
	ctx := context.Background()
	pipelineGate(t, ns)
	// "prod-" + the name is cut to 244 characters before the hash suffix: it then ends with the dot.
	name := strings.Repeat("a", 238) + "." + strings.Repeat("b", 14)
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"},
		func(p *corev1.Pod) { p.Name = name })
	if len(pod.Name) != 253 {
		t.Fatalf("the Pod's name has %d characters", len(pod.Name))
	}
	err := env.kubelet.Publish(ctx, pod, "connectors")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "waiting for AccessRequest "+ns+"/prod-aaa") {
		t.Fatalf("publish before the approval: %v, want Unavailable naming the AccessRequest", err)
	}
	approvalTask(t, ns, "release-1", "approved")
	if err := publishOutcome(t, env, pod); err != nil {
		t.Fatalf("publish after the approval: %v", err)
	}
	key := types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	waitRevoked(t, key)
}

// TestRejectedVolumeRevokesEarlierGrants: a volume of Connectors alpha (approved) and beta
// (rejected) gets only .error.json; its unpublish still revokes alpha's grant, while the Pod
// lives on.
func TestRejectedVolumeRevokesEarlierGrants(t *testing.T) {
	env, ns := approvalEnv(t)
	ctx := context.Background()
	tool, git := startGitServer(t, false), gitClass(t)
	gatedConnector(t, ns, "alpha", git, tool, pipelineCheck, podRole)
	gatedConnector(t, ns, "beta", git, tool, v1alpha1.Check{Name: "beta-approval", Spec: &v1alpha1.CheckSpec{Selector: v1alpha1.CheckSelector{
		ObjectRef:   v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"},
		MatchLabels: map[string]string{"tekton.dev/pipelineRun": "{{ .pipelineRun.metadata.name }}-beta"}}}}, podRole)
	approvalTask(t, ns, "release-1", "approved")
	approvalTask(t, ns, "release-1-beta", "rejected")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "alpha,beta"})
	if err := publishOutcome(t, env, pod); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if files := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors")); len(files) != 1 || !strings.Contains(files[".error.json"], "rejected") {
		t.Fatalf("the volume holds %v, want only .error.json", files)
	}
	alpha := types.NamespacedName{Namespace: ns, Name: approval.RequestName("alpha", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
	if c := meta.FindStatusCondition(waitRequest(t, alpha, v1alpha1.ConditionAccessPermissionSync).Status.Conditions,
		v1alpha1.ConditionAccessPermissionSync); c.Reason != v1alpha1.ReasonSynced {
		t.Fatalf("alpha's AccessRequest: %+v, want it granted", c)
	}
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	waitRevoked(t, alpha)
	if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}); err != nil {
		t.Errorf("the Pod is gone (%v): the revocation must come from the unpublish", err)
	}
}

// TestCheckSelectorsAsAlaudaDocuments: a check's objectRef.name (a template) and
// matchExpressions decide which objects it reads, objectRef.namespace may only be the Pod's,
// and each matched check carries Alauda's ref and condition.
func TestCheckSelectorsAsAlaudaDocuments(t *testing.T) {
	env, ns := approvalEnv(t)
	ctx := context.Background()
	tool, git := startGitServer(t, false), gitClass(t)
	approvalTask(t, ns, "release-1", "approved")
	approvalTask(t, ns, "release-2", "approved")
	approvalTask(t, ns, "release-3", "rejected")
	tasks := v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"}
	check := func(sel v1alpha1.CheckSelector) v1alpha1.Check {
		return v1alpha1.Check{Name: "selected", Spec: &v1alpha1.CheckSpec{Selector: sel}}
	}
	byName := tasks
	byName.Name = "approve-{{ .pipelineRun.metadata.name }}"
	gatedConnector(t, ns, "by-name", git, tool, check(v1alpha1.CheckSelector{ObjectRef: byName}), podRole)
	// Without its expression this check would also read release-3's rejected task.
	gatedConnector(t, ns, "by-expression", git, tool, check(v1alpha1.CheckSelector{ObjectRef: tasks,
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tekton.dev/pipelineRun", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"release-3"}}}}), podRole)
	elsewhere := tasks
	elsewhere.Namespace = "kube-system"
	gatedConnector(t, ns, "elsewhere", git, tool, check(v1alpha1.CheckSelector{ObjectRef: elsewhere}), podRole)

	for _, name := range []string{"by-name", "by-expression"} {
		pod := pipelineRunPod(t, env.kubelet, ns, "release-1", name, map[string]string{"connectors": name})
		if err := publishOutcome(t, env, pod); err != nil {
			t.Fatalf("%s: publish: %v", name, err)
		}
	}
	var ars v1alpha1.AccessRequestList
	if err := cp.Client.List(ctx, &ars, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelAccessRequestConnector: "by-name"}); err != nil || len(ars.Items) != 1 {
		t.Fatalf("AccessRequests of by-name: %d, %v", len(ars.Items), err)
	}
	mc := ars.Items[0].Status.Policies[0].MatchedChecks[0]
	if mc.Ref == nil || mc.Ref.Name != "approve-release-1" || mc.Ref.Kind != "ApprovalTask" {
		t.Errorf("matchedChecks[0].ref = %+v, want ApprovalTask approve-release-1", mc.Ref)
	}
	if c := mc.Condition; c == nil || c.Type != v1alpha1.ConditionReady || c.Status != metav1.ConditionTrue || c.Reason != "Approved" {
		t.Errorf("matchedChecks[0].condition = %+v, want Ready True Approved", c)
	}

	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "elsewhere", map[string]string{"connectors": "elsewhere"})
	if err := publishOutcome(t, env, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "objectRef.namespace") {
		t.Errorf("a check reading another namespace: %v, want FailedPrecondition naming objectRef.namespace", err)
	}
}

// TestTenancyGrantsTakeOverNoRBAC: the controller, which may escalate and bind, writes and
// deletes grants by names that come from what tenants create. A Role and RoleBinding of such
// a name that it did not create (an administrator's) are neither deleted when an
// AccessRequest of their name is revoked nor written over by a policy's default permission,
// which says why it was not written.
func TestTenancyGrantsTakeOverNoRBAC(t *testing.T) {
	setupApproval(t)
	startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.RequestRetention = time.Second })
	ctx := context.Background()
	ns := newNamespace(t)
	newConnector(t, ns, "shared", gitClass(t), "https://tool.example.com")
	adminRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}
	admin := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "team-admin"}}
	names := []string{"team-admins", "connectors-default-everyday"}
	for _, name := range names {
		create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: adminRules})
		create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: admin})
	}
	// An AccessRequest of the first one's name, for no Pod: revoked at once, then collected.
	create(t, &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: names[0], Namespace: ns, Labels: map[string]string{
		v1alpha1.LabelContextObjectKind: "Pod", v1alpha1.LabelContextObjectName: "no-pod", v1alpha1.LabelContextObjectNamespace: ns}},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: "shared"},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
				APIVersion: "v1", Kind: "Pod", Name: "no-pod", Namespace: ns}},
		}})
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		return apierrors.IsNotFound(cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: names[0]}, &v1alpha1.AccessRequest{}))
	}) {
		t.Fatal("the AccessRequest for no Pod was never revoked and collected")
	}
	// A policy whose default permission's grant has the second one's name.
	create(t, &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "everyday", Namespace: ns},
		Spec: v1alpha1.AccessPolicySpec{
			Connector: v1alpha1.ConnectorSelector{Names: []string{"shared"}},
			DefaultPermission: &v1alpha1.DefaultPermission{RoleTemplate: roleRef("connectors-use-connectors-proxy"),
				BindingTemplate: v1alpha1.BindingTemplate{ServiceAccounts: []v1alpha1.ServiceAccountSelector{{
					NamespaceSelector: v1alpha1.NamespaceSelector{Names: []string{ns}}}}}},
		}})
	p := waitPolicy(t, ns, "everyday", metav1.ConditionFalse, v1alpha1.ReasonSyncFailed)
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "Role "+ns+"/"+names[1]+" exists and is not everyday's") {
		t.Errorf("the policy's Ready message %q does not say which Role it did not write over", c.Message)
	}
	for _, name := range names {
		var role rbacv1.Role
		var rb rbacv1.RoleBinding
		key := types.NamespacedName{Namespace: ns, Name: name}
		if err := cp.Client.Get(ctx, key, &role); err != nil || !slices.EqualFunc(role.Rules, adminRules, func(a, b rbacv1.PolicyRule) bool { return a.String() == b.String() }) || len(role.OwnerReferences) != 0 {
			t.Errorf("the administrator's Role %s: %v, rules %v, owners %v", name, err, role.Rules, role.OwnerReferences)
		}
		if err := cp.Client.Get(ctx, key, &rb); err != nil || len(rb.Subjects) != 1 || rb.Subjects[0] != admin[0] || len(rb.OwnerReferences) != 0 {
			t.Errorf("the administrator's RoleBinding %s: %v, subjects %v, owners %v", name, err, rb.Subjects, rb.OwnerReferences)
		}
	}
}

// TestTenancyAForeignRequestOfTheNameIsNotUsed: an AccessRequest that someone else created
// under the name the node gives a Pod's request, asking for another Connector, is not taken
// for the Pod's: its verdict would be another Connector's.
func TestTenancyAForeignRequestOfTheNameIsNotUsed(t *testing.T) {
	env, ns := approvalEnv(t)
	pipelineGate(t, ns)
	// requestOf makes, as someone else, a request of the name the node gives pod's request, for
	// connector, with labels.
	requestOf := func(pod *corev1.Pod, connector string, labels map[string]string) string {
		t.Helper()
		name := approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID), ServiceAccount: pod.Spec.ServiceAccountName})
		create(t, &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: v1alpha1.AccessRequestSpec{
				Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: pod.Spec.ServiceAccountName, Namespace: ns},
				ConnectorRef: v1alpha1.LocalObjectRef{Name: connector},
				Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
					APIVersion: "v1", Kind: "Pod", Name: pod.Name, Namespace: ns, UID: pod.UID}},
			}})
		return name
	}
	// Labelled for the node too (an administrator may): it is then in the node's cache of its own.
	for i, labels := range []map[string]string{nil, {v1alpha1.LabelNode: "node-1"}} {
		pod := pipelineRunPod(t, env.kubelet, ns, fmt.Sprintf("release-%d", i), "promote", map[string]string{"connectors": "prod"})
		if pod.UID == "" {
			t.Fatal("the Pod has no UID")
		}
		name := requestOf(pod, "staging", labels)
		err := publishOutcome(t, env, pod)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), name+" exists and asks for another Connector") {
			t.Errorf("publish (the foreign request labelled %v): %v, want PermissionDenied naming the foreign request", labels, err)
		}
	}
	// One that asks the same, made by someone else, who may not label it for the node (the
	// admission policy): the node labels it, and waits on its verdict through its cache.
	pod := pipelineRunPod(t, env.kubelet, ns, "release-same", "promote", map[string]string{"connectors": "prod"})
	name := requestOf(pod, "prod", nil)
	err := publishOutcome(t, env, pod)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "waiting for AccessRequest "+ns+"/"+name) ||
		!strings.Contains(err.Error(), "ApprovalTask") {
		t.Errorf("publish (a request of the same ask, unlabelled): %v, want Unavailable waiting on its checks", err)
	}
	var ar v1alpha1.AccessRequest
	if err := cp.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &ar); err != nil || ar.Labels[v1alpha1.LabelNode] == "" {
		t.Errorf("the request of the same ask: %v, labels %v, want it labelled for the node", err, ar.Labels)
	}
}

// TestTenancyPoliciesAreBounded: what one tenant's AccessPolicy makes the controller hold is
// bounded. A binding template of more than 1,000 subjects (names times namespaces) is not
// expanded (SyncFailed saying so), and the API server refuses lists past the schema's bounds.
func TestTenancyPoliciesAreBounded(t *testing.T) {
	setupApproval(t)
	startDriverWith(t, t.TempDir(), nil, nil)
	ns := newNamespace(t)
	newConnector(t, ns, "shared", gitClass(t), "https://tool.example.com")
	var namespaces, accounts []string
	for i := range 256 {
		namespaces = append(namespaces, fmt.Sprintf("n%d", i))
	}
	for i := range 4 {
		accounts = append(accounts, fmt.Sprintf("sa%d", i))
	}
	create(t, &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wide", Namespace: ns},
		Spec: v1alpha1.AccessPolicySpec{
			Connector: v1alpha1.ConnectorSelector{Names: []string{"shared"}},
			DefaultPermission: &v1alpha1.DefaultPermission{RoleTemplate: roleRef("connectors-use-connectors-proxy"),
				BindingTemplate: v1alpha1.BindingTemplate{ServiceAccounts: []v1alpha1.ServiceAccountSelector{{
					Names: accounts, NamespaceSelector: v1alpha1.NamespaceSelector{Names: namespaces}}}}},
		}})
	p := waitPolicy(t, ns, "wide", metav1.ConditionFalse, v1alpha1.ReasonSyncFailed)
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); !strings.Contains(c.Message, "more than 1000 subjects") {
		t.Errorf("the policy's Ready message %q does not say the binding template is too wide", c.Message)
	}
	var bindings rbacv1.RoleBindingList
	if err := cp.Client.List(context.Background(), &bindings, client.InNamespace(ns)); err != nil || len(bindings.Items) != 0 {
		t.Errorf("RoleBindings written for the too-wide policy: %v %+v", err, bindings.Items)
	}

	tooMany := &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "long", Namespace: ns},
		Spec: v1alpha1.AccessPolicySpec{Connector: v1alpha1.ConnectorSelector{Names: append(namespaces, "one-more")}}}
	if err := cp.Client.Create(context.Background(), tooMany); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.connector.names: Too many: 257") {
		t.Errorf("a policy naming 257 Connectors: %v, want Invalid", err)
	}
}

// approvedPod gates Connector prod of ns by its PipelineRun's approval (pipelineGate), approves
// PipelineRun release-1 and publishes the volume of its Pod; it returns the Pod and its
// AccessRequest, which is the name of its grant too.
func approvedPod(t *testing.T, env *proxyEnv, ns string) (*corev1.Pod, types.NamespacedName) {
	t.Helper()
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, pod); err != nil {
		t.Fatalf("the Pod of the approved PipelineRun: %v", err)
	}
	return pod, types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
}

// TestApprovalsAreForOnePodNotItsName: the built-in role template grants connectors/proxy to
// a Pod by name (SPEC §4.4), an approval is for one Pod. After a forced delete that no unpublish
// followed (a lost node), a new Pod of the same name and ServiceAccount must not use the earlier
// Pod's grant: not through the proxy with a token of its own, not by a publish. The controller
// is stopped meanwhile, so that nothing revokes the earlier grant before these are checked.
func TestApprovalsAreForOnePodNotItsName(t *testing.T) {
	setupApproval(t)
	// No denial is cached: the first Pod's, from before its approval, would answer for the
	// second.
	env := startProxyDriver(t, func(o *driver.Options) { o.Role, o.AuthzDenyTTL = driver.RoleNode, 0 })
	startController := func() (stop func()) {
		opts := testOptions()
		opts.Role, opts.ProxyURL, opts.AuthzDenyTTL = driver.RoleController, env.proxyURL, 0
		stop, _ = runDriver(t, opts)
		return stop
	}
	stopController := startController()
	ns := newNamespace(t)
	ctx := context.Background()
	first, grant := approvedPod(t, env, ns)
	refs := env.proxyURL + "/namespaces/" + ns + "/connectors/prod/repo.git/info/refs?service=git-upload-pack"
	get := func(token string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", refs, map[string]string{"Authorization": "Bearer " + token}))
	}
	firstToken := visibleFiles(t, env.kubelet.TargetPath(first, "connectors"))["context.token"]
	if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := get(firstToken); return code == http.StatusOK }) {
		t.Fatal("the proxy does not let the approved Pod's token through")
	}

	// The node is lost: the Pod is deleted at once and its volume never unpublished.
	stopController()
	if err := cp.Kube.CoreV1().Pods(ns).Delete(ctx, first.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	second := podOf(t, env.kubelet, ns, first.Name, "builder", map[string]string{"connectors": "prod"}, nil)
	if second.UID == first.UID {
		t.Fatal("the second Pod has the first one's UID")
	}
	if err := cp.Client.Get(ctx, grant, &rbacv1.RoleBinding{}); err != nil {
		t.Fatalf("the earlier Pod's grant is gone, with no controller running: %v", err)
	}
	// Any Pod may project a token of its own for the proxy's audience; it needs no volume.
	tr, err := cp.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "builder", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{driverName},
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: second.Name, UID: second.UID}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "may not get connectors/proxy of Connector " + ns + "/prod"
	if code, body := get(tr.Status.Token); code != http.StatusForbidden || !strings.Contains(body, want) {
		t.Fatalf("the new Pod of the same name through the proxy: %d %q, want 403 saying %q", code, body, want)
	}
	// Its publish asks for its own approval, and waits for it.
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), second, "connectors") })
	if err := env.kubelet.Publish(ctx, second, "connectors"); status.Code(err) != codes.Unavailable {
		t.Fatalf("publish of the new Pod of the same name with no controller running: %v, want Unavailable (waiting for its own request)", err)
	}

	// The controller sees the earlier Pod gone and revokes its grant; the new Pod's own request
	// is refused (a bare Pod is not run by the approved PipelineRun).
	startController()
	waitRevoked(t, grant)
	if err, want := publishOutcome(t, env, second), "is not run by a TaskRun"; status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Fatalf("publish of the new Pod of the same name: %v, want FailedPrecondition saying %q", err, want)
	}
}

// TestApprovedPodsCostOneReviewPerAnswer: with enable-connector-proxy-permissions, an
// approved Pod is allowed by its Pod-scoped grant and denied namespace-wide. A node that holds
// the Pod's granted request asks the Pod-scoped question first, so each expiry of the Pod's
// answer costs one SubjectAccessReview, not a denial first and then the grant (the node as
// deployed; its reviews from the audit log; answers not kept, and the requests a second
// apart, past the fast lane's memo of a route, so that each request asks).
func TestApprovedPodsCostOneReviewPerAnswer(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.ProxyPermissionTTL = 0 })
	ns := newNamespace(t)
	pod, _ := approvedPod(t, env, ns)
	token := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
	refs := env.proxyURL + "/namespaces/" + ns + "/connectors/prod/repo.git/info/refs?service=git-upload-pack"
	get := func() (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", refs, map[string]string{"Authorization": "Bearer " + token}))
	}
	if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := get(); return code == http.StatusOK }) {
		t.Fatal("the proxy does not let the approved Pod's token through")
	}
	since := time.Now()
	const uses = 3
	for range uses {
		time.Sleep(1100 * time.Millisecond)
		if code, body := get(); code != http.StatusOK {
			t.Fatalf("the approved Pod through the proxy: %d %q", code, body)
		}
	}
	if reviews := nodeCreates(t, "subjectaccessreviews", since); len(reviews) != uses {
		t.Errorf("%d uses of the approved Pod, each asking again, cost %d SubjectAccessReviews, want %d", uses, len(reviews), uses)
	}
}

// TestApprovalsAreNotBehindConnectorProbes: the Connector status controller probes every
// Connector again each --connector-recheck-interval, a Secret read and a status write each,
// which grows with the cluster's Connectors; it has a rate limit of its own
// (--connector-status-api-qps), so that approvals never wait behind it. Here it may send one
// request and then none: the Connector's status is never written, and an approval goes through.
func TestApprovalsAreNotBehindConnectorProbes(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.StatusAPIQPS, o.StatusAPIBurst = 1e-6, 1 })
	ns := newNamespace(t)
	_, key := approvedPod(t, env, ns)
	var ar v1alpha1.AccessRequest
	if err := cp.Client.Get(context.Background(), key, &ar); err != nil || !meta.IsStatusConditionTrue(ar.Status.Conditions, v1alpha1.ConditionReady) {
		t.Fatalf("the approved Pod's request: %v %+v", err, ar.Status.Conditions)
	}
	var c v1alpha1.Connector
	if err := cp.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "prod"}, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Status.Conditions) != 0 {
		t.Errorf("the status controller wrote the Connector's status past its own rate limit: %+v", c.Status.Conditions)
	}
}

// TestTenantChecksReadBoundedObjects: a check reads at most --accessrequest-check-max-objects
// objects; one matching more fails, naming the flag, rather than holding one of the
// controller's workers (four serve every tenant) for minutes and growing the status.
func TestTenantChecksReadBoundedObjects(t *testing.T) {
	setupApproval(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MaxCheckObjects = 5 })
	ns := newNamespace(t)
	for i := range 6 {
		create(t, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "openshift-pipelines.org/v1alpha1", "kind": "ApprovalTask",
			"metadata": map[string]any{"name": fmt.Sprintf("vote-%d", i), "namespace": ns, "labels": map[string]any{"vote": "release"}},
		}})
	}
	// The run comes a second later than the votes: its createdSince leaves them all out, and
	// they are counted before it does (the list stops at the bound, so that past it the ones
	// left out could be the run's own).
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	approvalTask(t, ns, "release-1", "approved")
	approvalTasks := v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"}
	gatedConnector(t, ns, "many", gitClass(t), startGitServer(t, false), v1alpha1.Check{Name: "votes", Spec: &v1alpha1.CheckSpec{
		Selector: v1alpha1.CheckSelector{ObjectRef: approvalTasks, MatchLabels: map[string]string{"vote": "release"},
			CreatedSince: "{{ .pipelineRun.metadata.creationTimestamp }}"}}}, podRole)
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "many", map[string]string{"connectors": "many"})
	want := "more than 5 ApprovalTask objects in namespace " + ns + " match labels vote=release; a check reads at most 5 (--accessrequest-check-max-objects)"
	if err := publishOutcome(t, env, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Fatalf("publish: %v, want FailedPrecondition naming %q", err, want)
	}
}

// TestTenancyLargePoliciesAreNotCopiedIntoRequests: a request records the specs of the
// policies that select its Connector (status.policies[].policySpec) and is kept for
// --accessrequest-retention after its Pod. A tenant's policy near the schema's size, copied
// into every gated Pod's request, would fill etcd; past --accessrequest-max-policy-bytes
// together (64 KiB by default) the request records none and fails, naming the flag and the
// policies' sizes. Once the policy is gone the request records the rest and is approved.
func TestTenancyLargePoliciesAreNotCopiedIntoRequests(t *testing.T) {
	env, ns := approvalEnv(t)
	ctx := context.Background()
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	bulky := gatingPolicy("bulky", "prod", pipelineCheck)
	bulky.Namespace = ns
	for i := range 9 {
		bulky.Spec.CheckGrantedPermission.Spec.Checks = append(bulky.Spec.CheckGrantedPermission.Spec.Checks, v1alpha1.Check{
			Name: fmt.Sprintf("filler-%d", i), Spec: &v1alpha1.CheckSpec{
				Selector: v1alpha1.CheckSelector{ObjectRef: v1alpha1.ObjectKindRef{APIVersion: "v1", Kind: "ConfigMap"}},
				State:    &v1alpha1.CheckState{CEL: `"` + strings.Repeat("x", 8000) + `" != ""`}}})
	}
	create(t, bulky)

	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	want := "more than the 65536 a request records (--accessrequest-max-policy-bytes): bulky ("
	if err := publishOutcome(t, env, pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Fatalf("publish with a bulky policy: %v, want FailedPrecondition naming %q", err, want)
	}
	key := types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
	var ar v1alpha1.AccessRequest
	if err := cp.Client.Get(ctx, key, &ar); err != nil {
		t.Fatal(err)
	}
	if len(ar.Status.Policies) != 0 {
		t.Errorf("the failed request recorded %d policies", len(ar.Status.Policies))
	}
	if c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPolicyMatched); c == nil || c.Reason != v1alpha1.ReasonPoliciesTooLarge {
		t.Errorf("AccessPolicyMatched: %+v, want reason %s", c, v1alpha1.ReasonPoliciesTooLarge)
	}

	if err := cp.Client.Delete(ctx, bulky); err != nil {
		t.Fatal(err)
	}
	// kubelet retries the failed publish; the policy's delete wakes the request.
	var err error
	if !kubelet.WaitUntil(20*time.Second, func() bool { err = env.kubelet.Publish(ctx, pod, "connectors"); return err == nil }) {
		t.Fatalf("publish once the bulky policy is gone: %v", err)
	}
	if err := cp.Client.Get(ctx, key, &ar); err != nil || len(ar.Status.Policies) != 1 || ar.Status.Policies[0].PolicySpec == nil {
		t.Errorf("the approved request's policies: %v %+v, want prod's, with its spec", err, ar.Status.Policies)
	}
}

// TestTenancyLargeCheckObjectsAreNotKept: check kinds are watched cluster-wide and their
// objects are whoever runs a pipeline's to write. The controller keeps one larger than
// --check-object-max-bytes as a stub of its name and labels, so that a tenant's large
// ApprovalTasks cannot fill its memory, and a check that matches one fails, naming the flag
// and the object; a small approval beside it is read as ever. A running Pod keeps its grant
// when its approval grows past the bound, unless another object of the check is rejected.
func TestTenancyLargeCheckObjectsAreNotKept(t *testing.T) {
	setupApproval(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MaxCheckObjectBytes = 4096 })
	ns := newNamespace(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pipelineRun(t, ns, "release-2")
	large := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "openshift-pipelines.org/v1alpha1", "kind": "ApprovalTask",
		"metadata": map[string]any{"name": "approve-release-2", "namespace": ns, "labels": map[string]any{"tekton.dev/pipelineRun": "release-2"}},
		"status":   map[string]any{"state": "approved", "comment": strings.Repeat("x", 8000)},
	}}
	if err := cp.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(large), client.FieldOwner("e2e")); err != nil {
		t.Fatal(err)
	}
	small := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, small); err != nil {
		t.Fatalf("publish with a small approval: %v", err)
	}
	want := "ApprovalTask " + ns + "/approve-release-2 is larger than 4096 bytes (--check-object-max-bytes)"
	err := publishOutcome(t, env, pipelineRunPod(t, env.kubelet, ns, "release-2", "promote", map[string]string{"connectors": "prod"}))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Fatalf("publish with a large approval: %v, want FailedPrecondition naming %q", err, want)
	}

	// An approval that grows past the bound while its Pod runs: the bound is the controller's,
	// so the running Pod keeps its access, as while a check is pending again.
	grown := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "openshift-pipelines.org/v1alpha1", "kind": "ApprovalTask",
		"metadata": map[string]any{"name": "approve-release-1", "namespace": ns, "labels": map[string]any{"tekton.dev/pipelineRun": "release-1"}},
		"status":   map[string]any{"state": "approved", "comment": strings.Repeat("x", 8000)},
	}}
	if err := cp.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(grown), client.FieldOwner("e2e"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: small.Name, UID: string(small.UID)})}
	var ar v1alpha1.AccessRequest
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		check := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady)
		return cp.Client.Get(context.Background(), key, &ar) == nil && check != nil && strings.Contains(check.Message, "--check-object-max-bytes")
	}) {
		t.Fatalf("the grown approval was not seen: %+v", ar.Status.Conditions)
	}
	if !meta.IsStatusConditionTrue(ar.Status.Conditions, v1alpha1.ConditionReady) {
		t.Fatalf("the running Pod lost its grant to the controller's bound: %+v", ar.Status.Conditions)
	}

	// A rejection beside the large object, which sorts first (a tenant's own large object of
	// the labels would do the same): it is read, and revokes.
	approvalTaskNamed(t, ns, "approve-release-1-rejected", "release-1", "rejected")
	if !kubelet.WaitUntil(15*time.Second, func() bool {
		return cp.Client.Get(context.Background(), key, &ar) == nil && meta.IsStatusConditionFalse(ar.Status.Conditions, v1alpha1.ConditionReady)
	}) {
		t.Errorf("a rejection beside a large check object kept the grant: %+v", ar.Status.Conditions)
	}
}

// TestTenantEvaluationsAreBudgeted: one request's checks take at most
// --accessrequest-evaluation-budget together. The budget is the controller's, not the
// policy's: past it the request is not failed (which would revoke a grant it holds) but waits,
// naming the flag, and is read again. Here the budget is spent before the first check.
func TestTenantEvaluationsAreBudgeted(t *testing.T) {
	setupApproval(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.EvaluationBudget = time.Nanosecond })
	ns := newNamespace(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	want := "this request's checks took longer than 1ns together (--accessrequest-evaluation-budget); they are read again in 10s"
	var err error
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		err = env.kubelet.Publish(context.Background(), pod, "connectors")
		return err != nil && strings.Contains(err.Error(), want)
	}) || status.Code(err) != codes.Unavailable {
		t.Fatalf("publish: %v, want Unavailable naming %q", err, want)
	}
}

// TestApprovalKeptWhileACheckIsPendingAgain: access ends with the Pod, the Connector, the
// volume or a rejection (SPEC §6.5); a check that passed and is pending again (its
// ApprovalTask reset) keeps the grant, and the request says so rather than "waiting" while
// access works. A rejection then revokes it.
func TestApprovalKeptWhileACheckIsPendingAgain(t *testing.T) {
	env, ns := approvalEnv(t)
	ctx := context.Background()
	_, key := approvedPod(t, env, ns)
	conditionReason := func(ar *v1alpha1.AccessRequest, typ string) string {
		if c := meta.FindStatusCondition(ar.Status.Conditions, typ); c != nil {
			return c.Reason
		}
		return ""
	}
	var ar v1alpha1.AccessRequest
	waitFor := func(what string, done func() bool) {
		t.Helper()
		if !kubelet.WaitUntil(10*time.Second, func() bool { return cp.Client.Get(ctx, key, &ar) == nil && done() }) {
			t.Fatalf("AccessRequest %s never %s: %+v", key, what, ar.Status.Conditions)
		}
	}
	waitFor("was granted", func() bool { return conditionReason(&ar, v1alpha1.ConditionReady) == "Granted" })

	approvalTask(t, ns, "release-1", "pending")
	waitFor("saw the check pending", func() bool { return conditionReason(&ar, v1alpha1.ConditionAccessCheckReady) == v1alpha1.ReasonPending })
	ready := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionReady)
	if ready.Status != metav1.ConditionTrue || !strings.Contains(ready.Message, "kept while a check is pending again") {
		t.Errorf("Ready while the grant is kept: %s %s %q", ready.Status, ready.Reason, ready.Message)
	}
	if got := conditionReason(&ar, v1alpha1.ConditionAccessPermissionSync); got != v1alpha1.ReasonSynced {
		t.Errorf("AccessPermissionSync while the grant is kept: %s, want %s", got, v1alpha1.ReasonSynced)
	}
	if err := cp.Client.Get(ctx, key, &rbacv1.RoleBinding{}); err != nil {
		t.Errorf("the grant's RoleBinding: %v", err)
	}

	approvalTask(t, ns, "release-1", "rejected")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return apierrors.IsNotFound(cp.Client.Get(ctx, key, &rbacv1.RoleBinding{})) }) {
		t.Fatal("a rejection did not revoke the grant")
	}
}

// TestTenancyDeniedPublishesAskForPoliciesOnce: a publish the gate denies (the Pod lacks
// connectors/proxy and no AccessPolicy offers approval) is retried by kubelet, for each Pod
// that mounts the Connector, on each node: the node asks the API server for the namespace's
// policies once per Connector version and --approval-gating-cache-ttl, however many Pods
// ask (the node as deployed, its lists from the audit log). A policy made since is seen once
// the Connector changes (or the time has passed): the publish makes its AccessRequest.
func TestTenancyDeniedPublishesAskForPoliciesOnce(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.GatingCacheTTL, o.ApprovalWait = time.Hour, time.Second })
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), startGitServer(t, false))
	allowConnectorsAs(t, ns, "builder", "use-tool", "tool")
	since := time.Now()
	for i := range 3 {
		pod := podWithVolume(t, env.kubelet, ns, fmt.Sprintf("denied-%d", i), map[string]string{"connectors": "tool"}, nil)
		if err := publishOutcome(t, env, pod); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no AccessPolicy offers approval") {
			t.Fatalf("publish %d: %v, want denied for want of a policy", i, err)
		}
	}
	lists, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.Verb == "list" && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == "accesspolicies" && ev.ObjectRef.Namespace == ns && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lists) != 1 {
		t.Errorf("three denied publishes listed the namespace's AccessPolicies %d times, want once", len(lists))
	}
	policy := gatingPolicy("tool", "tool", pipelineCheck)
	policy.Namespace = ns
	policy.Spec.CheckGrantedPermission.Spec.RoleTemplate = roleRef(podRole)
	create(t, policy)
	var c v1alpha1.Connector
	if err := cp.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "tool"}, &c); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(c.DeepCopy())
	c.Labels = map[string]string{"team": "a"}
	if err := cp.Client.Patch(context.Background(), &c, patch); err != nil {
		t.Fatal(err)
	}
	pod := podWithVolume(t, env.kubelet, ns, "gated", map[string]string{"connectors": "tool"}, nil)
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	var perr error
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		perr = env.kubelet.Publish(context.Background(), pod, "connectors")
		return perr != nil && strings.Contains(perr.Error(), "AccessRequest "+ns+"/tool-gated-")
	}) {
		t.Fatalf("after a gating policy and a change of the Connector: %v, want the publish to have made its request", perr)
	}
}
