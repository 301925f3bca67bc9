package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/util/retry"
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

// setupApproval installs the CRD stand-ins (ApprovalTask, PipelineRun, TaskRun) and the
// built-in templates, and turns the approval flags on for the test.
func setupApproval(t *testing.T) { setupApprovalFor(t) }

// setupApprovalFor is setupApproval for tests and benchmarks.
func setupApprovalFor(t testing.TB) {
	t.Helper()
	root := controlplane.RepoRoot()
	for _, crd := range []string{"approvaltask-crd.yaml", "tekton-runs-crd.yaml"} {
		if _, err := cp.Kubectl(nil, "apply", "-f", filepath.Join(root, "test", "e2e", "testdata", crd)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Kubectl(nil, "apply", "-n", systemNS, "-f", filepath.Join(root, "deploy", "base", "templates.yaml")); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		_, err := cp.Kubectl(nil, "get", "approvaltasks,pipelineruns,taskruns", "-A")
		return err == nil
	}) {
		t.Fatal("the ApprovalTask, PipelineRun and TaskRun CRDs were not served")
	}
	// Multi-Connector volumes too: a rejected one must still revoke its earlier grants.
	setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true", "enable-connectors-approval": "true",
		features.KeyMultiConnector: "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
}

// approvalTask creates or updates the ApprovalTask of a PipelineRun with a state.
func approvalTask(t *testing.T, ns, run, state string) { approvalTaskFor(t, ns, run, state) }

// approvalTaskFor is approvalTask for tests and benchmarks (server-side apply, no kubectl
// process in the measured path).
func approvalTaskFor(t testing.TB, ns, run, state string) {
	approvalTaskNamed(t, ns, "approve-"+run, run, state)
}

// approvalTaskNamed is approvalTask of the given name. The PipelineRun comes first, as Tekton
// makes them: the built-in check reads only ApprovalTasks created since their run.
func approvalTaskNamed(t testing.TB, ns, name, run, state string) {
	t.Helper()
	pipelineRun(t, ns, run)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "openshift-pipelines.org/v1alpha1", "kind": "ApprovalTask",
		"metadata": map[string]any{"name": name, "namespace": ns,
			"labels": map[string]any{"tekton.dev/pipelineRun": run}},
		"status": map[string]any{"state": state},
	}}
	if err := cp.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("e2e"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
}

// pipelineRunPod creates what Tekton makes to run task of PipelineRun run: the PipelineRun
// (unless it exists), its TaskRun <run>-<task> and that TaskRun's Pod <run>-<task>-pod (of
// ServiceAccount builder, with one connectors volume), each owned by the one before through a
// controller ownerReference with its UID, and labelled as Tekton labels them; adjust changes
// the Pod before it is created.
func pipelineRunPod(t testing.TB, k *kubelet.Kubelet, ns, run, task string, attrs map[string]string, adjust ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	pr := pipelineRun(t, ns, run)
	tr := tektonRun("TaskRun", ns, run+"-"+task, map[string]any{"tekton.dev/pipelineRun": run, "tekton.dev/pipelineTask": task})
	tr.SetOwnerReferences([]metav1.OwnerReference{controllerRef(pr)})
	create(t, tr)
	asTekton := func(p *corev1.Pod) {
		p.Labels = map[string]string{"tekton.dev/pipelineRun": run, "tekton.dev/taskRun": tr.GetName(), "tekton.dev/pipelineTask": task}
		p.OwnerReferences = []metav1.OwnerReference{controllerRef(tr)}
	}
	return podOf(t, k, ns, tr.GetName()+"-pod", "builder", attrs, nil, append([]func(*corev1.Pod){asTekton}, adjust...)...)
}

