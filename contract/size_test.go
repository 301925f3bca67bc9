package contract

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestConnectorBytes counts labels, annotations and spec, not kubectl's copy of the last
// applied spec, managed fields, status or the class label, and changes nothing of the
// Connector it sizes.
func TestConnectorBytes(t *testing.T) {
	c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "n"}, Spec: v1alpha1.ConnectorSpec{Address: "https://x"}}
	base := ConnectorBytes(c)
	c.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: strings.Repeat("x", 100<<10)}
	c.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: strings.Repeat("m", 100<<10)}}
	c.Status.Conditions = []metav1.Condition{{Message: strings.Repeat("s", 100<<10)}}
	// The controller's class label: counted, it would have the webhook refuse the
	// controller's own patch of a Connector near the bound.
	c.Labels = map[string]string{v1alpha1.LabelConnectorClass: strings.Repeat("c", 63)}
	if got := ConnectorBytes(c); got > base+len(`"labels":{},"annotations":{},`) {
		t.Errorf("%d bytes with only left-out parts added, %d without them", got, base)
	}
	if len(c.Annotations) != 1 || len(c.ManagedFields) != 1 || len(c.Labels) != 1 {
		t.Error("sizing changed the Connector")
	}
	c.Annotations["padding"] = strings.Repeat("x", MaxConnectorBytes)
	if got := ConnectorBytes(c); got <= MaxConnectorBytes {
		t.Errorf("a %d-byte annotation counted as %d bytes", MaxConnectorBytes, got)
	}
}
