package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// Example classes of SPEC §3.5 and the seed.
const (
	constantGitconfig = "[user]\n\tname = connectors-bot\n\temail = bot@example.com\n"
	paramsTemplate    = "{{ range .connector.spec.params }}{{ .name }}={{ .value }}\n{{ end }}" +
		"branch={{ .configurations.branch }}\ndepth={{ .configurations.depth }}\n"
)

// newClass creates a cluster-scoped ConnectorClass with a unique name and returns that name.
func newClass(t testing.TB, prefix string, confs ...v1alpha1.Configuration) string {
	t.Helper()
	c := &v1alpha1.ConnectorClass{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(6)},
		Spec:       v1alpha1.ConnectorClassSpec{Address: &v1alpha1.AddressSpec{Type: "string"}, Configurations: confs},
	}
	create(t, c)
	return c.Name
}

// constantClass renders one constant .gitconfig.
func constantClass(t testing.TB) string {
	return newClass(t, "constant", v1alpha1.Configuration{Name: "config", Data: map[string]string{".gitconfig": constantGitconfig}})
}

// paramsClass renders the Connector's spec.params and the configuration's params (branch has a
// default, depth is required).
func paramsClass(t testing.TB) string {
	return newClass(t, "params", v1alpha1.Configuration{
		Name: "settings",
		Data: map[string]string{"settings.txt": paramsTemplate},
		Params: []v1alpha1.ParamSpec{
			{Name: "branch", Default: jsonValue("main")},
			{Name: "depth"},
		},
	})
}

// gitClass creates the built-in git class of deploy/classes under a unique name.
func gitClass(t testing.TB) string { return deployedClass(t, "git.yaml") }

// readDeployedClass reads the class of deploy/classes/<file>.
func readDeployedClass(t testing.TB, file string, c *v1alpha1.ConnectorClass) {
	t.Helper()
	if err := controlplane.ReadYAML(filepath.Join(controlplane.RepoRoot(), "deploy", "classes", file), c); err != nil {
		t.Fatal(err)
	}
}

// deployedClassCopy creates the class of deploy/classes/<file> under a unique name,
// <name>-<random>: tests share one API server and each changes its own copy.
func deployedClassCopy(t testing.TB, file string) *v1alpha1.ConnectorClass {
	t.Helper()
	var c v1alpha1.ConnectorClass
	readDeployedClass(t, file, &c)
	c.Name += "-" + rand.String(6)
	create(t, &c)
	return &c
}

// deployedClass is the name of deployedClassCopy's class.
func deployedClass(t testing.TB, file string) string { return deployedClassCopy(t, file).Name }

func jsonValue(v any) *apiextensionsv1.JSON {
	b, _ := json.Marshal(v)
	return &apiextensionsv1.JSON{Raw: b}
}

// newConnector creates a Connector of a class.
func newConnector(t testing.TB, ns, name, class, address string, params ...v1alpha1.Param) *v1alpha1.Connector {
	t.Helper()
	c := &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: address, Params: params},
	}
	create(t, c)
	return c
}

// podWithVolume creates a Pod of ServiceAccount builder with one inline connectors volume.
func podWithVolume(t testing.TB, k *kubelet.Kubelet, ns, name string, attrs map[string]string, fsGroup *int64) *corev1.Pod {
	t.Helper()
	return podOf(t, k, ns, name, "builder", attrs, fsGroup)
}

// podOf creates a Pod (and its ServiceAccount) with one inline connectors volume; adjust
// changes the Pod before it is created.
func podOf(t testing.TB, k *kubelet.Kubelet, ns, name, sa string, attrs map[string]string, fsGroup *int64, adjust ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	readOnly := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			NodeName:           "node-1",
			SecurityContext:    &corev1.PodSecurityContext{FSGroup: fsGroup},
			Containers:         []corev1.Container{{Name: "main", Image: "busybox"}},
			Volumes: []corev1.Volume{{Name: "connectors", VolumeSource: corev1.VolumeSource{
				CSI: &corev1.CSIVolumeSource{Driver: driverName, ReadOnly: &readOnly, VolumeAttributes: attrs},
			}}},
		},
	}
	for _, a := range adjust {
		a(pod)
	}
	created, err := k.CreatePod(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// createSecret creates a Secret of a type with string data.
func createSecret(t testing.TB, ns, name string, typ corev1.SecretType, data map[string]string) {
	t.Helper()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: typ, StringData: data})
}

// newConnectorWithSecret creates a Connector whose auth uses a Secret, in one create, so that
// no reader ever sees it without its auth.
func newConnectorWithSecret(t testing.TB, ns, name, class, address, auth, secret string) {
	t.Helper()
	create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: address,
			Auth: &v1alpha1.ConnectorAuth{Name: auth, SecretRef: &v1alpha1.SecretRef{Name: secret}}}})
}