// pipelineRun creates the PipelineRun run, unless it exists, and returns it.
func pipelineRun(t testing.TB, ns, run string) *unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	pr := tektonRun("PipelineRun", ns, run, map[string]any{"tekton.dev/pipeline": run})
	err := cp.Client.Create(ctx, pr)
	if apierrors.IsAlreadyExists(err) {
		err = cp.Client.Get(ctx, client.ObjectKeyFromObject(pr), pr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

// tektonRun is a tekton.dev/v1 object of the stand-in CRDs.
func tektonRun(kind, ns, name string, labels map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "tekton.dev/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels}}}
}

// controllerRef is a controller ownerReference to obj, as Tekton sets on what it creates.
func controllerRef(obj *unstructured.Unstructured) metav1.OwnerReference {
	return *metav1.NewControllerRef(obj, obj.GroupVersionKind())
}

// gatedProd starts the deployed drivers (adjust changes their options), and a namespace whose
// git Connector prod, which builder may use, is gated by its PipelineRun's ApprovalTask
// (AccessPolicy promote); and the Git server it reaches.
func gatedProd(t *testing.T, adjust func(*driver.Options)) (*proxyEnv, string, *gitserver.Server) {
	t.Helper()
	tool := startGitServer(t, false)
	setupApproval(t)
	env := startDeployedDrivers(t, adjust)
	ns := newNamespace(t)
	gitConnector(t, ns, "prod", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "prod")
	gateByApprovalTask(t, ns, "promote", "prod")
	return env, ns, tool
}

// gateByApprovalTask creates AccessPolicy policy holding the Connector until its PipelineRun's
// ApprovalTask is approved (the built-in check and role template).
func gateByApprovalTask(t *testing.T, ns, policy, connector string) {
	t.Helper()
	create(t, &v1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: policy, Namespace: ns},
		Spec: v1alpha1.AccessPolicySpec{
			Connector: v1alpha1.ConnectorSelector{Names: []string{connector}},
			CheckGrantedPermission: &v1alpha1.CheckGrantedPermission{Spec: v1alpha1.CheckGrantedPermissionSpec{
				Checks: []v1alpha1.Check{{Name: "approval", Ref: &v1alpha1.TemplateRef{
					ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-approvals-in-pipeline"}}}},
				RoleTemplate: v1alpha1.RoleTemplate{Ref: v1alpha1.TemplateRef{
					ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-use-connectors-proxy-in-pod"}}},
			}},
		}})
}

// TestApprovalEventsArePaced: the controllers' Events follow what tenants do (a request
// records one at each condition change); past --controller-event-qps and its burst they are
// dropped and counted, so that a storm of them leaves the controllers' status and grant
// writes their requests. The request's conditions still tell everything.
func TestApprovalEventsArePaced(t *testing.T) {
	tool := startGitServer(t, false)
	setupApproval(t)
	const burst = 3
	env := startDeployedDrivers(t, func(o *driver.Options) { o.EventQPS, o.EventBurst = 1e-9, burst })
	ctx := context.Background()
	ns := newNamespace(t)
	gitConnector(t, ns, "prod", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "prod")
	gateByApprovalTask(t, ns, "promote", "prod")
	dropped := gathered(t, "connectors_events_dropped_total", nil)
	pod := pipelineRunPod(t, env.kubelet, ns, "run-1", "promote", map[string]string{"connectors": "prod"})
	approvalTask(t, ns, "run-1", "approved")
	if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, pod, "connectors") == nil }) {
		t.Fatal("the approved Pod's volume was not published")
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	recorded := func() int {
		list, err := cp.Kube.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range list.Items {
			if ev.Regarding.Kind == "AccessRequest" {
				n++
			}
		}
		return n
	}
	if !kubelet.WaitUntil(10*time.Second, func() bool { return recorded() == burst }) || recorded() > burst {
		t.Errorf("%d Events on the request, want the burst's %d", recorded(), burst)
	}
	if got := gathered(t, "connectors_events_dropped_total", nil) - dropped; got < 1 {
		t.Errorf("connectors_events_dropped_total rose by %v, want the Events past the burst counted", got)
	}
}

// TestApprovalFinishedRequestsAreBoundedPerNamespace: a request lives in its Connector's
// namespace, which may be shared; the finished requests of one Pod namespace kept there are
// bounded (--accessrequest-retained-per-namespace), the oldest deleted before their retention,
// so that a tenant ending gated Pods in a loop cannot fill it.
func TestApprovalFinishedRequestsAreBoundedPerNamespace(t *testing.T) {
	env, ns, _ := gatedProd(t, func(o *driver.Options) { o.RetainedPerNamespace = 2 })
	ctx := context.Background()
	finished := func() []string {
		var list v1alpha1.AccessRequestList
		if err := cp.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ar := range list.Items {
			if ready := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionReady); ready != nil && ready.Reason == "Revoked" {
				names = append(names, ar.Spec.Context.ObjectRef.Name)
			}
		}
		slices.Sort(names)
		return names
	}
	var pods []string
	for i := range 4 {
		run := fmt.Sprintf("run-%d", i)
		pod := pipelineRunPod(t, env.kubelet, ns, run, "promote", map[string]string{"connectors": "prod"})
		approvalTask(t, ns, run, "approved")
		if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, pod, "connectors") == nil }) {
			t.Fatalf("%s was not published", pod.Name)
		}
		if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod.Name)
		// One at a time: which are the oldest is then known. A request's end is recorded in
		// whole seconds: the next ends in a later one.
		if !kubelet.WaitUntil(20*time.Second, func() bool { return slices.Contains(finished(), pod.Name) }) {
			t.Fatalf("%s's request was not revoked: %v", pod.Name, finished())
		}
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	}
	want := slices.Sorted(slices.Values(pods[2:]))
	if !kubelet.WaitUntil(20*time.Second, func() bool { return slices.Equal(finished(), want) }) {
		t.Errorf("finished requests kept: %v, want the newest two: %v", finished(), want)
	}
}

