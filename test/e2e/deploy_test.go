package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
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
		"clusterrole.rbac.authorization.k8s.io/connectors-csi-node",
		"clusterrole.rbac.authorization.k8s.io/connectors-csi-controller",
		"deployment.apps/connectors-csi-controller",
		"flowschema.flowcontrol.apiserver.k8s.io/connectors-csi-node",
		"prioritylevelconfiguration.flowcontrol.apiserver.k8s.io/connectors-csi-controller",
		"configmap/connectors-config",
		"connectorclass.connectors.alauda.io/git",
		"service/connectors-csi-webhook",
		"validatingwebhookconfiguration.admissionregistration.k8s.io/connectors-csi",
		"customresourcedefinition.apiextensions.k8s.io/resourceinterfaces.connectors.alauda.io",
		"resourceinterface.connectors.alauda.io/gitcoderepository",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply output lacks %q:\n%s", want, out)
		}
	}
	if _, err := cp.Kubectl(nil, "apply", "--server-side", "--dry-run=server", "-f", filepath.Join(root, "deploy", "examples")); err != nil {
		t.Fatal(err)
	}
	// make release's rendering: the same base with the image pinned by digest, in one file.
	digest := "sha256:" + strings.Repeat("ab", 32)
	release := filepath.Join(t.TempDir(), "install.yaml")
	cmd := exec.Command(filepath.Join(root, "hack", "release.sh"))
	cmd.Env = append(os.Environ(), "DIGEST="+digest, "IMAGE_REPO=registry.example.com/connectors-csi", "OUT="+release)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/release.sh: %v\n%s", err, out)
	}
	installYAML, err := os.ReadFile(release)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(installYAML), "image: registry.example.com/connectors-csi@"+digest); n != 2 || strings.Contains(string(installYAML), "connectors-csi:latest") {
		t.Errorf("the release pins %d workloads to the digest (want the DaemonSet and the controller), or still names :latest", n)
	}
	if _, err := cp.Kubectl(nil, "apply", "--server-side", "--dry-run=server", "-f", release); err != nil {
		t.Fatal(err)
	}
	// And the chart it packages beside it, with the same image as its default.
	packaged, err := filepath.Glob(filepath.Join(filepath.Dir(release), "connectors-csi-*.tgz"))
	if err != nil || len(packaged) != 1 {
		t.Fatalf("hack/release.sh packaged %v (%v), want one chart", packaged, err)
	}
	chart, err := helmTemplate(t, packaged[0], systemNS)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(chart, "image: registry.example.com/connectors-csi@"+digest); n != 2 {
		t.Errorf("the packaged chart pins %d workloads to the digest, want 2", n)
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

// TestDeployedWorkloadsTryHostNamesAsWritten: the node's and the controller's Pods resolve a
// name with a dot as written before the cluster's search list (ndots 1): with the default 5, a
// Connector's private host name gitlab.corp is first asked as gitlab.corp.svc.cluster.local,
// the Service gitlab of a namespace corp, which a tenant may own, and would receive the
// credential. deploy/base as kustomize renders it (the chart renders the same:
// TestHelmChartMatchesKustomizeBase).
func TestDeployedWorkloadsTryHostNamesAsWritten(t *testing.T) {
	out, err := cp.Kubectl(nil, "kustomize", filepath.Join(controlplane.RepoRoot(), "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	objects := renderedObjects(t, out)
	for _, key := range []string{"DaemonSet/" + systemNS + "/connectors-csi", "Deployment/" + systemNS + "/connectors-csi-controller"} {
		obj, ok := objects[key]
		if !ok {
			t.Fatalf("%s not applied", key)
		}
		options, _, _ := unstructured.NestedSlice(obj, "spec", "template", "spec", "dnsConfig", "options")
		if len(options) != 1 || !reflect.DeepEqual(options[0], map[string]any{"name": "ndots", "value": "1"}) {
			t.Errorf("%s's Pods resolve with dnsConfig options %v, want ndots 1", key, options)
		}
	}
}

// TestBuiltInResourceInterfacesApplyStrictly applies deploy/resourceinterfaces for real with
// strict server-side field validation (an unknown or pruned field fails the apply) and reads
// each interface back: every documented category is there and nothing was pruned.
func TestBuiltInResourceInterfacesApplyStrictly(t *testing.T) {
	dir := filepath.Join(controlplane.RepoRoot(), "deploy", "resourceinterfaces")
	if _, err := cp.Kubectl(nil, "apply", "--server-side", "--validate=strict", "-k", dir); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"gitcoderepository": "GitCodeRepository", "ociartifact": "OCIArtifact", "mavenrepository": "MavenRepository"}
	for name, category := range want {
		var ri v1alpha1.ResourceInterface
		if err := cp.Client.Get(context.Background(), client.ObjectKey{Name: name}, &ri); err != nil {
			t.Fatal(err)
		}
		if got := ri.Labels[v1alpha1.LabelResourceInterfaceCategory]; got != category {
			t.Errorf("%s: category %q, want %q", name, got, category)
		}
		csi := 0
		for _, w := range ri.Spec.Workspaces {
			if w.Value != nil && w.Value.CSI != nil && w.Value.CSI.Driver == driverName && w.Value.CSI.VolumeAttributes["configuration.names"] != "" {
				csi++
			}
		}
		if csi != 1 || len(ri.Spec.Attributes) == 0 {
			t.Errorf("%s: %d connectors-csi workspaces with configuration.names and %d attributes, want 1 and some", name, csi, len(ri.Spec.Attributes))
		}
	}
	var git v1alpha1.ResourceInterface
	if err := cp.Client.Get(context.Background(), client.ObjectKey{Name: "gitcoderepository"}, &git); err != nil {
		t.Fatal(err)
	}
	if vct := git.Spec.Workspaces[0].Value.VolumeClaimTemplate; vct == nil || vct.Spec.Resources.Requests.Storage().IsZero() {
		t.Errorf("gitcoderepository's source workspace lost its volumeClaimTemplate: %+v", git.Spec.Workspaces[0].Value)
	}
	// Every field of the published schema, set: applied strictly and stored as written.
	shape := filepath.Join(controlplane.RepoRoot(), "test", "e2e", "testdata", "resourceinterface-shape.yaml")
	var every v1alpha1.ResourceInterface
	if err := controlplane.ReadYAML(shape, &every); err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(nil, "apply", "--server-side", "--validate=strict", "-f", shape); err != nil || strings.Contains(strings.ToLower(out), "warning") {
		t.Fatalf("the every-field ResourceInterface: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), &every) })
	var got v1alpha1.ResourceInterface
	if err := cp.Client.Get(context.Background(), client.ObjectKeyFromObject(&every), &got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(every.Spec, got.Spec) {
		t.Errorf("the every-field ResourceInterface was not stored as written:\nwant %+v\ngot  %+v", every.Spec, got.Spec)
	}
	// Strict validation is on: an unknown field is refused, naming it.
	bad := `apiVersion: connectors.alauda.io/v1alpha1
kind: ResourceInterface
metadata: {name: bad-interface}
spec:
  workspaces: [{name: w, value: {csi: {driver: connectors-csi, colour: red}}}]
`
	out, err := cp.Kubectl([]byte(bad), "apply", "--server-side", "--validate=strict", "--dry-run=server", "-f", "-")
	if err == nil || !strings.Contains(out, "colour") {
		t.Fatalf("an unknown field was accepted or not named: %v\n%s", err, out)
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

// TestDeployedRolesHoldLeastPrivilege asks the API server what each role's ServiceAccount of
// deploy/base/rbac.yaml may do: the node's, on every node, writes no RBAC, may not escalate or
// bind, and lists no Pods; neither role lists or watches Pods.
func TestDeployedRolesHoldLeastPrivilege(t *testing.T) {
	deployedKubeconfigs(t)
	type access struct {
		group, resource, verb string
		allowed               bool
	}
	for sa, cases := range map[string][]access{
		"connectors-csi-node": {
			{"rbac.authorization.k8s.io", "roles", "create", false}, {"rbac.authorization.k8s.io", "rolebindings", "create", false},
			{"rbac.authorization.k8s.io", "roles", "escalate", false}, {"rbac.authorization.k8s.io", "roles", "bind", false},
			{"", "pods", "list", false}, {"", "pods", "watch", false}, {"", "pods", "get", false},
			{"connectors.alauda.io", "accessrequests", "update", false}, {"connectors.alauda.io", "connectors", "patch", false},
			{"coordination.k8s.io", "leases", "create", false}, {"", "secrets", "list", false},
			{"", "secrets", "get", true}, {"authentication.k8s.io", "tokenreviews", "create", true},
			{"connectors.alauda.io", "accessrequests", "create", true}, {"connectors.alauda.io", "accessrequests", "watch", true},
		},
		// What the node sends for its callers: reviews and the proxy's reads, nothing else.
		"connectors-csi-callers": {
			{"authentication.k8s.io", "tokenreviews", "create", true}, {"authorization.k8s.io", "subjectaccessreviews", "create", true},
			{"", "secrets", "get", true}, {"connectors.alauda.io", "connectors", "list", true}, {"connectors.alauda.io", "accessrequests", "list", true},
			{"", "secrets", "list", false}, {"connectors.alauda.io", "connectors", "watch", false}, {"connectors.alauda.io", "accessrequests", "create", false},
			{"", "pods", "get", false}, {"", "configmaps", "get", false}, {"", "events", "create", false},
		},
		"connectors-csi-controller": {
			{"", "pods", "list", false}, {"", "pods", "watch", false}, {"", "secrets", "list", false},
			{"", "pods", "get", true}, {"rbac.authorization.k8s.io", "roles", "create", true},
			{"coordination.k8s.io", "leases", "create", true}, {"authentication.k8s.io", "tokenreviews", "create", true},
		},
	} {
		for _, c := range cases {
			ns := "some-tenant"
			if c.resource == "leases" {
				ns = systemNS
			}
			res, err := cp.Kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{
					User:               "system:serviceaccount:" + systemNS + ":" + sa,
					Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNS, "system:authenticated"},
					ResourceAttributes: &authorizationv1.ResourceAttributes{Group: c.group, Resource: c.resource, Verb: c.verb, Namespace: ns},
				}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status.Allowed != c.allowed {
				t.Errorf("%s may %s %s.%s: %v, want %v", sa, c.verb, c.resource, c.group, res.Status.Allowed, c.allowed)
			}
		}
	}
	// The webhook's certificate and caBundle: the controller may write its own Secret and its
	// own ValidatingWebhookConfiguration, nothing else of either kind; the node neither.
	type named struct {
		sa, group, resource, verb, namespace, name string
		allowed                                    bool
	}
	const ctl, node, vwc = "connectors-csi-controller", "connectors-csi-node", "validatingwebhookconfigurations"
	for _, c := range []named{
		{ctl, "admissionregistration.k8s.io", vwc, "patch", "", "connectors-csi", true},
		{ctl, "admissionregistration.k8s.io", vwc, "patch", "", "other-webhook", false},
		{ctl, "admissionregistration.k8s.io", vwc, "create", "", "", false},
		{ctl, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", "", "connectors-csi", false},
		{node, "admissionregistration.k8s.io", vwc, "patch", "", "connectors-csi", false},
		{ctl, "", "secrets", "create", systemNS, "", true},
		{ctl, "", "secrets", "update", systemNS, "connectors-csi-webhook-cert", true},
		{ctl, "", "secrets", "update", systemNS, "connectors-proxy-ca", false},
		{ctl, "", "secrets", "create", "some-tenant", "", false},
		{node, "", "secrets", "update", systemNS, "connectors-csi-webhook-cert", false},
		// The node acts as its callers' identity, and as no other.
		{node, "", "serviceaccounts", "impersonate", systemNS, "connectors-csi-callers", true},
		{node, "", "serviceaccounts", "impersonate", systemNS, ctl, false},
		{node, "", "serviceaccounts", "impersonate", "some-tenant", "connectors-csi-callers", false},
		{node, "", "users", "impersonate", "", "system:admin", false},
		// And may add the Connectors API's group to it (--api-callers-group), and no other.
		{node, "", "groups", "impersonate", "", "connectors-csi:connectors-api", true},
		{node, "", "groups", "impersonate", "", "system:masters", false},
		{ctl, "", "groups", "impersonate", "", "connectors-csi:connectors-api", false},
		{ctl, "", "serviceaccounts", "impersonate", systemNS, "connectors-csi-callers", false},
	} {
		res, err := cp.Kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + systemNS + ":" + c.sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNS, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Group: c.group, Resource: c.resource, Verb: c.verb,
					Namespace: c.namespace, Name: c.name},
			}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.Allowed != c.allowed {
			t.Errorf("%s may %s %s.%s %s/%s: %v, want %v", c.sa, c.verb, c.resource, c.group, c.namespace, c.name, res.Status.Allowed, c.allowed)
		}
	}
}

// TestAStolenControllerTokenIsNotClusterAdmin: the controller holds escalate and bind on Roles
// and writes RoleBindings, Services, Connectors and its webhook's configuration, so
// deploy/base/rbac.yaml's admission policy holds what its token writes to what the controller
// writes (the controller's own writes go through it in every test that runs it as deployed):
// a Role of any other rule, a binding of an existing Role or of another subject, a change or
// delete of RBAC or Services it did not make, a Connector's spec, its webhook's URL, are
// refused; a grant as the controller writes it, a Connector's labels and the webhook's
// caBundle pass.
func TestAStolenControllerTokenIsNotClusterAdmin(t *testing.T) {
	_, kubeconfig := deployedKubeconfigs(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	ctx := context.Background()
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }
	readSecrets := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}}
	thief := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "connectors-csi-controller", Namespace: systemNS}
	// The policy applies once the API server has loaded it.
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		probe := &rbacv1.Role{ObjectMeta: meta("probe"), Rules: readSecrets}
		err := stolen.Create(ctx, probe)
		_ = cp.Client.Delete(ctx, probe)
		return apierrors.IsInvalid(err)
	}) {
		t.Fatal("the controller's writes are not held by the admission policy")
	}

	// What a tenant, or the cluster, has: a Role and RoleBinding of one name, a Service, a
	// Connector, and the webhook's configuration.
	create(t, &rbacv1.Role{ObjectMeta: meta("app"), Rules: readSecrets})
	create(t, &rbacv1.RoleBinding{ObjectMeta: meta("app"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "app"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "app", Namespace: ns}}})
	create(t, &rbacv1.Role{ObjectMeta: meta("lonely"), Rules: readSecrets})
	create(t, &corev1.Service{ObjectMeta: meta("c-tenant"), Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
	newConnector(t, ns, "git", gitClass(t), "https://github.com")
	webhook := deployedWebhookConfiguration(t)
	webhook.Webhooks[0].ClientConfig.Service = nil
	webhook.Webhooks[0].ClientConfig.URL = ptr.To("https://127.0.0.1:1/never")
	webhook.Webhooks[0].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "none-" + ns}}
	create(t, webhook)
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), webhook) })

	grantOf := func(name string) metav1.ObjectMeta {
		m := meta(name)
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AccessRequest", Name: name, UID: "u", Controller: ptr.To(true)}}
		return m
	}
	connectorsUse := []rbacv1.PolicyRule{{APIGroups: []string{"connectors.alauda.io"}, Resources: []string{"connectors/proxy/v1/pod/" + ns + "/p"}, Verbs: []string{"get"}}}
	withThief := func(rb *rbacv1.RoleBinding) { rb.Subjects = append(rb.Subjects, thief) }
	for _, tc := range []struct {
		name  string
		write func() error
		want  string
	}{
		{"a Role to read Secrets", func() error {
			return stolen.Create(ctx, &rbacv1.Role{ObjectMeta: grantOf("steal"), Rules: readSecrets})
		},
			"writes Roles of Connector-use rules only"},
		{"a Role to write Connectors", func() error {
			return stolen.Create(ctx, &rbacv1.Role{ObjectMeta: grantOf("redirect"),
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{"connectors.alauda.io"}, Resources: []string{"connectors"}, Verbs: []string{"update"}}}})
		}, "writes Roles of Connector-use rules only"},
		{"a binding of admin", func() error {
			return stolen.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: grantOf("grant"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
				Subjects: []rbacv1.Subject{thief}})
		}, "binds only the Role of a RoleBinding's own name"},
		{"a binding of an existing Role", func() error {
			return stolen.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta("lonely"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "lonely"},
				Subjects: []rbacv1.Subject{thief}})
		}, "writes and deletes only the Roles, RoleBindings and Services it makes"},
		{"a change of another's binding", func() error { return updateAs(ctx, stolen, &rbacv1.RoleBinding{ObjectMeta: meta("app")}, withThief) },
			"writes and deletes only the Roles, RoleBindings and Services it makes"},
		{"a binding to a user", func() error {
			return stolen.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: grantOf("use"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "use"},
				Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "mallory"}}})
		}, "binds ServiceAccounts and their groups only"},
		{"a delete of another's Role", func() error { return stolen.Delete(ctx, &rbacv1.Role{ObjectMeta: meta("app")}) },
			"writes and deletes only the Roles, RoleBindings and Services it makes"},
		{"a change of a tenant's Service", func() error {
			return updateAs(ctx, stolen, &corev1.Service{ObjectMeta: meta("c-tenant")}, func(s *corev1.Service) { s.Labels = map[string]string{"x": "y"} })
		}, "writes and deletes only the Roles, RoleBindings and Services it makes"},
		{"a Connector's address", func() error {
			return updateAs(ctx, stolen, &v1alpha1.Connector{ObjectMeta: meta("git")}, func(c *v1alpha1.Connector) { c.Spec.Address = "https://evil.example" })
		}, "never its spec"},
		{"the webhook's URL", func() error {
			return updateAs(ctx, stolen, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhook.Name}},
				func(w *admissionregistrationv1.ValidatingWebhookConfiguration) {
					w.Webhooks[0].ClientConfig.URL = ptr.To("https://evil.example/")
				})
		}, "changes its webhook's caBundle only"},
		// As the controller writes: passed.
		{"a grant", func() error {
			return stolen.Create(ctx, &rbacv1.Role{ObjectMeta: grantOf("grant-ok"), Rules: connectorsUse})
		}, ""},
		{"a Connector's labels", func() error {
			return updateAs(ctx, stolen, &v1alpha1.Connector{ObjectMeta: meta("git")}, func(c *v1alpha1.Connector) { c.Labels = map[string]string{"x": "y"} })
		}, ""},
		{"the webhook's caBundle", func() error {
			return updateAs(ctx, stolen, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhook.Name}},
				func(w *admissionregistrationv1.ValidatingWebhookConfiguration) {
					w.Webhooks[0].ClientConfig.CABundle = []byte("x")
				})
		}, ""},
	} {
		err := tc.write()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want it written", tc.name, err)
		case tc.want != "" && (!apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want Invalid saying %q", tc.name, err, tc.want)
		}
	}
}

