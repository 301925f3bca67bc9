package e2e

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/util/cert"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/admission"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// deployedWebhookConfiguration reads the ValidatingWebhookConfiguration of deploy/base.
func deployedWebhookConfiguration(t *testing.T) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "deploy", "base", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var cfg admissionregistrationv1.ValidatingWebhookConfiguration
		if err := dec.Decode(&cfg); errors.Is(err, io.EOF) {
			t.Fatal("deploy/base/webhook.yaml holds no ValidatingWebhookConfiguration")
		} else if err != nil {
			t.Fatal(err)
		}
		if cfg.Kind == "ValidatingWebhookConfiguration" {
			return &cfg
		}
	}
}

// freeLoopbackPort returns a port nothing listens on at 127.0.0.1 just now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestAdmissionWebhookEnforcesTheClassContract installs deploy/'s ValidatingWebhookConfiguration
// (its Service replaced by the controller's loopback address, as there is no Service network,
// and its namespace selector narrowed to this test's namespace, so that other tests' Connectors
// are not reviewed) and runs the controller role with the deployed RBAC and --webhook-listen.
// The controller makes its self-signed certificate and gives its CA to the configuration; then
// the real API server calls the real webhook for every Connector create and update.
func TestAdmissionWebhookEnforcesTheClassContract(t *testing.T) {
	ctx := context.Background()
	ns, class, connector := contractWebhook(t)
	out, err := firstReview(t, strings.Replace(connector("bad"), "params: [{name: org, value: acme}]", "params: [{name: colour, value: red}]", 1))
	for _, want := range []string{`The Connector "bad" is invalid`, `spec.params[0].name: Invalid value: "colour"`, `declares no param "colour"`,
		`spec.params: Required value: ConnectorClass "` + class.Name + `" requires param "org"`} {
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("a Connector with an undeclared param and without a required one: %v, want a refusal containing %q:\n%s", err, want, out)
		}
	}

	for _, tc := range []struct{ name, from, to, want string }{
		{"no required address extension", `addressExtensions: [{name: api, value: "https://api.tool.example.com"}]`, `addressExtensions: []`,
			`spec.addressExtensions: Required value: ConnectorClass "` + class.Name + `" requires address extension "api"`},
		{"unknown auth type", `name: basicAuth`, `name: oauth`, `spec.auth.name: Unsupported value: "oauth"`},
		{"no Secret for a required auth type", `auth: {name: basicAuth, secretRef: {name: tool-secret}}`, `auth: {name: basicAuth}`,
			`spec.auth.secretRef: Required value: auth type "basicAuth"`},
		{"no such class", `connectorClassName: ` + class.Name, `connectorClassName: ` + class.Name + `-gone`, `spec.connectorClassName: Not found`},
		// Addresses that would end a value in a rendered file and add settings after it.
		{"git's comment character", `address: https://tool.example.com`, `address: "https://;x@tool.example.com"`,
			`spec.address: Invalid value: holds ';' at 8`},
		{"a percent-encoded newline", `address: https://tool.example.com`, `address: "https://tool.example.com/x%0Anode-options=--require=/x"`,
			`spec.address: Invalid value: decoded, holds byte 0x0a`},
		{"a quote in an extension", `value: "https://api.tool.example.com"`, `value: "https://api.tool.example.com/\""`,
			`spec.addressExtensions[0].value: Invalid value: holds '"'`},
		{"user information", `address: https://tool.example.com`, `address: "https://me:hunter2@tool.example.com"`,
			`spec.address: Invalid value: must not carry user information`},
		{"larger than a node keeps", `metadata: {name: bad, `, `metadata: {annotations: {padding: "` + strings.Repeat("x", 70<<10) + `"}, name: bad, `,
			`spec: Forbidden: the Connector is 7`},
		{"an address too long", `address: https://tool.example.com`, `address: "https://tool.example.com/` + strings.Repeat("a", 2048) + `"`,
			`spec.address: Too long: may not be more than 2048 bytes`},
	} {
		out, err := applyConnector(strings.Replace(connector("bad"), tc.from, tc.to, 1))
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v, want a refusal containing %q:\n%s", tc.name, err, tc.want, out)
		}
		if strings.Contains(out, "hunter2") {
			t.Errorf("%s: the refusal shows the password:\n%s", tc.name, out)
		}
	}

	// A Connector that keeps the contract is admitted, and so is an optional auth without a
	// Secret (the defaulted param and the optional extension left out).
	if out, err := applyConnector(connector("good")); err != nil {
		t.Fatalf("a Connector that keeps its class's contract was refused: %v\n%s", err, out)
	}
	if out, err := applyConnector(strings.Replace(connector("public"), `auth: {name: basicAuth, secretRef: {name: tool-secret}}`, `auth: {name: anonymous}`, 1)); err != nil {
		t.Fatalf("a Connector with an optional auth type and no Secret was refused: %v\n%s", err, out)
	}

	// An update that breaks the contract is refused; one that leaves the spec alone is not,
	// even after the class changed under the Connector.
	out, err = applyConnector(strings.Replace(connector("good"), "value: acme", "value: [acme]", 1))
	if err == nil || !strings.Contains(out, `spec.params[0].value: Invalid value`) || !strings.Contains(out, `param "org" must be of type string`) {
		t.Fatalf("an update giving an array for a string param: %v\n%s", err, out)
	}
	var stored v1alpha1.Connector
	if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "good"}, &stored); err != nil {
		t.Fatal(err)
	}
	updateClass(t, class.Name, func(c *v1alpha1.ConnectorClass) {
		c.Spec.Params = append(c.Spec.Params, v1alpha1.ParamSpec{Name: "region"})
	})
	patch := client.MergeFrom(stored.DeepCopy())
	stored.Labels = map[string]string{"team": "a"}
	if err := cp.Client.Patch(ctx, &stored, patch); err != nil {
		t.Fatalf("a label change of a Connector whose class now requires more was refused: %v", err)
	}
	// The webhook reads the class from its cache, which sees the change within moments.
	changed := stored.DeepCopy()
	changed.Spec.Address = "https://tool2.example.com"
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		err = cp.Client.Patch(ctx, changed.DeepCopy(), client.MergeFrom(&stored))
		return err != nil && strings.Contains(err.Error(), `requires param "region"`)
	}) {
		t.Fatalf("a spec change of a Connector that no longer keeps its class's contract: %v", err)
	}

	// Anyone who may create a Connector may have reviews sent, dry runs too (nothing is
	// written): a class the webhook's cache holds costs no read of the API server.
	since := time.Now()
	for i := range 5 {
		manifest := strings.Replace(connector(fmt.Sprintf("dry-%d", i)), "{name: org, value: acme}", "{name: org, value: acme}, {name: region, value: eu}", 1)
		if out, err := cp.Kubectl([]byte(manifest), "apply", "--server-side", "--dry-run=server", "-f", "-"); err != nil {
			t.Fatalf("a dry run of a good Connector: %v\n%s", err, out)
		}
	}
	reads, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.ControllerUser && ev.Verb == "get" && ev.ObjectRef != nil &&
			ev.ObjectRef.Resource == "connectorclasses" && !ev.RequestReceivedTimestamp.Time.Before(since)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(reads) != 0 {
		t.Errorf("5 reviews of a cached class read it %d times from the API server", len(reads))
	}
}

