//go:build realnode

package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// tektonDirEnv names the directory hack/tekton.sh prints: Tekton's binaries and config/.
const tektonDirEnv = "TEKTON_DIR"

var (
	tektonOnce sync.Once
	tektonErr  error
)

// startTekton installs Tekton Pipelines on the node once: its namespace, CRDs, ConfigMaps and
// webhook configurations from the release's config/, the entrypoint and nop images built from
// its binaries, and its webhook and controller as node processes (the control plane has no
// Service network for an in-cluster client; the API server reaches the webhook at the endpoints
// of its Service).
func startTekton(t *testing.T) {
	t.Helper()
	tektonOnce.Do(func() { tektonErr = installTekton() })
	if tektonErr != nil {
		t.Fatalf("Tekton: %v", tektonErr)
	}
}

func installTekton() error {
	dir := os.Getenv(tektonDirEnv)
	if dir == "" {
		return fmt.Errorf("%s is not set: run the lane with make e2e (hack/tekton.sh builds Tekton)", tektonDirEnv)
	}
	if err := importTektonImages(dir); err != nil {
		return err
	}
	config := filepath.Join(dir, "config")
	if _, err := node.CP.Kubectl(nil, "apply", "--server-side", "-f", filepath.Join(config, "100-namespace"), "-f", filepath.Join(config, "300-crds")); err != nil {
		return err
	}
	// kubectl wait fails at once on a CRD that has no conditions yet, so it is retried.
	var waitErr error
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		_, waitErr = node.CP.Kubectl(nil, "wait", "--for=condition=Established", "--timeout=10s", "crd/taskruns.tekton.dev", "crd/tasks.tekton.dev")
		return waitErr == nil
	}) {
		return waitErr
	}
	if _, err := node.CP.Kubectl(nil, "apply", "--server-side", "-f", config); err != nil {
		return err
	}
	if err := startTektonWebhook(dir); err != nil {
		return err
	}
	// Tekton wants every image flag set; the unused.invalid ones are for what no TaskRun here
	// does (Windows steps, sidecar log results, workingDir), and would fail to pull if it did.
	return startTektonProcess("tekton-controller", filepath.Join(dir, "controller"),
		[]string{"CONFIG_DEFAULTS_NAME=config-defaults", "CONFIG_LEADERELECTION_NAME=config-leader-election-controller", "CONFIG_SPIRE=config-spire"},
		"-disable-ha", "-entrypoint-image=localhost/tekton-entrypoint:e2e", "-nop-image=localhost/tekton-nop:e2e",
		"-shell-image=localhost/busybox:e2e", "-shell-image-win=unused.invalid/windows",
		"-sidecarlogresults-image=unused.invalid/sidecarlogresults", "-workingdirinit-image=unused.invalid/workingdirinit")
}

