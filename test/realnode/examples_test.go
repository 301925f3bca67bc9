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

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestGitExamples applies deploy/examples/pod-git.yaml and job-git.yaml (namespace, Git
// address, credential and image replaced by the test's): the Pod, and the Job's Pod made by
// kube-controller-manager's Job controller, both scheduled by kube-scheduler and running as user
// 1000 with fsGroup 1000, clone through the reverse proxy with only GIT_CONFIG_GLOBAL pointing at
// the volume; the Pod completes, the Job is Complete, and the Git server saw the credential only
// the proxy holds.
func TestGitExamples(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	ns := "examples"
	tool := startGitTool(t, false)
	createNamespace(t, ns)
	examples := filepath.Join(controlplane.RepoRoot(), "deploy", "examples")
	ours := []string{"namespace: default", "namespace: " + ns, "image: alpine/git", "image: localhost/git:e2e"}
	pod := exampleWith(t, filepath.Join(examples, "pod-git.yaml"), append(ours, gitPlaceholders(tool, true)...)...)
	if _, err := node.CP.Kubectl(pod, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	jobYAML := exampleWith(t, filepath.Join(examples, "job-git.yaml"), append(ours, gitPlaceholders(tool, false)...)...)
	if _, err := node.CP.Kubectl(jobYAML, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	var phase corev1.PodPhase
	if !kubelet.WaitUntil(120*time.Second, func() bool {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, "git-clone", metav1.GetOptions{})
		if err == nil {
			phase = p.Status.Phase
		}
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed
	}) || phase != corev1.PodSucceeded {
		t.Fatalf("the example Pod is %q, want Succeeded: %s\n--- driver ---\n%s", phase, podEvents(ns, "git-clone"), node.tail("driver"))
	}
	var job *batchv1.Job
	if !kubelet.WaitUntil(120*time.Second, func() bool {
		var err error
		job, err = kube.BatchV1().Jobs(ns).Get(ctx, "git-clone", metav1.GetOptions{})
		return err == nil && (jobCondition(job, batchv1.JobComplete) || jobCondition(job, batchv1.JobFailed))
	}) || !jobCondition(job, batchv1.JobComplete) {
		t.Fatalf("the example Job did not complete: %+v\n--- controller manager ---\n%s", job.Status, node.tail("controller-manager"))
	}
	var authorized int
	for _, r := range tool.Requests() {
		if r.Authorization == "Basic "+basicOf(tool.Username, tool.Password) {
			authorized++
		}
	}
	if authorized < 2 {
		t.Errorf("%d requests reached the Git server with the Connector's credential, want both clones' (at least 2)", authorized)
	}
	p, err := kube.CoreV1().Pods(ns).Get(ctx, "git-clone", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deleteAndCheckUnmounted(t, p)
}

func jobCondition(job *batchv1.Job, ct batchv1.JobConditionType) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == ct && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// createNamespace creates a namespace and waits for what kube-controller-manager adds to it:
// the default ServiceAccount and the kube-root-ca.crt ConfigMap a Pod's API token volume needs.
func createNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx, kube := context.Background(), node.CP.Kube
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		_, saErr := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		_, caErr := kube.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return saErr == nil && caErr == nil
	}) {
		t.Fatalf("kube-controller-manager did not set up namespace %s\n%s", ns, node.tail("controller-manager"))
	}
}

// gitPlaceholders replaces the examples' Git repository (and, with connector, the Connector's
// address and credential) by the test server's.
func gitPlaceholders(tool *gitserver.Server, connector bool) []string {
	pairs := []string{"https://git.example.com/org/repo.git", tool.URL + "/repo.git"}
	if connector {
		pairs = append(pairs, "https://git.example.com", tool.URL,
			"username: bot", "username: "+tool.Username, "password: change-me", "password: "+tool.Password)
	}
	return pairs
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