// startWebhook installs deploy/'s webhook configuration for ns (installWebhook) and runs the
// controller role with the deployed RBAC and --webhook-listen, until the controller has given
// its CA to the configuration.
func startWebhook(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	_, controllerKubeconfig := deployedKubeconfigs(t)
	port := freeLoopbackPort(t)
	cfg := installWebhook(t, ns, port, nil)
	t.Cleanup(func() {
		_ = cp.Kube.CoreV1().Secrets(systemNS).Delete(ctx, admission.CertSecretName, metav1.DeleteOptions{})
	})
	opts := testOptions()
	opts.Role, opts.Kubeconfig = driver.RoleController, controllerKubeconfig
	opts.WebhookListen = "127.0.0.1:" + strconv.Itoa(port)
	runDriver(t, opts)
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		var got admissionregistrationv1.ValidatingWebhookConfiguration
		return cp.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &got) == nil && len(got.Webhooks[0].ClientConfig.CABundle) > 0
	}) {
		t.Fatal("the controller never wrote its CA into the webhook configuration's caBundle")
	}
}

// TestAdmissionANamedSecretTakesTheRightToReadIt: a Connector sends its Secret's data to the
// tool at its address, which its writer chooses, so a writer who may not get the Secret (a
// role for Connectors alone) is refused naming it, and admitted once it may; so with its CA
// Secret; a Connector that names no Secret needs nothing of the kind.
func TestAdmissionANamedSecretTakesTheRightToReadIt(t *testing.T) {
	ctx := context.Background()
	ns, _, connector := contractWebhook(t)
	create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "writer", Namespace: ns}})
	writer := "system:serviceaccount:" + ns + ":writer"
	grant := func(name string, rule rbacv1.PolicyRule) {
		create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: []rbacv1.PolicyRule{rule}})
		create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "writer", Namespace: ns}}})
	}
	grant("write-connectors", rbacv1.PolicyRule{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors"},
		Verbs: []string{"get", "create", "patch", "update"}})
	applyAs := func(manifest string) (string, error) {
		return cp.Kubectl([]byte(manifest), "apply", "--server-side", "--field-manager=test", "--as="+writer, "-f", "-")
	}
	var out string
	var err error
	want := `spec.auth.secretRef.name: Forbidden: ` + writer + ` may not get Secret ` + ns + `/tool-secret`
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		out, err = applyAs(connector("theirs"))
		return err != nil && strings.Contains(out, want)
	}) {
		t.Fatalf("a writer who may not get the Secret named it: %v, want a refusal containing %q:\n%s", err, want, out)
	}
	if out, err := applyAs(strings.Replace(connector("public"), `auth: {name: basicAuth, secretRef: {name: tool-secret}}`, `auth: {name: anonymous}`, 1)); err != nil {
		t.Fatalf("a Connector naming no Secret was refused to the writer: %v\n%s", err, out)
	}
	// An administrator's Connector naming the Secret: the writer may change its labels, not
	// its address (which would send the Secret elsewhere).
	if out, err := applyConnector(connector("admins")); err != nil {
		t.Fatalf("an administrator's Connector: %v\n%s", err, out)
	}
	if out, err := cp.Kubectl(nil, "label", "connectors.connectors.alauda.io", "admins", "-n", ns, "team=a", "--as="+writer); err != nil {
		t.Errorf("the writer's label change of a Connector naming a Secret it may not get: %v\n%s", err, out)
	}
	if out, err := cp.Kubectl(nil, "patch", "connectors.connectors.alauda.io", "admins", "-n", ns, "--type=merge",
		"-p", `{"spec":{"address":"https://elsewhere.example.com"}}`, "--as="+writer); err == nil || !strings.Contains(out, want) {
		t.Errorf("the writer's address change of a Connector naming a Secret it may not get: %v, want a refusal containing %q:\n%s", err, want, out)
	}
	grant("read-tool-secret", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"tool-secret"}, Verbs: []string{"get"}})
	if !kubelet.WaitUntil(30*time.Second, func() bool { out, err = applyAs(connector("theirs")); return err == nil }) {
		t.Fatalf("a writer who may get the Secret was refused: %v\n%s", err, out)
	}
	var stored v1alpha1.Connector
	if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "theirs"}, &stored); err != nil || stored.Spec.Auth.SecretRef.Name != "tool-secret" {
		t.Fatalf("the writer's Connector was not stored as written: %v %+v", err, stored.Spec.Auth)
	}
	// A CA Secret is held to the same rule: its certificates become the Connector's trust,
	// and its CACertReady condition tells what it holds.
	withCA := strings.Replace(connector("theirs"), "  auth: {", "  caCertSecretRef: {name: tool-ca}\n  auth: {", 1)
	wantCA := `spec.caCertSecretRef.name: Forbidden: ` + writer + ` may not get Secret ` + ns + `/tool-ca`
	if out, err := applyAs(withCA); err == nil || !strings.Contains(out, wantCA) {
		t.Errorf("a writer who may not get the CA Secret named it: %v, want a refusal containing %q:\n%s", err, wantCA, out)
	}
	grant("read-tool-ca", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"tool-ca"}, Verbs: []string{"get"}})
	if !kubelet.WaitUntil(30*time.Second, func() bool { out, err = applyAs(withCA); return err == nil }) {
		t.Fatalf("a writer who may get the CA Secret was refused: %v\n%s", err, out)
	}
}

