package approval

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestUsesConnector: a request is the Pod's when one of its volumes of the driver names the
// request's Connector, in any form the node reads (a name in the Pod's namespace, namespace/name,
// the deprecated pair); another driver's volume, another namespace's Connector of the name, or a
// volume the node would refuse do not count.
func TestUsesConnector(t *testing.T) {
	pod := func(driver string, attrs map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "other", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "connectors", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: driver, VolumeAttributes: attrs}}},
		}}}
	}
	own, shared := types.NamespacedName{Namespace: "team", Name: "git"}, types.NamespacedName{Namespace: "kube-public", Name: "git"}
	for _, c := range []struct {
		name      string
		pod       *corev1.Pod
		connector types.NamespacedName
		want      bool
	}{
		{"a name", pod("connectors-csi", map[string]string{"connectors": "git"}), own, true},
		{"in a list, spaced", pod("connectors-csi", map[string]string{"connectors": "oci, git"}), own, true},
		{"namespace/name", pod("connectors-csi", map[string]string{"connectors": "kube-public/git"}), shared, true},
		{"the deprecated pair", pod("connectors-csi", map[string]string{"connector.name": "git", "connector.namespace": "kube-public"}), shared, true},
		{"another namespace's of the name", pod("connectors-csi", map[string]string{"connectors": "git"}), shared, false},
		{"another driver's volume", pod("other.csi", map[string]string{"connectors": "git"}), own, false},
		{"a volume the node refuses", pod("connectors-csi", map[string]string{"connectors": "git,git"}), own, false},
		{"no volume", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team"}}, own, false},
	} {
		if got := usesConnector(c.pod, "connectors-csi", c.connector); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
