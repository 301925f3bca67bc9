// Package volumeattrs reads what a Pod's inline volume of the driver names in its attributes:
// the Connectors. The node reads them to publish the volume; the approval controller, to tell
// a request the node asked for (the Pod's volume names its Connector) from one written by
// someone else.
package volumeattrs

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kube-connectors/connectors-csi/contract"
)

// The volume attributes that name Connectors (SPEC §3.2).
const (
	// Connectors is a comma-separated list of namespace/name or name (the Pod's namespace).
	Connectors = "connectors"
	// ConnectorName and ConnectorNamespace are the deprecated form of one Connector.
	ConnectorName      = "connector.name"
	ConnectorNamespace = "connector.namespace"
)

// maxVolumeConnectors bounds the Connectors one volume names: each is authorized, read and
// rendered on every publish, and the list is checked before any of that (for a name given
// twice, among others), so its length is the Pod author's to choose and the node's to pay.
const maxVolumeConnectors = 64

// ConnectorsOf returns the Connectors a volume's attributes name, those without a namespace in
// podNamespace. Errors name the attribute and the value at fault.
func ConnectorsOf(vc map[string]string, podNamespace string) ([]types.NamespacedName, error) {
	list, name, ns := vc[Connectors], vc[ConnectorName], vc[ConnectorNamespace]
	if list != "" && (name != "" || ns != "") {
		return nil, fmt.Errorf("give either %s or the deprecated %s/%s, not both", Connectors, ConnectorName, ConnectorNamespace)
	}
	if list == "" && name == "" {
		return nil, fmt.Errorf("volume attribute %s is required (comma-separated namespace/name or name)", Connectors)
	}
	if list == "" {
		if ns == "" {
			ns = podNamespace
		}
		list = ns + "/" + name
	}
	// Counted before it is split: a list of thousands of items is refused without them.
	if n := strings.Count(list, ",") + 1; n > maxVolumeConnectors {
		return nil, fmt.Errorf("%s names %d Connectors; a volume may name at most %d", Connectors, n, maxVolumeConnectors)
	}
	items := strings.Split(list, ",")
	var out []types.NamespacedName
	for _, item := range items {
		item = strings.TrimSpace(item)
		nn := types.NamespacedName{Namespace: podNamespace, Name: item}
		if i := strings.IndexByte(item, '/'); i >= 0 {
			nn = types.NamespacedName{Namespace: item[:i], Name: item[i+1:]}
		}
		if errs := validation.IsDNS1123Subdomain(nn.Name); len(errs) > 0 {
			return nil, fmt.Errorf("%s: %q is not a valid Connector name: %s", Connectors, contract.Short(item), strings.Join(errs, "; "))
		}
		if errs := validation.IsDNS1123Label(nn.Namespace); len(errs) > 0 {
			return nil, fmt.Errorf("%s: %q has an invalid namespace: %s", Connectors, contract.Short(item), strings.Join(errs, "; "))
		}
		if slices.Contains(out, nn) {
			return nil, fmt.Errorf("%s: Connector %q is named twice", Connectors, nn)
		}
		out = append(out, nn)
	}
	return out, nil
}