// installWebhook creates deploy/'s ValidatingWebhookConfiguration with its Service replaced by
// the controller's loopback address (there is no Service network) and its namespace selector
// narrowed to ns, so that other tests' Connectors are not reviewed.
func installWebhook(t *testing.T, ns string, port int, caBundle []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	cfg := deployedWebhookConfiguration(t)
	if len(cfg.Webhooks) != 1 || cfg.Webhooks[0].ClientConfig.Service == nil || *cfg.Webhooks[0].ClientConfig.Service.Path != admission.ConnectorPath ||
		*cfg.Webhooks[0].FailurePolicy != admissionregistrationv1.Fail {
		t.Fatalf("deploy's webhook is not one Fail webhook at the Service's %s: %+v", admission.ConnectorPath, cfg.Webhooks)
	}
	hook := &cfg.Webhooks[0]
	hook.ClientConfig.Service = nil
	hook.ClientConfig.URL = ptr.To("https://127.0.0.1:" + strconv.Itoa(port) + admission.ConnectorPath)
	hook.ClientConfig.CABundle = caBundle
	hook.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	create(t, cfg)
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), cfg) })
	return cfg
}

// contractWebhook is a namespace whose Connectors the deployed webhook reviews (startWebhook),
// a class of it with a contract (contractClass), and a Connector of that class keeping it.
func contractWebhook(t *testing.T) (ns string, class *v1alpha1.ConnectorClass, connector func(name string) string) {
	t.Helper()
	ns = newNamespace(t)
	startWebhook(t, ns)
	class = contractClass(t, ns)
	return ns, class, contractConnector(ns, class.Name)
}

