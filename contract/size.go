package contract

import (
	"encoding/json"
	"maps"
	"math"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// MaxConnectorBytes bounds a Connector's size as JSON, status aside: a tool's Connector is a
// few KiB (with kubectl's copy of its spec in an annotation, twice that); a node holds each
// Connector its Pods name, so one of 1.5 MiB (etcd's limit) a thousand times over would take
// its memory.
const MaxConnectorBytes = 64 << 10

// ConnectorBytes is c's size as JSON without its status and class label (the controller's:
// counted, its label would have the webhook refuse the controller's own patch of a Connector
// near the bound), its managed fields (the API server's) and kubectl's copy of the last
// applied spec (which a node drops).
func ConnectorBytes(c *v1alpha1.Connector) int {
	meta := c.ObjectMeta // a shallow copy: what is left out is replaced, never changed
	meta.ManagedFields = nil
	if _, ok := meta.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		meta.Annotations = maps.Clone(meta.Annotations)
		delete(meta.Annotations, corev1.LastAppliedConfigAnnotation)
	}
	if _, ok := meta.Labels[v1alpha1.LabelConnectorClass]; ok {
		meta.Labels = maps.Clone(meta.Labels)
		delete(meta.Labels, v1alpha1.LabelConnectorClass)
	}
	b, err := json.Marshal(&v1alpha1.Connector{TypeMeta: c.TypeMeta, ObjectMeta: meta, Spec: c.Spec})
	if err != nil {
		return math.MaxInt
	}
	return len(b)
}