// importTektonImages builds the images Tekton's Pods run its binaries from, at /ko-app/<name>
// where ko puts them, and imports them into containerd.
func importTektonImages(dir string) error {
	work, err := os.MkdirTemp("", "tekton-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	images := map[string]string{}
	for _, b := range []string{"entrypoint", "nop"} {
		ref, tarball := "localhost/tekton-"+b+":e2e", filepath.Join(work, b+".tar")
		if err := buildImage(files{"ko-app": "", "ko-app/" + b: filepath.Join(dir, b)}, ref, tarball, "/ko-app/"+b); err != nil {
			return err
		}
		images[ref] = tarball
	}
	return node.importImages(images)
}

// startTektonProcess runs one of Tekton's commands against the control plane with the
// environment its Deployment gives it, and ports of its own for probes, profiling and metrics.
func startTektonProcess(name, bin string, env []string, args ...string) error {
	env = append(env, "SYSTEM_NAMESPACE=tekton-pipelines", "METRICS_DOMAIN=tekton.dev/pipeline",
		"CONFIG_LOGGING_NAME=config-logging", "CONFIG_OBSERVABILITY_NAME=config-observability",
		"CONFIG_FEATURE_FLAGS_NAME=feature-flags")
	for _, key := range []string{"PROBES_PORT", "PROFILING_PORT", "METRICS_PROMETHEUS_PORT"} {
		port, err := freePort()
		if err != nil {
			return err
		}
		env = append(env, fmt.Sprintf("%s=%d", key, port))
	}
	return node.start(name, env, append([]string{bin, "-kubeconfig=" + node.CP.Kubeconfig}, args...)...)
}

// tektonWebhookService is the Service the webhook configurations and CRD conversions name.
const tektonWebhookService = "tekton-pipelines-webhook"

// startTektonWebhook runs Tekton's webhook on the host, gives its Service an EndpointSlice on the
// host's end of the tools' veth, an address the lane made (what the EndpointSlice controller
// would do for its Pod), and waits until the API server
// sends TaskRuns through it: an invalid TaskRun is refused with Tekton's own message.
func startTektonWebhook(dir string) error {
	ctx, kube := context.Background(), node.CP.Kube
	port, err := freePort()
	if err != nil {
		return err
	}
	portName, proto := "https-webhook", corev1.ProtocolTCP
	if _, err := kube.CoreV1().Services("tekton-pipelines").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: tektonWebhookService},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: portName, Port: 443, TargetPort: intstr.FromInt32(int32(port))}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	ready := true
	if _, err := kube.DiscoveryV1().EndpointSlices("tekton-pipelines").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: tektonWebhookService + "-e2e", Labels: map[string]string{discoveryv1.LabelServiceName: tektonWebhookService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ToolsHostIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: ptrInt32(int32(port)), Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := startTektonProcess("tekton-webhook", filepath.Join(dir, "webhook"),
		[]string{"CONFIG_LEADERELECTION_NAME=config-leader-election-webhook", fmt.Sprintf("WEBHOOK_PORT=%d", port),
			"WEBHOOK_SERVICE_NAME=" + tektonWebhookService, "WEBHOOK_SECRET_NAME=webhook-certs",
			"WEBHOOK_ADMISSION_CONTROLLER_NAME=webhook.pipeline.tekton.dev"}); err != nil {
		return err
	}
	invalid := []byte("{\"apiVersion\":\"tekton.dev/v1\",\"kind\":\"TaskRun\",\"metadata\":{\"name\":\"probe\",\"namespace\":\"tekton-pipelines\"},\"spec\":{}}")
	var last string
	if !kubelet.WaitUntil(120*time.Second, func() bool {
		out, err := node.CP.Kubectl(invalid, "create", "--dry-run=server", "-f", "-")
		last = out
		return err != nil && strings.Contains(out, "validation.webhook.pipeline.tekton.dev")
	}) {
		return fmt.Errorf("the API server does not send TaskRuns to Tekton's webhook (last answer: %s)\n--- webhook ---\n%s", last, node.tail("tekton-webhook"))
	}
	return nil
}

// TestTektonTaskRunClonesThroughProxy applies deploy/examples/tekton/git-clone.yaml (its
// namespace, Git address, credential and image replaced by the test's): the TaskRun, run by
// Tekton's own controller with a csi: workspace for the git Connector, clones through the
// reverse proxy with only the rendered .gitconfig and succeeds; its result is the commit the
// Git server has, and the Git server saw the credential only the proxy holds.
func TestTektonTaskRunClonesThroughProxy(t *testing.T) {
	startTekton(t)
	ns := "tekton"
	createNamespace(t, ns)
	tool := applyCloneExample(t, ns)
	status := waitTaskRun(t, ns, "clone")
	checkClone(t, tool, status)
	pod, err := node.CP.Kube.CoreV1().Pods(ns).Get(context.Background(), status.PodName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(pod.Spec); strings.Contains(string(b), tool.Password) || strings.Contains(string(b), "git-credentials") {
		t.Error("the TaskRun's Pod spec carries the Git credential or its Secret")
	}
	deleteAndCheckUnmounted(t, pod)
}

// TestTektonTaskRunWaitsForApproval: the example's TaskRun as the one task of PipelineRun
// release-1 (Tekton creates TaskRun release-1-clone owned by the PipelineRun, and its Pod owned
// by that TaskRun), with the git Connector gated by an AccessPolicy with the built-in check:
// its Pod waits (an event names the AccessRequest) until the PipelineRun's ApprovalTask is
// approved, then the TaskRun succeeds, and when its Pod completes the grant is cleaned up.
func TestTektonTaskRunWaitsForApproval(t *testing.T) {
	startTekton(t)
	ctx := context.Background()
	ns := "tekton-approval"
	createNamespace(t, ns)
	gateByApproval(t, ns, "git", checkPipelineRun)
	tool, example := cloneExample(t, ns)
	if _, err := node.CP.Kubectl(inPipelineRun(t, example, "release-1"), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	const taskRun = "release-1-clone"
	var podName string
	if !kubelet.WaitUntil(60*time.Second, func() bool { podName = getTaskRun(t, ns, taskRun).PodName; return podName != "" }) {
		t.Fatalf("Tekton made no Pod for the PipelineRun's TaskRun\n--- tekton ---\n%s", node.tail("tekton-controller"))
	}
	t.Logf("event: %s", waitEvent(t, ns, podName, "waiting for AccessRequest "+ns+"/git-"+podName+"-"))
	if st := getTaskRun(t, ns, taskRun); st.succeeded() != "" {
		t.Fatalf("the TaskRun finished before the approval: %+v", st)
	}
	approve(t, ns, "tekton.dev/pipelineRun", "release-1")
	status := waitTaskRun(t, ns, taskRun)
	checkClone(t, tool, status)
	var requests v1alpha1.AccessRequestList
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		if err := node.CP.Client.List(ctx, &requests, client.InNamespace(ns)); err != nil || len(requests.Items) != 1 {
			return false
		}
		c := meta.FindStatusCondition(requests.Items[0].Status.Conditions, v1alpha1.ConditionAccessPermissionSync)
		return c != nil && c.Reason == v1alpha1.ReasonPermissionCleanUp
	}) {
		t.Fatalf("the completed TaskRun's grant was not cleaned up: %+v", requests.Items)
	}
}