// TestApprovalIsNotBorrowedFromAnEarlierRun: the built-in check finds a PipelineRun's
// ApprovalTask by the run's name. A tenant deletes an approved run without its dependents (its
// ApprovalTask stays) and creates another of the same name, with no approval step: the check
// reads only the ApprovalTasks created since the new run was, so that the old approval is not
// the new run's; the new run's own approval is.
func TestApprovalIsNotBorrowedFromAnEarlierRun(t *testing.T) {
	env, ns, _ := gatedProd(t, nil)
	ctx := context.Background()
	first := pipelineRunPod(t, env.kubelet, ns, "release", "promote", map[string]string{"connectors": "prod"})
	approvalTask(t, ns, "release", "approved")
	if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, first, "connectors") == nil }) {
		t.Fatal("the approved run's Pod was not published")
	}
	if err := env.kubelet.Unpublish(ctx, first, "connectors"); err != nil {
		t.Fatal(err)
	}
	// Deleted without its dependents (kubectl delete --cascade=orphan; here no garbage
	// collector runs, and an orphaning delete would wait for one): the approved ApprovalTask
	// stays. The next run is created in a later second than it was.
	if err := cp.Client.Delete(ctx, tektonRun("PipelineRun", ns, "release", nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	again := pipelineRunPod(t, env.kubelet, ns, "release", "again", map[string]string{"connectors": "prod"})
	var publishErr error
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		publishErr = env.kubelet.Publish(ctx, again, "connectors")
		return status.Code(publishErr) == codes.Unavailable && strings.Contains(status.Convert(publishErr).Message(), "created since")
	}) {
		t.Fatalf("publish of a new run of the same name: %v, want Unavailable, waiting for an ApprovalTask created since the run", publishErr)
	}
	approvalTaskNamed(t, ns, "approve-release-again", "release", "approved")
	if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, again, "connectors") == nil }) {
		t.Fatal("the new run's own approval did not publish its Pod")
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), again, "connectors") })
}

// TestNodesWatchTheirAccessRequestsByName: a node watches each AccessRequest it makes for its
// Pods by name, in its namespace, which the API server's watch cache indexes; it neither lists
// nor watches AccessRequests cluster-wide (by its label), which would make it one more watcher
// of every request's change in the cluster, filtered only there (the node as deployed, its
// reads from the audit log, from its start; a volume whose record was lost, the one case of a
// list by the label, is not made here).
func TestNodesWatchTheirAccessRequestsByName(t *testing.T) {
	since := time.Now()
	env, ns, _ := gatedProd(t, nil)
	ctx := context.Background()
	pod := pipelineRunPod(t, env.kubelet, ns, "run-1", "promote", map[string]string{"connectors": "prod"})
	arName := approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})
	if err := env.kubelet.Publish(ctx, pod, "connectors"); status.Code(err) != codes.Unavailable {
		t.Fatalf("publish before approval: %v, want Unavailable", err)
	}
	approvalTask(t, ns, "run-1", "approved")
	if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, pod, "connectors") == nil }) {
		t.Fatal("the approved Pod was not published")
	}
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.ObjectRef != nil && ev.ObjectRef.Resource == "accessrequests" &&
			(ev.Verb == "list" || ev.Verb == "watch") && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := "fieldSelector=" + url.QueryEscape("metadata.name="+arName)
	watched := 0
	for _, ev := range reads {
		switch {
		case ev.ObjectRef.Namespace == "" || !strings.Contains(ev.RequestURI, "fieldSelector=metadata.name"):
			t.Errorf("the node's %s of AccessRequests %s: want only reads of one request by name", ev.Verb, ev.RequestURI)
		case ev.Verb == "watch" && ev.ObjectRef.Namespace == ns && strings.Contains(ev.RequestURI, byName):
			watched++
		}
	}
	if watched == 0 {
		t.Errorf("the node never watched its request %s/%s by name; its reads: %d", ns, arName, len(reads))
	}
}