// contractClass creates a class with a required and a defaulted param, a required and an
// optional address extension, and a required and an optional auth type.
func contractClass(t *testing.T, ns string) *v1alpha1.ConnectorClass {
	t.Helper()
	class := &v1alpha1.ConnectorClass{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-tool"},
		Spec: v1alpha1.ConnectorClassSpec{
			Params: []v1alpha1.ParamSpec{{Name: "org"}, {Name: "sslVerify", Default: jsonValue("true"), Enum: []string{"true", "false"}}},
			AddressExtensions: []v1alpha1.AddressExtensionSpec{
				{Name: "api"}, {Name: "upload", Default: ptr.To("")},
			},
			Auth: &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{
				{Name: "basicAuth", SecretType: v1alpha1.SecretTypeBasicAuth},
				{Name: "anonymous", SecretType: v1alpha1.SecretTypeBasicAuth, Optional: true},
			}},
		},
	}
	create(t, class)
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), class) })
	return class
}

// contractConnector returns the manifest of a Connector named name that keeps contractClass's
// contract.
func contractConnector(ns, class string) func(name string) string {
	return func(name string) string {
		return `apiVersion: connectors.alauda.io/v1alpha1
kind: Connector
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
  connectorClassName: ` + class + `
  address: https://tool.example.com
  addressExtensions: [{name: api, value: "https://api.tool.example.com"}]
  params: [{name: org, value: acme}]
  auth: {name: basicAuth, secretRef: {name: tool-secret}}
`
	}
}

func applyConnector(manifest string) (string, error) {
	return cp.Kubectl([]byte(manifest), "apply", "--server-side", "--field-manager=test", "-f", "-")
}

// firstReview applies manifest once the webhook answers: just after its caBundle is written
// the API server may still call it with the old one, and Fail refuses with a call error.
func firstReview(t *testing.T, manifest string) (out string, err error) {
	t.Helper()
	kubelet.WaitUntil(30*time.Second, func() bool {
		out, err = applyConnector(manifest)
		return !strings.Contains(out, "failed calling webhook")
	})
	return out, err
}

// TestAdmissionWebhookWithCertDir serves the webhook with a certificate another tool keeps
// (--webhook-cert-dir): the controller serves it, refuses a bad Connector through the real API
// server, and touches neither the caBundle nor a Secret of its own.
func TestAdmissionWebhookWithCertDir(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	_, controllerKubeconfig := deployedKubeconfigs(t)
	chain, key, err := cert.GenerateSelfSignedCertKeyWithOptions(cert.SelfSignedCertKeyOptions{Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := cert.ParseCertsPEM(chain)
	if err != nil {
		t.Fatal(err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: cert.CertificateBlockType, Bytes: certs[1].Raw})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	cfg := installWebhook(t, ns, port, ca)
	opts := testOptions()
	opts.Role, opts.Kubeconfig = driver.RoleController, controllerKubeconfig
	opts.WebhookListen, opts.WebhookCertDir = "127.0.0.1:"+strconv.Itoa(port), dir
	runDriver(t, opts)
	class := contractClass(t, ns)
	out, err := firstReview(t, strings.Replace(contractConnector(ns, class.Name)("bad"), "addressExtensions: [{name: api, value: \"https://api.tool.example.com\"}]", "", 1))
	if err == nil || !strings.Contains(out, `spec.addressExtensions: Required value`) {
		t.Fatalf("a Connector without a required address extension: %v\n%s", err, out)
	}
	if out, err := applyConnector(contractConnector(ns, class.Name)("good")); err != nil {
		t.Fatalf("a good Connector was refused: %v\n%s", err, out)
	}
	var got admissionregistrationv1.ValidatingWebhookConfiguration
	if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &got); err != nil || !bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, ca) {
		t.Errorf("the caBundle another tool keeps was changed (%v)", err)
	}
	if _, err := cp.Kube.CoreV1().Secrets(systemNS).Get(ctx, admission.CertSecretName, metav1.GetOptions{}); err == nil {
		t.Errorf("the controller made Secret %s although --webhook-cert-dir was given", admission.CertSecretName)
	}
}