// applyCloneExample applies cloneExample's example and returns its Git server.
func applyCloneExample(t *testing.T, ns string) *gitserver.Server {
	t.Helper()
	tool, example := cloneExample(t, ns)
	if _, err := node.CP.Kubectl(example, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	return tool
}

// cloneExample starts a Git server and returns deploy/examples/tekton/git-clone.yaml for the
// (existing) namespace ns with the server's address and credential and the lane's git image.
func cloneExample(t *testing.T, ns string) (*gitserver.Server, []byte) {
	t.Helper()
	tool := startGitTool(t, false)
	pairs := append([]string{"namespace: team", "namespace: " + ns, "docker.io/alpine/git:latest", "localhost/git:e2e"},
		gitPlaceholders(tool, true)...)
	return tool, exampleWith(t, filepath.Join(controlplane.RepoRoot(), "deploy", "examples", "tekton", "git-clone.yaml"), pairs...)
}

// inPipelineRun replaces the example's TaskRun by PipelineRun run with one task, clone: the
// TaskRun's taskSpec, params and workspaces, run as its ServiceAccount. Tekton itself then
// makes the TaskRun <run>-clone and its Pod, each owned by the one before.
func inPipelineRun(t *testing.T, example []byte, run string) []byte {
	t.Helper()
	docs := strings.Split(string(example), "\n---\n")
	for i, doc := range docs {
		var tr struct {
			Kind     string
			Metadata struct{ Namespace string }
			Spec     struct {
				ServiceAccountName string           `json:"serviceAccountName"`
				Params             []map[string]any `json:"params"`
				Workspaces         []map[string]any `json:"workspaces"`
				TaskSpec           map[string]any   `json:"taskSpec"`
			}
		}
		if err := yaml.Unmarshal([]byte(doc), &tr); err != nil {
			t.Fatal(err)
		}
		if tr.Kind != "TaskRun" {
			continue
		}
		var params, taskParams, workspaces, taskWorkspaces []map[string]any
		for _, p := range tr.Spec.Params {
			params = append(params, map[string]any{"name": p["name"]})
			taskParams = append(taskParams, map[string]any{"name": p["name"], "value": fmt.Sprintf("$(params.%s)", p["name"])})
		}
		for _, w := range tr.Spec.Workspaces {
			workspaces = append(workspaces, map[string]any{"name": w["name"]})
			taskWorkspaces = append(taskWorkspaces, map[string]any{"name": w["name"], "workspace": w["name"]})
		}
		pr := map[string]any{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
			"metadata": map[string]any{"name": run, "namespace": tr.Metadata.Namespace},
			"spec": map[string]any{
				"taskRunTemplate": map[string]any{"serviceAccountName": tr.Spec.ServiceAccountName},
				"params":          tr.Spec.Params,
				"workspaces":      tr.Spec.Workspaces,
				"pipelineSpec": map[string]any{"params": params, "workspaces": workspaces, "tasks": []any{map[string]any{
					"name": "clone", "taskSpec": tr.Spec.TaskSpec, "params": taskParams, "workspaces": taskWorkspaces}}},
			}}
		b, err := yaml.Marshal(pr)
		if err != nil {
			t.Fatal(err)
		}
		docs[i] = string(b)
		return []byte(strings.Join(docs, "\n---\n"))
	}
	t.Fatal("the example has no TaskRun")
	return nil
}

// waitTaskRun waits for a TaskRun to succeed.
func waitTaskRun(t *testing.T, ns, name string) taskRunStatus {
	t.Helper()
	var status taskRunStatus
	if !kubelet.WaitUntil(180*time.Second, func() bool {
		status = getTaskRun(t, ns, name)
		return status.succeeded() != ""
	}) {
		t.Fatalf("the TaskRun did not finish: %+v\n--- its Pod's events ---\n%s\n--- driver ---\n%s\n--- kubelet ---\n%s",
			status, podEvents(ns, status.PodName), node.tail("driver"), node.tail("kubelet"))
	}
	if status.succeeded() != "True" {
		out, _ := node.CP.Kubectl(nil, "logs", "-n", ns, status.PodName, "--all-containers")
		t.Fatalf("the TaskRun failed: %+v\n--- pod logs ---\n%s\n--- driver ---\n%s", status, out, node.tail("driver"))
	}
	return status
}

// checkClone checks that the clone went through the proxy and got the server's commit.
func checkClone(t *testing.T, tool *gitserver.Server, status taskRunStatus) {
	t.Helper()
	head, err := tool.Head()
	if err != nil {
		t.Fatal(err)
	}
	if got := status.result("commit"); got != head {
		t.Errorf("the TaskRun's commit result is %q, the Git server's main is %q", got, head)
	}
	var authorized bool
	for _, r := range tool.Requests() {
		authorized = authorized || r.Authorization == "Basic "+basicOf(tool.Username, tool.Password)
	}
	if !authorized {
		t.Error("no request reached the Git server with the Connector's credential: the clone did not go through the proxy")
	}
}

// TestTektonExampleIsValid: each file of deploy/examples/tekton applies (server-side dry run, strict field
// validation) against Tekton's real CRDs and admission webhook.
func TestTektonExampleIsValid(t *testing.T) {
	startTekton(t)
	root := controlplane.RepoRoot()
	if _, err := node.CP.Kubectl(nil, "apply", "-f", filepath.Join(root, "test", "e2e", "testdata", "approvaltask-crd.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.CP.Kubectl(nil, "create", "namespace", "team"); err != nil {
		t.Fatal(err)
	}
	out, err := node.CP.Kubectl(nil, "apply", "--dry-run=server", "--validate=strict", "-f", filepath.Join(root, "deploy", "examples", "tekton"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pipelinerun.tekton.dev/release-42 created (server dry run)", "taskrun.tekton.dev/clone created (server dry run)"} {
		if !strings.Contains(out, want) {
			t.Errorf("an example's run was not accepted (no %q):\n%s", want, out)
		}
	}
}

// taskRunStatus is the part of a TaskRun's status the tests read.
type taskRunStatus struct {
	PodName    string `json:"podName"`
	Conditions []struct {
		Type, Status, Reason, Message string
	} `json:"conditions"`
	Results []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"results"`
}

func (s taskRunStatus) succeeded() string {
	for _, c := range s.Conditions {
		if c.Type == "Succeeded" && c.Status != "Unknown" {
			return c.Status
		}
	}
	return ""
}

func (s taskRunStatus) result(name string) string {
	for _, r := range s.Results {
		if r.Name == name {
			return r.Value
		}
	}
	return ""
}

func getTaskRun(t *testing.T, ns, name string) taskRunStatus {
	t.Helper()
	var tr struct {
		Status taskRunStatus `json:"status"`
	}
	out, err := node.CP.Kubectl(nil, "get", "taskrun", "-n", ns, name, "-o", "json")
	if err == nil {
		_ = json.Unmarshal([]byte(out), &tr)
	}
	return tr.Status
}