// TestApprovalGatedPromotion runs the driver with the deployed RBAC only.
func TestApprovalGatedPromotion(t *testing.T) {
	env, ns, tool := gatedProd(t, nil)
	ctx := context.Background()
	pod := pipelineRunPod(t, env.kubelet, ns, "run-1", "promote", map[string]string{"connectors": "prod"})
	arName := approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})
	var publishErr error
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		publishErr = env.kubelet.Publish(ctx, pod, "connectors")
		return status.Code(publishErr) == codes.Unavailable
	}) {
		t.Fatalf("publish before approval: %v, want Unavailable", publishErr)
	}
	msg := status.Convert(publishErr).Message()
	if !strings.Contains(msg, ns+"/"+arName) || !strings.Contains(msg, "ApprovalTask") {
		t.Fatalf("Unavailable message %q does not name the AccessRequest and what it waits for", msg)
	}
	if n := mountCount(t, env.driver, env.kubelet.TargetPath(pod, "connectors")); n != 0 {
		t.Fatalf("%d mounts while pending", n)
	}

	approvalTask(t, ns, "run-1", "pending")
	if err := env.kubelet.Publish(ctx, pod, "connectors"); status.Code(err) != codes.Unavailable {
		t.Fatalf("publish with a pending ApprovalTask: %v", err)
	}
	// The controller's metrics show the request waiting (other tests' requests may be counted too).
	pending := map[string]string{"check": v1alpha1.ReasonPending}
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		return gathered(t, "connectors_accessrequests", pending) >= 1 &&
			gathered(t, "connectors_accessrequest_oldest_pending_seconds", nil) > 0
	}) {
		t.Errorf("connectors_accessrequests{check=Pending} is %v, the oldest pending %v s: want the pending request counted",
			gathered(t, "connectors_accessrequests", pending), gathered(t, "connectors_accessrequest_oldest_pending_seconds", nil))
	}
	passed := map[string]string{"outcome": v1alpha1.ReasonPassed}
	decided := gathered(t, "connectors_accessrequest_decision_seconds", passed)
	approvalTask(t, ns, "run-1", "approved")
	start := time.Now()
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatalf("publish after approval: %v", err)
	}
	if got := gathered(t, "connectors_accessrequest_decision_seconds", passed) - decided; got < 1 {
		t.Errorf("connectors_accessrequest_decision_seconds{outcome=Passed} counted %v decisions after the approval, want 1", got)
	}
	t.Logf("publish succeeded %s after the approval", time.Since(start).Round(time.Millisecond))
	vol := env.kubelet.TargetPath(pod, "connectors")
	token := visibleFiles(t, vol)["context.token"]
	refs := fmt.Sprintf("%s/namespaces/%s/connectors/prod/repo.git/info/refs?service=git-upload-pack", env.proxyURL, ns)
	bearer := map[string]string{"Authorization": "Bearer " + token}
	if !kubelet.WaitUntil(10*time.Second, func() bool { code, _ := do(t, noRedirects, newRequest(t, "GET", refs, bearer)); return code == 200 }) {
		t.Fatal("the proxy does not let the approved Pod's token through")
	}
	out, err := cp.Kubectl(nil, "describe", "accessrequest", "-n", ns, arName)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ApprovalTask " + ns + "/approve-run-1 is approved", "Granted", "AccessCheckReadyPassed"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl describe accessrequest lacks %q:\n%s", want, out)
		}
	}

	// Unpublish revokes: the RoleBinding goes, the request says so, the proxy refuses.
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		code, _ := do(t, noRedirects, newRequest(t, "GET", refs, bearer))
		return code == 403
	}) {
		t.Fatal("the proxy still lets the unpublished Pod's token through")
	}
	t.Logf("proxy refused %s after the unpublish", time.Since(revoked).Round(time.Millisecond))
	// The proxy may refuse before the controller has written the request's status: the grant's
	// RoleBinding goes first.
	var ar v1alpha1.AccessRequest
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: arName}, &ar); err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
		return c != nil && c.Reason == v1alpha1.ReasonPermissionCleanUp
	}) {
		t.Fatalf("AccessPermissionSync after unpublish: %+v", meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync))
	}
	if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: arName}, &rbacv1.RoleBinding{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the grant's RoleBinding is still there: %v", err)
	}
	// The whole story, as a person reads it: what it waited for, the object checked and its
	// state, when access was granted and when it was revoked.
	var described string
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		out, err := cp.Kubectl(nil, "describe", "accessrequest", "-n", ns, arName)
		described = out
		return err == nil && strings.Contains(out, "AccessPermissionSyncPermissionCleanUp") && strings.Contains(out, "ReadyRevoked")
	}) {
		t.Fatalf("describe never showed the revocation:\n%s", described)
	}
	checkGolden(t, "describe-accessrequest.golden", normalizeDescribe(described, map[string]string{
		arName: "<accessrequest>", ns: "<namespace>", tool.URL: "<git-server>", pod.Name: "<pod>"}))

	t.Run("rejected: only .error.json", func(t *testing.T) {
		rejected := pipelineRunPod(t, env.kubelet, ns, "run-2", "promote", map[string]string{"connectors": "prod"})
		approvalTask(t, ns, "run-2", "rejected")
		var err error
		if !kubelet.WaitUntil(20*time.Second, func() bool { err = env.kubelet.Publish(ctx, rejected, "connectors"); return err == nil }) {
			t.Fatalf("publish of a rejected request: %v", err)
		}
		files := visibleFiles(t, env.kubelet.TargetPath(rejected, "connectors"))
		if len(files) != 1 || !strings.Contains(files[".error.json"], "rejected") || !strings.Contains(files[".error.json"], "approve-run-2") {
			t.Fatalf("volume of a rejected request: %v", files)
		}
		if err := env.kubelet.Unpublish(ctx, rejected, "connectors"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Pod deletion revokes", func(t *testing.T) {
		third := pipelineRunPod(t, env.kubelet, ns, "run-3", "promote", map[string]string{"connectors": "prod"})
		approvalTask(t, ns, "run-3", "approved")
		if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, third, "connectors") == nil }) {
			t.Fatal("publish of an approved request failed")
		}
		name := approval.RequestName("prod", records.Pod{Namespace: ns, Name: third.Name, UID: string(third.UID)})
		if err := cp.Kube.CoreV1().Pods(ns).Delete(ctx, third.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			return apierrors.IsNotFound(cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &rbacv1.RoleBinding{}))
		}) {
			t.Fatal("deleting the Pod did not delete the grant")
		}
		_ = env.kubelet.Unpublish(ctx, third, "connectors")
	})
	t.Run("Pod completion revokes", func(t *testing.T) {
		done := pipelineRunPod(t, env.kubelet, ns, "run-5", "promote", map[string]string{"connectors": "prod"})
		approvalTaskFor(t, ns, "run-5", "approved")
		if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, done, "connectors") == nil }) {
			t.Fatal("publish of an approved request failed")
		}
		name := approval.RequestName("prod", records.Pod{Namespace: ns, Name: done.Name, UID: string(done.UID)})
		done.Status.Phase = corev1.PodSucceeded
		if err := cp.Client.Status().Update(ctx, done); err != nil {
			t.Fatal(err)
		}
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			return apierrors.IsNotFound(cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &rbacv1.RoleBinding{}))
		}) {
			t.Fatal("the Pod's completion did not delete the grant")
		}
		_ = env.kubelet.Unpublish(ctx, done, "connectors")
	})
	t.Run("Connector deletion revokes", func(t *testing.T) {
		gitConnector(t, ns, "staging", gitClass(t), tool)
		allowConnectorsAs(t, ns, "builder", "staging-use", "staging")
		policy := gatingPolicy("promote-staging", "staging", v1alpha1.Check{Name: "approval",
			Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-approvals-in-pipeline"}}})
		policy.Namespace = ns
		create(t, policy)
		fourth := pipelineRunPod(t, env.kubelet, ns, "run-4", "promote", map[string]string{"connectors": "staging"})
		approvalTask(t, ns, "run-4", "approved")
		if !kubelet.WaitUntil(20*time.Second, func() bool { return env.kubelet.Publish(ctx, fourth, "connectors") == nil }) {
			t.Fatal("publish of an approved request failed")
		}
		name := approval.RequestName("staging", records.Pod{Namespace: ns, Name: fourth.Name, UID: string(fourth.UID)})
		var staging v1alpha1.Connector
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "staging"}, &staging); err != nil {
			t.Fatal(err)
		}
		if err := cp.Client.Delete(ctx, &staging); err != nil {
			t.Fatal(err)
		}
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			return apierrors.IsNotFound(cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &rbacv1.RoleBinding{}))
		}) {
			t.Fatal("deleting the Connector did not delete the grant")
		}
		// The Connector made again (a GitOps replace): the Pod's revoked request is final. Its
		// mounted volume keeps its content and the Pod is told why, once, rather than wait for
		// an approval that never comes.
		waitRevoked(t, types.NamespacedName{Namespace: ns, Name: name})
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: staging.Name, Namespace: ns}, Spec: staging.Spec})
		var err error
		for range 2 {
			if err = env.kubelet.Publish(ctx, fourth, "connectors"); err != nil {
				t.Fatalf("republish after the Connector was made again: %v, want the volume kept", err)
			}
		}
		var kept *corev1.EventList
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			kept, err = cp.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + fourth.Name + ",reason=ConnectorsVolumeKept"})
			return err == nil && len(kept.Items) == 1 && strings.Contains(kept.Items[0].Message, "revoked") && strings.Contains(kept.Items[0].Message, name)
		}) {
			t.Fatalf("Events of the kept volume: %v %+v, want one naming the revoked request", err, kept)
		}
		_ = env.kubelet.Unpublish(ctx, fourth, "connectors")
	})
}

