package approval

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/node/records"
)

// LabelValue makes a name a valid label value: the name itself when it is one, else (a Pod's or
// Connector's name has up to 253 characters, a label value 63) a readable prefix and a hash of
// the whole name. Every AccessRequest label is written and selected on through it.
func LabelValue(name string) string {
	if len(validation.IsValidLabelValue(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	hash := hex.EncodeToString(sum[:5])
	prefix := name[:min(len(name), validation.LabelValueMaxLength-len(hash)-1)]
	// A label value ends alphanumeric; a name may hold any of these.
	if prefix = strings.TrimRight(prefix, ".-_"); prefix == "" {
		return hash
	}
	return prefix + "-" + hash
}

// podLabels are the labels of an AccessRequest that select the requests of one Pod.
func podLabels(namespace, name string) map[string]string {
	return map[string]string{v1alpha1.LabelContextObjectKind: "Pod",
		v1alpha1.LabelContextObjectNamespace: LabelValue(namespace), v1alpha1.LabelContextObjectName: LabelValue(name)}
}

// requestLabels are all labels of the AccessRequest of a Pod, on a node, for a Connector.
func requestLabels(connector, node string, pod records.Pod) map[string]string {
	l := podLabels(pod.Namespace, pod.Name)
	l[v1alpha1.LabelAccessRequestConnector] = LabelValue(connector)
	l[v1alpha1.LabelNode] = LabelValue(node)
	return l
}
