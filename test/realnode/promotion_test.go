//go:build realnode

package realnode

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/test/registry"
)

// TestApprovalGatedPromotionExample runs deploy/examples/tekton/approval-gated-promotion.yaml
// as published, with only its hosts, credential, namespace and image replaced (and crane's
// --insecure: the lane's registries speak plain HTTP). The staging registry is a host of no
// Connector on a public address (ToolsPublicIP, inside the lane's network namespace) that
// allows anonymous pulls; the production registry is the Connector. The PipelineRun's Pod waits
// for its AccessRequest until the ApprovalTask is approved, then `crane copy` pulls from
// staging through the proxy's pass-through, without any credential, and pushes to production
// with the Connector's.
func TestApprovalGatedPromotionExample(t *testing.T) {
	startTekton(t)
	enableApproval(t)
	if out, err := run("ip", "route", "get", ToolsPublicIP); err != nil || !strings.Contains(out, "dev "+toolsHostLink) {
		t.Fatalf("%s is not routed into the lane's network namespace (%v): %s", ToolsPublicIP, err, out)
	}
	staging, prod := startRegistryToolOn(t, ToolsPublicIP), startRegistryTool(t)
	staging.AnonymousPull = true
	source, target := hostOf(staging)+"/team/app:1.4.2", hostOf(prod)+"/team/app:1.4.2"
	digest := pushRandomImage(t, staging, source)
	before := len(staging.Requests()) // the test's own push above used staging's credential

	ns := "promotion"
	createNamespace(t, ns)
	applyClass(t, "oci.yaml")
	example := exampleWith(t, filepath.Join(controlplane.RepoRoot(), "deploy", "examples", "tekton", "approval-gated-promotion.yaml"),
		"namespace: team", "namespace: "+ns,
		"https://registry.prod.example.com", prod.URL,
		"registry.staging.example.com/team/app:1.4.2", source,
		"registry.prod.example.com/team/app:1.4.2", target,
		"gcr.io/go-containerregistry/crane:debug", "localhost/crane:e2e",
		"crane copy ", "crane copy --insecure ",
		"username: promoter", "username: "+prod.Username,
		"password: change-me", "password: "+prod.Password)
	if _, err := node.CP.Kubectl(example, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	const taskRun = "release-42-promote"
	var podName string
	if !kubelet.WaitUntil(90*time.Second, func() bool { podName = getTaskRun(t, ns, taskRun).PodName; return podName != "" }) {
		t.Fatalf("Tekton made no Pod for the PipelineRun's TaskRun\n--- tekton ---\n%s", node.tail("tekton-controller"))
	}
	t.Logf("event: %s", waitEvent(t, ns, podName, "waiting for AccessRequest "+ns+"/prod-registry-"+podName+"-"))
	if st := getTaskRun(t, ns, taskRun); st.succeeded() != "" {
		t.Fatalf("the TaskRun finished before the approval: %+v", st)
	}
	if _, err := node.CP.Kubectl(nil, "patch", "approvaltask", "-n", ns, "release-42-approval",
		"--type", "merge", "-p", `{"status":{"state":"approved"}}`); err != nil {
		t.Fatal(err)
	}
	waitTaskRun(t, ns, taskRun)

	ref, err := name.ParseReference(target, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: prod.Username, Password: prod.Password}))
	if err != nil || got.Digest.String() != digest {
		t.Fatalf("production has %v (%v), want the staging image %s", got, err, digest)
	}
	for _, s := range staging.Requests()[before:] {
		if s.Authorization != "" && !strings.HasPrefix(s.Authorization, "Bearer ") || s.ProxyAuthorization != "" {
			t.Errorf("staging, a host of no Connector, got credentials on %s: %q %q", s.Path, s.Authorization, s.ProxyAuthorization)
		}
		if strings.Contains(s.Authorization, basicOf(prod.Username, prod.Password)) {
			t.Errorf("staging got production's credential on %s", s.Path)
		}
	}
	var pushedWithConnector bool
	for _, s := range prod.Requests() {
		pushedWithConnector = pushedWithConnector || (s.Server == "token" && s.Authorization == "Basic "+basicOf(prod.Username, prod.Password))
	}
	if !pushedWithConnector {
		t.Error("production's token service never saw the Connector's credential: the push did not go through the proxy")
	}
}

// applyClass applies a built-in class of deploy/classes by its file name (tests share them).
func applyClass(t *testing.T, file string) {
	t.Helper()
	if _, err := node.CP.Kubectl(nil, "apply", "-f", filepath.Join(controlplane.RepoRoot(), "deploy", "classes", file)); err != nil {
		t.Fatal(err)
	}
}

// hostOf is a registry's host:port.
func hostOf(r *registry.Server) string { return strings.TrimPrefix(r.URL, "http://") }

// pushRandomImage pushes a small random image to ref on r, from the test process (the host
// reaches the tools' namespace directly), and returns its digest.
func pushRandomImage(t *testing.T, r *registry.Server, ref string) string {
	t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(parsed, img, remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}),
		remote.WithContext(context.Background())); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