// TestEvaluationsReadInformers: every live request of a namespace is evaluated again at each
// change of a check object there (and every --accessrequest-pod-recheck-interval); the
// controller reads the check's objects from the informer it started for the kind, and the
// grant it holds from its cache of grants, not from the API server, so that those evaluations
// cost the API server only the Pod's read and what it finds changed (the controller as
// deployed, its requests from the audit log).
func TestEvaluationsReadInformers(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	pipelineGate(t, ns)
	approvalTask(t, ns, "release-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, pod); err != nil {
		t.Fatalf("the Pod of the approved PipelineRun: %v", err)
	}
	request := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns,
		Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}}
	conditions := func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions }
	since := time.Now()
	// Each change is evaluated: the check goes pending and passes again (the grant is kept).
	for range 3 {
		approvalTask(t, ns, "release-1", "pending")
		waitObjectCondition(t, request, conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionUnknown, v1alpha1.ReasonPending)
		approvalTask(t, ns, "release-1", "approved")
		waitObjectCondition(t, request, conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionTrue, v1alpha1.ReasonPassed)
	}
	// The evaluations' reads: not the AccessPolicy controller's of policies' default grants
	// (connectors-default-*), which it reads live at each reconcile, the initial ones of every
	// policy of the cluster, left by earlier tests, as the controller starts among them.
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.ControllerUser && (ev.Verb == "list" || ev.Verb == "get") && ev.ObjectRef != nil &&
			slices.Contains([]string{"approvaltasks", "roles", "rolebindings"}, ev.ObjectRef.Resource) &&
			!strings.HasPrefix(ev.ObjectRef.Name, "connectors-default-") && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range reads {
		got = append(got, ev.Verb+" "+ev.ObjectRef.Resource+" "+ev.ObjectRef.Name)
	}
	if len(got) != 0 {
		t.Fatalf("six evaluations of a granted request read from the API server %q, want nothing (its informers have them)", got)
	}
}