// updateAs reads obj, changes it, and patches it with c (the controller patches what it does
// not own whole), again on a conflict.
func updateAs[T client.Object](ctx context.Context, c client.Client, obj T, change func(T)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		before := obj.DeepCopyObject().(T)
		change(obj)
		return c.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	})
}

// TestTenancyOnlyTheNodeLabelsRequestsForANode: every node keeps the AccessRequests labelled for
// it, so whoever may write AccessRequests could fill a node's memory with requests labelled
// for it. With the deployed admission policy, only the node role sets or changes the label, and
// the schema bounds a request's strings (a request of a megabyte is refused).
func TestTenancyOnlyTheNodeLabelsRequestsForANode(t *testing.T) {
	nodeKubeconfig, _ := deployedKubeconfigs(t)
	ns := newNamespace(t)
	ctx := context.Background()
	clientOf := func(kubeconfig string) client.Client {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(cfg, client.Options{Scheme: cp.Client.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "writer", Namespace: ns}})
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "write-requests", Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"accessrequests"}, Verbs: []string{"create", "update", "patch", "get"}}}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "write-requests", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "write-requests"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "writer", Namespace: ns}}})
	tenant, node := clientOf(serviceAccountKubeconfig(t, ns, "writer")), clientOf(nodeKubeconfig)

	request := func(name string, labels map[string]string) *v1alpha1.AccessRequest {
		return &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: v1alpha1.AccessRequestSpec{Subject: rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns},
				ConnectorRef: v1alpha1.LocalObjectRef{Name: "git"},
				Context:      v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{APIVersion: "v1", Kind: "Pod", Name: "p", Namespace: ns}}}}
	}
	forNode := map[string]string{v1alpha1.LabelNode: "node-1"}
	const refusal = "only the Connectors CSI node role sets or changes the label connectors.cpaas.io/node"
	// The policy applies once the API server has loaded it (and the tenant's Role once RBAC has).
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		err := tenant.Create(ctx, request("probe-"+rand.String(5), forNode))
		return err != nil && strings.Contains(err.Error(), refusal)
	}) {
		t.Fatal("a tenant's request labelled for a node was not refused by the admission policy")
	}

	plain := request("plain", map[string]string{"team": "a"})
	if err := tenant.Create(ctx, plain); err != nil {
		t.Fatalf("a tenant's request without the node label: %v", err)
	}
	labelled := plain.DeepCopy()
	labelled.Labels[v1alpha1.LabelNode] = "node-1"
	if err := tenant.Update(ctx, labelled); err == nil || !strings.Contains(err.Error(), refusal) {
		t.Errorf("a tenant labelling its request for a node: %v, want the policy's refusal", err)
	}
	plain.Labels["team"] = "b"
	if err := tenant.Update(ctx, plain); err != nil {
		t.Errorf("a tenant changing another label: %v", err)
	}
	mine := request("nodes", forNode)
	if err := node.Create(ctx, mine); err != nil {
		t.Fatalf("the node's request labelled for it: %v", err)
	}
	mine.Labels[v1alpha1.LabelNode] = "node-2"
	if err := tenant.Update(ctx, mine); err == nil || !strings.Contains(err.Error(), refusal) {
		t.Errorf("a tenant moving the node's request to another node: %v, want the policy's refusal", err)
	}

	// The schema bounds the strings, so a request the node does keep is small.
	large := request("large", nil)
	large.Spec.Context.ObjectRef.FieldPath = strings.Repeat("x", 1<<20)
	if err := node.Create(ctx, large); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "fieldPath") {
		t.Errorf("a request with a fieldPath of 1 MiB: %v, want invalid, naming it", err)
	}
	large = request("large-subject", nil)
	large.Spec.Subject.Name = strings.Repeat("x", 300)
	if err := node.Create(ctx, large); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "subject") {
		t.Errorf("a request with a subject name of 300 characters: %v, want invalid, naming it", err)
	}
}

