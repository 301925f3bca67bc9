//go:build realnode

package realnode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestRefusalsFindableByPodName: each refusal an operator is asked about is found by the Pod's
// name with one kubectl command, as the README's troubleshooting section shows (the output is
// logged for it): a publish refused (kubelet's FailedMount, PermissionDenied), a request the
// proxy refused (the driver's ProxyRefused Event), a publish waiting for its AccessRequest
// (FailedMount naming the request; the request found by the Pod's label).
func TestRefusalsFindableByPodName(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	ns := "troubleshoot"
	tool := setupNamespace(t, ns) // Connector git, which builder may get
	// Connector other, which builder may not get: the same tool, in the tools' network namespace
	// (the controller probes every Connector's address; no name that resolves off this machine).
	if err := node.CP.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "git", Address: tool.URL}}); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := node.CP.Kubectl(nil, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
		return out
	}
	byPod := func(pod string) string {
		return kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name="+pod)
	}

	// A publish refused: the Pod's ServiceAccount may not get the Connector.
	denied := scriptPod(ns, "denied", t.TempDir(), "sleep 3600")
	denied.Spec.Volumes[0].CSI.VolumeAttributes["connectors"] = "other"
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, denied, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "denied", "PermissionDenied")
	if out := byPod("denied"); !strings.Contains(out, "FailedMount") || !strings.Contains(out, "Pod may not use Connector "+ns+"/other") {
		t.Errorf("the refused publish is not found by the Pod's name")
	}

	// A request the proxy refused: the Pod (which may use git) asks for Connector other.
	results := filepath.Join(node.Dir, "results", "refused")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := `addr=$(cat /connectors/connector.status.proxyAddress)
wget -q -O /dev/null --header "Authorization: Bearer $(cat /connectors/context.token)" "${addr%/git}/other/repo.git/info/refs?service=git-upload-pack" 2>/results/wget-err
echo $? > /results/wget-exit
sleep 3600`
	refused, err := kube.CoreV1().Pods(ns).Create(ctx, scriptPod(ns, "refused", results, script), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if exit := strings.TrimSpace(waitFile(t, filepath.Join(results, "wget-exit"), 120*time.Second)); exit == "0" {
		t.Fatal("the proxy let the Pod use a Connector it may not get")
	}
	waitEvent(t, ns, "refused", "may not get Connector "+ns+"/other")
	if out := byPod("refused"); !strings.Contains(out, "ProxyRefused") {
		t.Errorf("the proxy's refusal is not found by the Pod's name")
	}
	deleteAndCheckUnmounted(t, refused)

	// A publish waiting for its AccessRequest.
	gateByApproval(t, ns, "git", checkPodUID)
	pending := scriptPod(ns, "pending", t.TempDir(), "sleep 3600")
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, pending, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "pending", "waiting for AccessRequest "+ns+"/git-pending-")
	if out := byPod("pending"); !strings.Contains(out, "FailedMount") {
		t.Errorf("the waiting publish is not found by the Pod's name")
	}
	requests := kubectl("get", "accessrequests", "-n", ns, "-l", v1alpha1.LabelContextObjectName+"=pending")
	if !strings.Contains(requests, "git-pending-") {
		t.Fatalf("the Pod's AccessRequest is not found by its label")
	}
	var name string
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		out, err := node.CP.Kubectl(nil, "get", "accessrequests", "-n", ns, "-l", v1alpha1.LabelContextObjectName+"=pending", "-o", "jsonpath={.items[0].metadata.name}")
		name = strings.TrimSpace(out)
		return err == nil && name != ""
	}) {
		t.Fatal("no AccessRequest name")
	}
	if out := kubectl("describe", "accessrequest", "-n", ns, name); !strings.Contains(out, "Events:") {
		t.Errorf("describe accessrequest shows no Events section")
	}
	for _, pod := range []string{"denied", "pending"} {
		_ = kube.CoreV1().Pods(ns).Delete(ctx, pod, metav1.DeleteOptions{})
	}
}