// TestUnchangedChecksWriteNothing: a check that matches several objects reads them from an
// informer, in no particular order; a recheck that finds what the last one found writes no
// status (each write goes to etcd and to the Pod's node, which drops the Pod's connectors/proxy
// answers and asks again). Four approved ApprovalTasks, a request granted by them, and a
// dozen rechecks: no write (the controller as deployed, its writes from the audit log).
func TestUnchangedChecksWriteNothing(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.PodRecheck = 250 * time.Millisecond })
	ns := newNamespace(t)
	for i := range 4 {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "openshift-pipelines.org/v1alpha1", "kind": "ApprovalTask",
			"metadata": map[string]any{"name": fmt.Sprintf("vote-%d", i), "namespace": ns, "labels": map[string]any{"vote": "release"}},
			"status":   map[string]any{"state": "approved"},
		}}
		if err := cp.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("e2e")); err != nil {
			t.Fatal(err)
		}
	}
	approvalTasks := v1alpha1.ObjectKindRef{APIVersion: "openshift-pipelines.org/v1alpha1", Kind: "ApprovalTask"}
	gatedConnector(t, ns, "votes", gitClass(t), startGitServer(t, false), v1alpha1.Check{Name: "votes", Spec: &v1alpha1.CheckSpec{
		Selector: v1alpha1.CheckSelector{ObjectRef: approvalTasks, MatchLabels: map[string]string{"vote": "release"}}}}, podRole)
	pod := pipelineRunPod(t, env.kubelet, ns, "release-1", "promote", map[string]string{"connectors": "votes"})
	if err := publishOutcome(t, env, pod); err != nil {
		t.Fatalf("publish, four approvals: %v", err)
	}
	since := time.Now()
	time.Sleep(3 * time.Second)
	// Written: an attempt the API server refused for a conflict (a recheck that ran on a cached
	// request older than the controller's own last write) wrote nothing.
	writes, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.ControllerUser && (ev.Verb == "update" || ev.Verb == "patch") && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == "accessrequests" && !ev.RequestReceivedTimestamp.Time.Before(since) &&
			ev.ResponseStatus != nil && ev.ResponseStatus.Code != 409
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) != 0 {
		t.Errorf("rechecks of an unchanged request wrote it %d times: %d", len(writes), writes[0].ResponseStatus.Code)
	}
}

// TestApprovalsAreNotBehindRechecks: a live request's recheck (nothing woke it; its Pod is read
// again, with its Tekton owners) takes a turn of --accessrequest-pod-recheck-qps, never waited
// for by a worker, and reads through a client of its own: at 10,000 live gated Pods rechecks
// alone would be past --kube-api-qps, with every approval behind them. Here the pace allows
// one recheck in all (the controller as deployed, its reads from the audit log): an approved
// Pod's request, rechecked every 200 ms, reads its Pod at most once more, while a change of its
// check is evaluated at once and another Pod is approved.
func TestApprovalsAreNotBehindRechecks(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.PodRecheck, o.PodRecheckQPS = 200*time.Millisecond, 1e-6 })
	ns := newNamespace(t)
	pod, key := approvedPod(t, env, ns)
	since := time.Now().Add(time.Second)
	time.Sleep(4 * time.Second)
	if reads := controllerPodReads(t, ns, since)[pod.Name]; reads > 1 {
		t.Errorf("the approved Pod was read %d times in 3 s of rechecks past their pace, want at most once", reads)
	}

	approvalTask(t, ns, "release-2", "approved")
	next := pipelineRunPod(t, env.kubelet, ns, "release-2", "promote", map[string]string{"connectors": "prod"})
	if err := publishOutcome(t, env, next); err != nil {
		t.Fatalf("another approved Pod, with rechecks past their pace: %v", err)
	}
	approvalTask(t, ns, "release-1", "rejected")
	conditions := func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions }
	waitObjectCondition(t, &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}},
		conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionFalse, v1alpha1.ReasonRejected)
}

// TestANewLeaderRechecksAtItsPace: a controller that starts (a new leader) lists every live
// request, and the Connectors, policies and check objects that would wake them; none of that
// is a change, so their evaluations are rechecks, in turns of --accessrequest-pod-recheck-qps,
// not all at once through --kube-api-qps before any approval. Here the new controller's pace
// allows no recheck (it starts with no turn in hand, and the next comes in 11 days): three
// approved Pods' requests read their Pods no more, while a change of a check is evaluated at
// once: the deferred rechecks started the watch of their check kind, which a new leader
// otherwise starts at the first evaluation that reads it.
func TestANewLeaderRechecksAtItsPace(t *testing.T) {
	setupApproval(t)
	env, controllerKubeconfig := startDeployedNode(t, nil)
	pace := func(qps float64) func(*driver.Options) {
		return func(o *driver.Options) { o.PodRecheck, o.PodRecheckQPS = time.Hour, qps }
	}
	stop := startDeployedController(t, env, controllerKubeconfig, pace(0))
	ns := newNamespace(t)
	pipelineGate(t, ns)
	var keys []types.NamespacedName
	for i := range 3 {
		run := fmt.Sprintf("release-%d", i)
		approvalTask(t, ns, run, "approved")
		pod := pipelineRunPod(t, env.kubelet, ns, run, "promote", map[string]string{"connectors": "prod"})
		if err := publishOutcome(t, env, pod); err != nil {
			t.Fatalf("approved Pod %d: %v", i, err)
		}
		keys = append(keys, types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})})
	}
	stop()

	since := time.Now()
	startDeployedController(t, env, controllerKubeconfig, pace(1e-6))
	time.Sleep(4 * time.Second)
	reads := controllerPodReads(t, ns, since)
	if total := reads["release-0-promote-pod"] + reads["release-1-promote-pod"] + reads["release-2-promote-pod"]; total != 0 {
		t.Errorf("a new controller read the three approved Pods %d times (%v), want none", total, reads)
	}
	approvalTask(t, ns, "release-0", "rejected")
	conditions := func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions }
	waitObjectCondition(t, &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keys[0].Name}},
		conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionFalse, v1alpha1.ReasonRejected)
}

