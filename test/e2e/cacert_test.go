package e2e

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
	"github.com/kube-connectors/connectors-csi/trust"
)

// TestCustomCACertificates follows Alauda's "configure custom CA certificates" how-to through
// the deployed roles (node and controller with their RBAC) against a Git server whose
// certificate only a private CA vouches for: with enable-custom-ca-certs off a Secret labelled
// connectors.cpaas.io/ca-cert=true in the system namespace changes nothing; on, the controller
// collects it, the node trusts it for every Connector, a git clone through the proxy works and
// CACertReady appears; a Connector's own CA Secret may keep its PEM under any .pem key; a
// missing or certificate-less one gives CACertReady=False with its Warning Event and leaves
// Ready alone; off again, the global CA is no longer trusted and CACertReady is gone.
func TestCustomCACertificates(t *testing.T) {
	tool := startGitServer(t, true)
	env := startDeployedDrivers(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	createSecret(t, ns, "auth", corev1.SecretTypeBasicAuth, map[string]string{"username": tool.Username, "password": tool.Password})
	connector := func(name, caSecret string) {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: git, Address: tool.URL,
				Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "auth"}}}}
		if caSecret != "" {
			c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: caSecret}
		}
		create(t, c)
	}
	connector("global", "")
	connector("own", "own-ca")
	connector("missing", "no-such-secret")
	connector("invalid", "not-a-ca")
	createSecret(t, ns, "own-ca", corev1.SecretTypeOpaque, map[string]string{"tool.pem": string(tool.CA.PEM), "token": "not-a-certificate"})
	createSecret(t, ns, "not-a-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": "not PEM", "password": "-"})
	allowConnectors(t, ns, "builder", "global", "own")
	pod := podWithVolume(t, env.kubelet, ns, "git", map[string]string{"connectors": "global", "configuration.names": "gitconfig"}, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	gitconfig := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(env.kubelet.TargetPath(pod, "connectors"), ".gitconfig")}
	clone := func() error {
		_, err := gitserver.Git("", gitconfig, "clone", "-q", tool.URL+"/repo.git", filepath.Join(t.TempDir(), "clone"))
		return err
	}

	global := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "internal-ca-" + ns, Namespace: systemNS,
		Labels: map[string]string{trust.LabelCACert: "true"}}, Data: map[string][]byte{"ca.crt": tool.CA.PEM}}
	create(t, global)
	t.Cleanup(func() {
		setFlags(t, map[string]string{})
		_ = cp.Client.Delete(context.Background(), global)
	})
	waitBundle(t, func(pem string) bool { return strings.Contains(pem, string(bytes.TrimSpace(tool.CA.PEM))) })

	t.Run("flag off: the global CA is not trusted and CACertReady is absent", func(t *testing.T) {
		waitCondition(t, ns, "own", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable") // its own CA: as before
		c := waitCondition(t, ns, "global", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "Unreachable")
		if meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionCACertReady) != nil {
			t.Error("CACertReady present with the flag off")
		}
		if err := clone(); err == nil {
			t.Fatal("a clone through the proxy worked though nothing trusted the tool's CA")
		}
	})

	setFlags(t, map[string]string{features.KeyCustomCACerts: "true"})
	t.Run("flag on: the labelled Secret's CA is trusted for every Connector", func(t *testing.T) {
		waitCondition(t, ns, "global", v1alpha1.ConditionCACertReady, metav1.ConditionTrue, trust.ReasonNoCACert)
		waitCondition(t, ns, "global", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
		if !kubelet.WaitUntil(10*time.Second, func() bool { return clone() == nil }) {
			t.Fatalf("no clone through the proxy with the global CA: %v", clone())
		}
		c := waitCondition(t, ns, "own", v1alpha1.ConditionCACertReady, metav1.ConditionTrue, trust.ReasonValid)
		if got := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionCACertReady).Message; got != `CA certificate loaded from secret "own-ca"` {
			t.Errorf("CACertReady message %q", got)
		}
	})

	t.Run("a CA Secret that cannot be used: CACertReady=False, a Warning Event, Ready untouched", func(t *testing.T) {
		for _, tc := range []struct{ connector, reason, event string }{
			{"missing", trust.ReasonSecretNotFound, "CACertSecretNotFound"},
			{"invalid", trust.ReasonInvalidPEM, "InvalidCACert"},
		} {
			c := waitCondition(t, ns, tc.connector, v1alpha1.ConditionCACertReady, metav1.ConditionFalse, tc.reason)
			// The global CA still lets the probes through: CACertReady is informational.
			waitCondition(t, ns, tc.connector, v1alpha1.ConditionReady, metav1.ConditionTrue, "Ready")
			msg := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionCACertReady).Message
			if strings.Contains(msg, "not PEM") || strings.Contains(msg, "password") {
				t.Errorf("CACertReady message shows the Secret's contents: %q", msg)
			}
			var seen []string
			if !kubelet.WaitUntil(20*time.Second, func() bool {
				evs, err := cp.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
					FieldSelector: "involvedObject.name=" + tc.connector + ",reason=" + tc.event})
				seen = nil
				for _, ev := range evs.Items {
					seen = append(seen, fmt.Sprintf("%s %q (object version %s)", ev.Type, ev.Message, ev.InvolvedObject.ResourceVersion))
				}
				return err == nil && len(evs.Items) == 1 && evs.Items[0].Type == corev1.EventTypeWarning
			}) {
				t.Errorf("%s: no single Warning Event %s; found %q", tc.connector, tc.event, seen)
			}
		}
	})

	setFlags(t, map[string]string{features.KeyCustomCACerts: "false"})
	t.Run("flag off again: the global CA is dropped and CACertReady removed", func(t *testing.T) {
		waitCondition(t, ns, "global", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "Unreachable")
		if !kubelet.WaitUntil(10*time.Second, func() bool { return clone() != nil }) {
			t.Fatal("the proxy still trusts the global CA with the flag off")
		}
		waitCondition(t, ns, "own", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
		// Reachable already, before the flag went off: its status is written again when its
		// turn comes (every Connector of the cluster is queued on the change, in turns by
		// namespace).
		var c v1alpha1.Connector
		if !kubelet.WaitUntil(20*time.Second, func() bool {
			return cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "own"}, &c) == nil &&
				meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionCACertReady) == nil
		}) {
			t.Error("CACertReady still present with the flag off")
		}
	})
}

// waitBundle waits until the controller's connectors-ca-bundle ConfigMap satisfies ok.
func waitBundle(t *testing.T, ok func(pem string) bool) {
	t.Helper()
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		cm, err := cp.Kube.CoreV1().ConfigMaps(systemNS).Get(context.Background(), trust.BundleConfigMap, metav1.GetOptions{})
		return err == nil && ok(cm.Data[trust.BundleKey])
	}) {
		t.Fatalf("ConfigMap %s/%s never held the expected bundle", systemNS, trust.BundleConfigMap)
	}
}
