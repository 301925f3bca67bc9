package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// helmBinary is the helm CLI's path, which hack/tools/helm.sh builds once and prints last.
var helmBinary = sync.OnceValues(func() (string, error) {
	out, err := exec.Command(filepath.Join(controlplane.RepoRoot(), "hack", "tools", "helm.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("hack/tools/helm.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
})

// helm runs the real helm CLI (built from helm's Go module by hack/tools/helm.sh).
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := helmBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm %s: %v: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// helmTemplate renders a chart (deploy/chart when chart is "") as release "connectors" in
// namespace ns, CRDs included, with --set values.
func helmTemplate(t *testing.T, chart, ns string, set ...string) (string, error) {
	t.Helper()
	if chart == "" {
		chart = filepath.Join(controlplane.RepoRoot(), "deploy", "chart")
	}
	args := []string{"template", "connectors", chart, "--namespace", ns, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return helm(t, args...)
}

// renderedObjects decodes a multi-document YAML stream into its objects, keyed by
// kind/namespace/name; a key seen twice fails the test.
func renderedObjects(t *testing.T, stream string) map[string]map[string]any {
	t.Helper()
	objects := map[string]map[string]any{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects
		}
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		var obj map[string]any
		if err := json.Unmarshal(js, &obj); err != nil {
			t.Fatal(err)
		}
		if obj == nil {
			continue // a document of comments only
		}
		meta, _ := obj["metadata"].(map[string]any)
		key := fmt.Sprintf("%s/%v/%v", obj["kind"], meta["namespace"], meta["name"])
		if _, dup := objects[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		objects[key] = obj
	}
}

// withoutHelmLabels drops the labels the chart adds for Helm's own tooling.
func withoutHelmLabels(obj map[string]any) map[string]any {
	meta, _ := obj["metadata"].(map[string]any)
	labels, _ := meta["labels"].(map[string]any)
	for _, l := range []string{"app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart"} {
		delete(labels, l)
	}
	if labels != nil && len(labels) == 0 {
		delete(meta, "labels")
	}
	return obj
}

// TestHelmChartMatchesKustomizeBase: deploy/chart passes helm lint --strict; with its default
// values (and its namespace created) it renders exactly the objects of deploy/base, Helm's own labels aside; and it passes
// the same strict server-side dry run the base does.
func TestHelmChartMatchesKustomizeBase(t *testing.T) {
	if out, err := helm(t, "lint", "--strict", filepath.Join(controlplane.RepoRoot(), "deploy", "chart")); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, "0 chart(s) failed") {
		t.Fatalf("helm lint:\n%s", out)
	}
	chart, err := helmTemplate(t, "", systemNS, "namespace.create=true")
	if err != nil {
		t.Fatal(err)
	}
	base, err := cp.Kubectl(nil, "kustomize", filepath.Join(controlplane.RepoRoot(), "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	fromChart, fromBase := renderedObjects(t, chart), renderedObjects(t, base)
	for key, obj := range fromChart {
		fromChart[key] = withoutHelmLabels(obj)
	}
	if len(fromBase) < 40 {
		t.Fatalf("the kustomize base rendered only %d objects", len(fromBase))
	}
	if diff := cmp.Diff(fromBase, fromChart); diff != "" {
		t.Errorf("the chart's defaults differ from deploy/base (-base +chart):\n%s", diff)
	}
	// Strict: an unknown or duplicate field fails the apply.
	if out, err := cp.Kubectl([]byte(chart), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestHelmChartValues: each documented value reaches the objects, in another namespace, and
// that rendering passes the strict server-side dry run; bad values fail naming what is wrong.
func TestHelmChartValues(t *testing.T) {
	const ns = "connectors-ops"
	digest := "sha256:" + strings.Repeat("cd", 32)
	chart, err := helmTemplate(t, "", ns, "namespace.create=true",
		"image.repository=registry.example.com/connectors-csi", "image.digest="+digest,
		"features.enable-connectors-approval=true", "classes.oci=false", "classes.npm=false",
		"resourceInterfaces.enabled=false", "flowControl.enabled=false",
		"node.kubeletDir=/var/lib/k0s/kubelet", "node.extraArgs={--republish-recheck-interval=10m}",
		"node.resources.limits.memory=128Mi", "node.tolerations[0].operator=Exists",
		"controller.replicas=3", "controller.extraArgs={--connector-recheck-interval=10m}",
		"controller.nodeSelector.node-role\\.kubernetes\\.io/control-plane=",
		"imagePullSecrets[0].name=pull", "monitoring.dashboard.enabled=true", "metrics.auth=none", "node.proxyTokens=any",
		"node.proxyDeniedPaths={/api/security/apiKey,/internal/*/credential}", "node.proxyGraphQLPaths={/api/graphql,/graphql}",
		"node.proxyDeniedGraphQLFields={runnerCreate,createDeployKey}", "node.maxUnavailable=25")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(chart, "connectors-system") {
		t.Error("the rendering in another namespace still names connectors-system")
	}
	objects := renderedObjects(t, chart)
	get := func(key string) map[string]any {
		obj, ok := objects[key]
		if !ok {
			t.Fatalf("%s not rendered", key)
		}
		return obj
	}
	ds := get("DaemonSet/" + ns + "/connectors-csi")
	dsJSON, _ := json.Marshal(ds)
	for _, want := range []string{
		`"image":"registry.example.com/connectors-csi@` + digest + `"`,
		`"--republish-recheck-interval=10m"`,
		`"--kubelet-plugin-endpoint=/var/lib/k0s/kubelet/plugins/connectors-csi/csi.sock"`,
		`"hostPath":{"path":"/var/lib/k0s/kubelet/pods","type":"Directory"}`,
		`"mountPath":"/var/lib/k0s/kubelet/pods","mountPropagation":"Bidirectional"`,
		`"limits":{"memory":"128Mi"}`, `"tolerations":[{"operator":"Exists"}]`, `"imagePullSecrets":[{"name":"pull"}]`,
		`{"name":"GOMEMLIMIT","valueFrom":{"resourceFieldRef":{"resource":"limits.memory"}}}`,
		`"--metrics-auth=none"`, `"readinessProbe":{"httpGet":{"path":"/readyz","port":"metrics"}}`, `"--proxy-tokens=any"`,
		`"--proxy-denied-paths=/api/security/apiKey,/internal/*/credential"`,
		`"--proxy-graphql-paths=/api/graphql,/graphql"`, `"--proxy-denied-graphql-fields=runnerCreate,createDeployKey"`,
		`"rollingUpdate":{"maxUnavailable":25}`,
	} {
		if !strings.Contains(string(dsJSON), want) {
			t.Errorf("the DaemonSet lacks %s:\n%s", want, dsJSON)
		}
	}
	deployment := get("Deployment/" + ns + "/connectors-csi-controller")
	deploymentJSON, _ := json.Marshal(deployment)
	for _, want := range []string{`"replicas":3`, `"--connector-recheck-interval=10m"`, `"nodeSelector":{"node-role.kubernetes.io/control-plane":""}`,
		`"image":"registry.example.com/connectors-csi@` + digest + `"`} {
		if !strings.Contains(string(deploymentJSON), want) {
			t.Errorf("the controller Deployment lacks %s:\n%s", want, deploymentJSON)
		}
	}
	config := get("ConfigMap/" + ns + "/connectors-config")["data"].(map[string]any)
	if config["enable-connectors-approval"] != "true" || config["enable-multi-connector"] != "false" {
		t.Errorf("feature flags: %v", config)
	}
	var classes []string
	for key := range objects {
		if name, ok := strings.CutPrefix(key, "ConnectorClass/<nil>/"); ok {
			classes = append(classes, name)
		}
		if strings.HasPrefix(key, "ResourceInterface/") || strings.HasPrefix(key, "FlowSchema/") {
			t.Errorf("%s rendered though turned off", key)
		}
	}
	if slices.Contains(classes, "oci") || slices.Contains(classes, "npm") || !slices.Contains(classes, "git") || len(classes) != 10 {
		t.Errorf("classes rendered: %v; want the built-in ones but oci and npm", classes)
	}
	dashboard, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "deploy", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := get("ConfigMap/" + ns + "/connectors-csi-dashboard")["data"].(map[string]any)["connectors-csi.json"]; got != string(dashboard) {
		t.Error("the dashboard ConfigMap does not hold deploy/monitoring/dashboard.json")
	}
	// The release's namespace everywhere deploy/base says connectors-system.
	binding := get("ClusterRoleBinding/<nil>/connectors-csi-node")["subjects"].([]any)[0].(map[string]any)
	webhook := get("ValidatingWebhookConfiguration/<nil>/connectors-csi")["webhooks"].([]any)[0].(map[string]any)
	webhookJSON, _ := json.Marshal(webhook)
	if binding["namespace"] != ns || !strings.Contains(string(webhookJSON), `"namespace":"`+ns+`"`) ||
		!strings.Contains(string(webhookJSON), `"values":["`+ns+`"]`) {
		t.Errorf("the binding (%v) or the webhook (%s) does not name %s", binding, webhookJSON, ns)
	}

	// A namespace the dry run can put objects in.
	if _, err := cp.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl([]byte(chart), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	for _, bad := range []struct{ set, want string }{
		{"classes.gti=true", "'gti' not allowed"},
		{"image.digest=latest", "/image/digest"},
		{"node.resorces.limits.memory=1Gi", "'resorces' not allowed"},
		{"features.enable-approval=true", "'enable-approval' not allowed"},
		{"node.kubeletDir=var/lib/kubelet", "/node/kubeletDir"},
		{"controller.replicas=two", "/controller/replicas"},
		{"metrics.auth=open", "/metrics/auth"},
		{"node.proxyTokens=all", "/node/proxyTokens"},
		{"node.maxUnavailable=all", "/node/maxUnavailable"},
		{"metrics.auth=none,monitoring.podMonitor=true", "needs metrics.auth=delegated"},
	} {
		_, err := helmTemplate(t, "", ns, bad.set)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("--set %s: %v; want an error naming %q", bad.set, err, bad.want)
		}
	}
}

// TestHelmInstallUpgradeUninstall installs the chart for real with helm on an API server of its
// own (no CRDs installed beforehand, nothing of this project there): helm creates the CRDs from
// crds/ and every object; an upgrade switches a feature flag and drops a class; an uninstall
// removes the objects and keeps the CRDs (and so every Connector).
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	fresh, err := controlplane.Start(controlplane.WithoutCRDs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fresh.Stop() })
	ctx := context.Background()
	chart := filepath.Join(controlplane.RepoRoot(), "deploy", "chart")
	release := []string{"connectors", chart, "--kubeconfig", fresh.Kubeconfig, "--namespace", systemNS}
	if out, err := helm(t, append([]string{"install"}, append(release, "--create-namespace")...)...); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, "STATUS: deployed") || !strings.Contains(out, "rollout status daemonset/connectors-csi") {
		t.Errorf("helm install's output lacks the status or the chart's notes:\n%s", out)
	}
	kube := fresh.Kube
	if _, err := kube.AppsV1().DaemonSets(systemNS).Get(ctx, "connectors-csi", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if d, err := kube.AppsV1().Deployments(systemNS).Get(ctx, "connectors-csi-controller", metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 2 {
		t.Errorf("controller Deployment: %v", err)
	}
	if _, err := kube.StorageV1().CSIDrivers().Get(ctx, "connectors-csi", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	flag := func() string {
		cm, err := kube.CoreV1().ConfigMaps(systemNS).Get(ctx, "connectors-config", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data["enable-connectors-approval"]
	}
	class := func(name string) error {
		return fresh.Client.Get(ctx, types.NamespacedName{Name: name}, &v1alpha1.ConnectorClass{})
	}
	if flag() != "false" || class("sonarqube") != nil || class("git") != nil {
		t.Fatalf("after install: approval flag %q, sonarqube class %v, git class %v", flag(), class("sonarqube"), class("git"))
	}

	if _, err := helm(t, append([]string{"upgrade"}, append(release,
		"--set", "features.enable-connectors-approval=true", "--set", "classes.sonarqube=false")...)...); err != nil {
		t.Fatal(err)
	}
	if flag() != "true" || !apierrors.IsNotFound(class("sonarqube")) || class("git") != nil {
		t.Errorf("after upgrade: approval flag %q, sonarqube class %v (want gone), git class %v", flag(), class("sonarqube"), class("git"))
	}

	if _, err := helm(t, "uninstall", "connectors", "--kubeconfig", fresh.Kubeconfig, "--namespace", systemNS); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.AppsV1().DaemonSets(systemNS).Get(ctx, "connectors-csi", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the DaemonSet after uninstall: %v, want NotFound", err)
	}
	if !apierrors.IsNotFound(class("git")) {
		t.Error("the git class is still there after uninstall")
	}
	crds, err := fresh.Kubectl(nil, "get", "crd", "connectors.connectors.alauda.io", "-o", "name")
	if err != nil || !strings.Contains(crds, "connectors.connectors.alauda.io") {
		t.Errorf("the Connector CRD did not stay after uninstall: %v %s", err, crds)
	}
}