// TestRechecksTakeTurnsByNamespace: when more rechecks are due than the pace allows, they are
// given their turns by namespace, not as they came. A tenant with twelve live Pods and one with
// a single Pod, every request due every 200 ms, four turns a second: between two reads of the
// single Pod the controller reads a Pod or two of the twelve (their turns alternate), not all
// twelve (first come, first served). One tenant's many Pods do not push back another's
// rechecks, the backstop for a Pod that ends without its unpublish. (Measured in reads between
// reads, so that the live requests earlier tests left, which this controller rechecks too,
// change nothing.)
func TestRechecksTakeTurnsByNamespace(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.PodRecheck, o.PodRecheckQPS = 200*time.Millisecond, 4 })
	tool := startGitServer(t, false)
	many, one := gatedPromotionOf(t, tool), gatedPromotionOf(t, tool)
	waitGranted(t, append(liveGatedRequestsIn(t, env, many, 12), liveGatedRequestsIn(t, env, one, 1)...))
	since := time.Now()
	var reads []string
	if !kubelet.WaitUntil(90*time.Second, func() bool {
		reads = controllerPodReadOrder(t, since, many, one)
		return len(slices.DeleteFunc(slices.Clone(reads), func(ns string) bool { return ns != one })) >= 4
	}) {
		t.Fatalf("the single Pod was not rechecked four times in 90 s: %v", reads)
	}
	most, run := 0, -1 // the most reads of the twelve between two reads of the single Pod
	for _, ns := range reads {
		switch {
		case ns == one:
			most, run = max(most, run), 0
		case run >= 0:
			run++
		}
	}
	if most > 5 {
		t.Errorf("up to %d of the twelve Pods were read between two reads of the single Pod, want at most 5 (turns by namespace)", most)
	}
}

// controllerPodReadOrder lists, in the order the API server received them, the namespaces
// of the controller's reads of Pods of namespaces since since.
func controllerPodReadOrder(t *testing.T, since time.Time, namespaces ...string) []string {
	t.Helper()
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.ControllerUser && ev.Verb == "get" && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == "pods" && slices.Contains(namespaces, ev.ObjectRef.Namespace) && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(reads, func(a, b auditv1.Event) int {
		return a.RequestReceivedTimestamp.Time.Compare(b.RequestReceivedTimestamp.Time)
	})
	order := make([]string, len(reads))
	for i, ev := range reads {
		order[i] = ev.ObjectRef.Namespace
	}
	return order
}

// TestCheckChangesWakeOnlyTheirRequests: a change of a check object wakes the live requests
// whose checks select it, not every live request of Pods of its namespace (each evaluation reads
// the Pod and its Tekton owners from the API server, and runs every state). Six PipelineRuns'
// Pods wait on their own ApprovalTasks; approving two of them, and writing the status of the
// Connector and of its policy (as their controllers do at a probe or match that changes it),
// reads no other request's Pod (the controller as deployed, its reads from the audit log; the
// Pod recheck is out of the way) and each approved request's Pod twice: its evaluation, and the
// read again before its grant is written — neither the events of the controller's own status
// writes nor one watch per worker of the check kind evaluate it again. A task relabelled away
// from its request's selector is still seen by that request.
func TestCheckChangesWakeOnlyTheirRequests(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.PodRecheck = time.Hour })
	ns := newNamespace(t)
	pipelineGate(t, ns)
	const runs = 6
	requests := make([]*v1alpha1.AccessRequest, runs)
	pods := make([]*corev1.Pod, runs)
	for i := range runs {
		run := fmt.Sprintf("run-%d", i)
		approvalTask(t, ns, run, "pending")
		pods[i] = pipelineRunPod(t, env.kubelet, ns, run, "build", map[string]string{"connectors": "prod"})
	}
	start := time.Now()
	for i, pod := range pods {
		requests[i] = podRequest("prod", pod, "builder")
		create(t, requests[i])
	}
	conditions := func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions }
	for _, r := range requests {
		waitObjectCondition(t, r, conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionUnknown, v1alpha1.ReasonPending)
	}
	// Each request is evaluated when created and again after its first status write; the
	// count is taken once those are done and nothing more comes.
	var settled map[string]int
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		before := controllerPodReads(t, ns, start)
		time.Sleep(500 * time.Millisecond)
		settled = controllerPodReads(t, ns, start)
		return maps.Equal(before, settled) && len(settled) == runs
	}) {
		t.Fatalf("the requests' evaluations did not settle: %v", settled)
	}

	// A status write of the Connector or of its policy (their controllers' at each probe or
	// match that changes them) wakes no request either.
	key := types.NamespacedName{Namespace: ns, Name: "prod"}
	noise := metav1.Condition{Type: "E2EStatusOnly", Status: metav1.ConditionTrue, Reason: "Test", Message: "a change of the status alone"}
	statusOnly := func(obj client.Object, conditions func() *[]metav1.Condition) {
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := cp.Client.Get(context.Background(), key, obj); err != nil {
				return err
			}
			meta.SetStatusCondition(conditions(), noise)
			return cp.Client.Status().Update(context.Background(), obj)
		}); err != nil {
			t.Fatal(err)
		}
	}
	connector, policy := &v1alpha1.Connector{}, &v1alpha1.AccessPolicy{}
	statusOnly(connector, func() *[]metav1.Condition { return &connector.Status.Conditions })
	statusOnly(policy, func() *[]metav1.Condition { return &policy.Status.Conditions })
	for _, i := range []int{0, runs - 1} {
		approvalTask(t, ns, fmt.Sprintf("run-%d", i), "approved")
		waitObjectCondition(t, requests[i], conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionTrue, v1alpha1.ReasonPassed)
	}
	after := controllerPodReads(t, ns, start)
	for i, pod := range pods {
		read := after[pod.Name] - settled[pod.Name]
		switch approved := i == 0 || i == runs-1; {
		case approved && read != 2:
			// Its evaluation, and the read again just before its grant is written; not a third
			// for the events of the controller's own status writes.
			t.Errorf("the Pod of approved %s was read %d times, want twice (an evaluation, and again before its grant)", pod.Name, read)
		case !approved && read != 0:
			t.Errorf("the Pod %s, whose task did not change, was read %d times: other requests' tasks, or status writes, woke its request", pod.Name, read)
		}
	}

	// The task of run-2 leaves the request's selector: the request, woken by the task as it was,
	// finds none.
	relabel := &unstructured.Unstructured{}
	relabel.SetGroupVersionKind(schema.GroupVersionKind{Group: "openshift-pipelines.org", Version: "v1alpha1", Kind: "ApprovalTask"})
	if err := cp.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "approve-run-2"}, relabel); err != nil {
		t.Fatal(err)
	}
	relabel.SetLabels(map[string]string{"tekton.dev/pipelineRun": "another-run"})
	if err := cp.Client.Update(context.Background(), relabel); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		var ar v1alpha1.AccessRequest
		if err := cp.Client.Get(context.Background(), client.ObjectKeyFromObject(requests[2]), &ar); err != nil {
			return false
		}
		c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady)
		return c != nil && strings.Contains(c.Message, "no ApprovalTask")
	}) {
		t.Fatal("the request of run-2 did not see its task leave its selector")
	}
}

