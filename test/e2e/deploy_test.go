package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// TestDeployAppliesServerSide applies the kustomize base and the examples to the real API
// server with a server-side dry run: every object must pass the API server's validation,
// including the CRD schemas for the built-in ConnectorClasses.
func TestDeployAppliesServerSide(t *testing.T) {
	root := controlplane.RepoRoot()
	out, err := cp.Kubectl(nil, "apply", "--server-side", "--dry-run=server", "-k", filepath.Join(root, "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/connectors.connectors.alauda.io",
		"csidriver.storage.k8s.io/connectors-csi",
		"daemonset.apps/connectors-csi",
		"service/connectors-proxy",
		"clusterrole.rbac.authorization.k8s.io/connectors-csi",
		"configmap/connectors-config",
		"connectorclass.connectors.alauda.io/git",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply output lacks %q:\n%s", want, out)
		}
	}
	if _, err := cp.Kubectl(nil, "apply", "--server-side", "--dry-run=server", "-f", filepath.Join(root, "deploy", "examples")); err != nil {
		t.Fatal(err)
	}
	single, err := cp.Kubectl(nil, "kustomize", filepath.Join(root, "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(single, "node-driver-registrar") || !strings.Contains(single, "--kubelet-registration-dir=/registration") {
		t.Error("the default DaemonSet is not the single-container, self-registering form")
	}
	sidecars := filepath.Join(root, "deploy", "overlays", "sidecars")
	out, err = cp.Kubectl(nil, "apply", "--server-side", "--dry-run=server", "-k", sidecars)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := cp.Kubectl(nil, "kustomize", sidecars)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rendered, "node-driver-registrar") || !strings.Contains(rendered, "livenessprobe") ||
		strings.Contains(rendered, "--kubelet-registration-dir") {
		t.Errorf("the sidecars overlay does not swap self-registration for the sidecars:\n%s", out)
	}
}

// TestCRDValidation checks that the API server rejects Connectors the schema forbids.
func TestCRDValidation(t *testing.T) {
	bad := `apiVersion: connectors.alauda.io/v1alpha1
kind: Connector
metadata: {name: bad, namespace: default}
spec: {connectorClassName: git, address: "not a url"}
`
	out, err := cp.Kubectl([]byte(bad), "apply", "--dry-run=server", "-f", "-")
	if err == nil || !strings.Contains(out, "must be a URL") {
		t.Fatalf("a Connector with a bad address was accepted or gave an unclear error: %v\n%s", err, out)
	}
	missing := `apiVersion: connectors.alauda.io/v1alpha1
kind: Connector
metadata: {name: bad, namespace: default}
spec: {address: "https://x.example.com"}
`
	out, err = cp.Kubectl([]byte(missing), "apply", "--dry-run=server", "-f", "-")
	if err == nil || !strings.Contains(out, "connectorClassName") {
		t.Fatalf("a Connector without a class was accepted: %v\n%s", err, out)
	}
}
