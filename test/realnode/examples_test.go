//go:build realnode

package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestPodGitExample applies deploy/examples/pod-git.yaml (namespace, Git address, credential and
// image replaced by the test's): the scheduled Pod, running as user 1000 with fsGroup 1000,
// clones through the reverse proxy with only GIT_CONFIG_GLOBAL pointing at the volume and
// completes; the Git server saw the credential only the proxy holds.
func TestPodGitExample(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	ns := "examples"
	tool, err := gitserver.Start(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tool.Close)
	createNamespace(t, ns)
	example := exampleWith(t, filepath.Join(controlplane.RepoRoot(), "deploy", "examples", "pod-git.yaml"),
		"namespace: default", "namespace: "+ns,
		"https://git.example.com/org/repo.git", tool.URL+"/repo.git",
		"https://git.example.com", tool.URL,
		"username: bot", "username: "+tool.Username,
		"password: change-me", "password: "+tool.Password,
		"image: alpine/git", "image: localhost/git:e2e")
	if _, err := node.CP.Kubectl(example, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	if !kubelet.WaitUntil(120*time.Second, func() bool {
		pod, err = kube.CoreV1().Pods(ns).Get(ctx, "git-clone", metav1.GetOptions{})
		return err == nil && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed)
	}) {
		t.Fatalf("the example Pod did not finish: %s\n--- driver ---\n%s", podEvents(ns, "git-clone"), node.tail("driver"))
	}
	if pod.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("the example Pod failed: %+v\n--- driver ---\n%s", pod.Status.ContainerStatuses, node.tail("driver"))
	}
	var authorized bool
	for _, r := range tool.Requests() {
		authorized = authorized || r.Authorization == "Basic "+basicOf(tool.Username, tool.Password)
	}
	if !authorized {
		t.Error("no request reached the Git server with the Connector's credential: the clone did not go through the proxy")
	}
	deleteAndCheckUnmounted(t, pod)
}

// createNamespace creates a namespace with what kube-controller-manager would add to it (this
// lane runs none): the default ServiceAccount and the kube-root-ca.crt ConfigMap a Pod's API
// token volume needs.
func createNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx, kube := context.Background(), node.CP.Kube
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"},
		Data: map[string]string{"ca.crt": string(node.CP.Config.CAData)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// exampleWith reads a YAML file of the repository with each old string replaced by its new one
// (pairs); an old string the file lacks fails the test, so the example cannot drift unseen.
func exampleWith(t *testing.T, path string, pairs ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s no longer contains %q", path, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return []byte(s)
}

// podEvents lists a Pod's events, for failure messages.
func podEvents(ns, pod string) string {
	evs, err := node.CP.Kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "%s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return b.String()
}