// controllerPodReads counts the controller's reads of each Pod of namespace ns since a time,
// from the audit log.
func controllerPodReads(t *testing.T, ns string, since time.Time) map[string]int {
	t.Helper()
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.ControllerUser && ev.Verb == "get" && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == "pods" && ev.ObjectRef.Namespace == ns && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range reads {
		count[ev.ObjectRef.Name]++
	}
	return count
}

// TestATemplateChangeWakesItsRequests: a request's checks are read again when a check template
// its policy names changes (a change of an object its checks select wakes it, and the template
// decides which objects those are): a waiting request whose template is corrected to select the
// approved ApprovalTask passes with no other event (the Pod recheck is out of the way).
func TestATemplateChangeWakesItsRequests(t *testing.T) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.PodRecheck = time.Hour })
	ns := newNamespace(t)
	template := func(label string) map[string]string {
		return map[string]string{"check": "selector:\n  objectRef:\n    apiVersion: openshift-pipelines.org/v1alpha1\n    kind: ApprovalTask\n" +
			"  matchLabels:\n    " + label + ": '{{ .pipelineRun.metadata.name }}'\n"}
	}
	name := "e2e-check-" + strings.ToLower(t.Name()[4:12])
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: systemNS}, Data: template("e2e.example/not-set")}
	create(t, cm)
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), cm) })
	check := v1alpha1.Check{Name: "approval", Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: name}}}
	gatedConnector(t, ns, "prod", gitClass(t), startGitServer(t, false), check, podRole)
	approvalTask(t, ns, "run-1", "approved")
	pod := pipelineRunPod(t, env.kubelet, ns, "run-1", "build", map[string]string{"connectors": "prod"})
	request := podRequest("prod", pod, "builder")
	create(t, request)
	conditions := func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions }
	waitObjectCondition(t, request, conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionUnknown, v1alpha1.ReasonPending)

	cm.Data = template("tekton.dev/pipelineRun")
	if err := cp.Client.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	waitObjectCondition(t, request, conditions, v1alpha1.ConditionAccessCheckReady, metav1.ConditionTrue, v1alpha1.ReasonPassed)
}

// podRequest is the AccessRequest a node makes for pod to use the Connector of its namespace,
// for ServiceAccount sa (the Pod's, unless the request is forged).
func podRequest(connector string, pod *corev1.Pod, sa string) *v1alpha1.AccessRequest {
	return &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace,
			Name: approval.RequestName(connector, records.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)})},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: pod.Namespace},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: connector},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID}},
		}}
}

// TestTemplateCheckKindsAreWatchedFromTheStart: the kinds the system namespace's check
// templates name (the built-in ApprovalTask's) are watched as the controller starts, before
// any request needs them: looked up at their first evaluation, after a leader change, they
// would wait behind the lookups that tenants' policies naming hundreds of kinds take.
func TestTemplateCheckKindsAreWatchedFromTheStart(t *testing.T) {
	setupApproval(t)
	start := time.Now()
	startDeployedDrivers(t, nil)
	watched := func() bool {
		events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.ControllerUser && ev.ObjectRef != nil && ev.ObjectRef.Resource == "approvaltasks" &&
				ev.Verb == "watch" && !ev.RequestReceivedTimestamp.Time.Before(start)
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(events) > 0
	}
	if !kubelet.WaitUntil(30*time.Second, watched) {
		t.Fatal("the controller does not watch ApprovalTasks, which the built-in check template names, until a request needs them")
	}
}