// TestTenancyRequestsAnyoneCanCauseHaveTheirOwnPriorityLevel: anyone who reaches a node can
// make its proxy and Connectors API send reviews and reads (a new token, a made-up name), and
// every node is one user, so at many nodes they would fill the node role's priority level,
// where publishes' requests wait. As deployed (--callers-as, the RBAC and flow control of
// deploy/base), the proxy's and the API's reviews, and the proxy's reads of Secrets, are sent
// as connectors-csi-callers, which the API server puts in a priority level of its own;
// publishes' reviews are still the node's.
func TestTenancyRequestsAnyoneCanCauseHaveTheirOwnPriorityLevel(t *testing.T) {
	root := controlplane.RepoRoot()
	if _, err := cp.Kubectl(nil, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(root, "deploy", "base", "flowcontrol.yaml")); err != nil {
		t.Fatal(err)
	}
	callers := "system:serviceaccount:" + systemNS + ":connectors-csi-callers"
	tool := startGitServer(t, false)
	since := time.Now()
	env, _ := startDeployedNode(t, nil)
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	allowConnectors(t, ns, "ui", "tool")
	_, token := publishedToken(t, env, ns, "client", "tool")
	if code, body := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/repo.git/info/refs?service=git-upload-pack",
		map[string]string{"Authorization": "Bearer " + token})); code != http.StatusOK {
		t.Fatalf("through the proxy: %d %q", code, body)
	}
	if code, _, st := apiCall(t, "GET", connectorAPI(env, ns, "tool", "/git/gitrefs?repositoryUrl="+tool.URL+"/repo.git"), apiToken(t, ns, "ui")); code != http.StatusOK {
		t.Fatalf("through the Connectors API: %d %q", code, st.Message)
	}

	events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.ObjectRef != nil && !ev.RequestReceivedTimestamp.Time.Before(since) &&
			(ev.Verb == "create" && (ev.ObjectRef.Resource == "tokenreviews" || ev.ObjectRef.Resource == "subjectaccessreviews") ||
				ev.Verb == "get" && ev.ObjectRef.Resource == "secrets" && ev.ObjectRef.Namespace == ns)
	})
	if err != nil {
		t.Fatal(err)
	}
	const apiGroup = "connectors-csi:connectors-api"
	as := map[string]map[string]int{} // resource → the user it was sent as (+ the API's group) → requests
	for _, ev := range events {
		user := controlplane.NodeUser
		if ev.ImpersonatedUser != nil {
			user = ev.ImpersonatedUser.Username
			if slices.Contains(ev.ImpersonatedUser.Groups, apiGroup) {
				user += "+" + apiGroup
			}
		}
		if as[ev.ObjectRef.Resource] == nil {
			as[ev.ObjectRef.Resource] = map[string]int{}
		}
		as[ev.ObjectRef.Resource][user]++
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code >= 300 {
			t.Errorf("a request as %s was answered %d: %s", user, ev.ResponseStatus.Code, ev.ResponseStatus.Message)
		}
	}
	// The proxy's and the API's reviews (two tokens, two users' questions) and the proxy's read
	// of the Connector's Secret as the callers' identity, the API's with its group; the
	// publish's review (a SubjectAccessReview of the Pod's ServiceAccount: kubelet vouches for
	// the token) as the node.
	apiCallers := callers + "+" + apiGroup
	if as["tokenreviews"][callers] < 1 || as["tokenreviews"][apiCallers] < 1 || as["tokenreviews"][controlplane.NodeUser] != 0 {
		t.Errorf("TokenReviews sent: %v, want at least one as %s (the proxy's), one as %s (the API's) and none as the node",
			as["tokenreviews"], callers, apiCallers)
	}
	if as["subjectaccessreviews"][callers] < 1 || as["subjectaccessreviews"][apiCallers] < 1 || as["subjectaccessreviews"][controlplane.NodeUser] < 1 {
		t.Errorf("SubjectAccessReviews sent: %v, want at least one as %s (the proxy's), one as %s (the API's) and 1 as the node (the publish's)",
			as["subjectaccessreviews"], callers, apiCallers)
	}
	if as["secrets"][callers] < 1 || as["secrets"][controlplane.NodeUser] != 0 {
		t.Errorf("Secret reads: %v, want the proxy's as %s and none as the node", as["secrets"], callers)
	}

	// The API server's flow control puts each in its own level: it names the level of every
	// answer (X-Kubernetes-PF-PriorityLevel-UID).
	nodeKubeconfig, _ := deployedKubeconfigs(t)
	// answer sends a request as the node, impersonating impersonate (none: ""), and returns
	// the API server's answer's headers.
	answer := func(impersonate, method, path, body string, want int, groups ...string) http.Header {
		cfg, err := clientcmd.BuildConfigFromFlags("", nodeKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Impersonate.UserName, cfg.Impersonate.Groups = impersonate, groups
		rt, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(method, strings.TrimSuffix(cfg.Host, "/")+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := rt.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("%s %s as %q: %d, want %d", method, path, impersonate, res.StatusCode, want)
		}
		return res.Header
	}
	review := `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"not-a-token"}}`
	levelOf := func(impersonate string, groups ...string) string {
		return answer(impersonate, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, http.StatusCreated, groups...).
			Get(flowcontrolv1.ResponseHeaderMatchedPriorityLevelConfigurationUID)
	}
	uidOf := func(obj client.Object, name string) string {
		if err := cp.Client.Get(context.Background(), client.ObjectKey{Name: name}, obj); err != nil {
			t.Fatal(err)
		}
		return string(obj.GetUID())
	}
	level := func(name string) string { return uidOf(&flowcontrolv1.PriorityLevelConfiguration{}, name) }
	schema := func(name string) string { return uidOf(&flowcontrolv1.FlowSchema{}, name) }
	if !kubelet.WaitUntil(10*time.Second, func() bool { return levelOf(callers) == level("connectors-csi-callers") }) {
		t.Errorf("a review as %s is not in the priority level connectors-csi-callers", callers)
	}
	// Its reads of a namespace's objects are a flow per namespace (ByNamespace), its reviews
	// one flow (ByUser): the schema of each answer (X-Kubernetes-PF-FlowSchema-UID).
	schemaOf := func(method, path, body string, want int) string {
		return answer(callers, method, path, body, want).Get(flowcontrolv1.ResponseHeaderMatchedFlowSchemaUID)
	}
	if got := schemaOf("GET", "/api/v1/namespaces/"+ns+"/secrets/any", "", http.StatusNotFound); got != schema("connectors-csi-callers-by-namespace") {
		t.Errorf("a Secret's read as %s matched the flow schema of UID %s, want connectors-csi-callers-by-namespace's", callers, got)
	}
	if got := schemaOf("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, http.StatusCreated); got != schema("connectors-csi-callers") {
		t.Errorf("a review as %s matched the flow schema of UID %s, want connectors-csi-callers'", callers, got)
	}
	// The API's, with its group, in a level apart from the proxy's: a flood of made-up tokens
	// at every node's API leaves the proxy's reviews of Pods' tokens their own.
	if got := levelOf(callers, apiGroup); got != level("connectors-csi-api-callers") {
		t.Errorf("a review as %s with the group %s is in the priority level of UID %s, want connectors-csi-api-callers'", callers, apiGroup, got)
	}
	if got := levelOf(""); got != level("connectors-csi-node") {
		t.Errorf("a review as the node is in the priority level of UID %s, want connectors-csi-node's", got)
	}
}
