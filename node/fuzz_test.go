package node

import (
	"strings"
	"testing"
)

// FuzzParseAttributes feeds the volume attributes a Pod author writes (Connectors,
// configuration names and params) to the parser: it must never panic, and what it accepts
// names each Connector as namespace/name with non-empty parts.
func FuzzParseAttributes(f *testing.F) {
	f.Fuzz(func(t *testing.T, connectors, names, params string) {
		vc := map[string]string{
			"connectors": connectors, "configuration.names": names, "configuration.params": params,
			"csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/pod.namespace": "ns", "csi.storage.k8s.io/pod.uid": "u",
			"csi.storage.k8s.io/serviceAccount.name": "sa", "csi.storage.k8s.io/ephemeral": "true",
			"csi.storage.k8s.io/serviceAccount.tokens": `{"connectors-csi":{"token":"t","expirationTimestamp":"2030-01-01T00:00:00Z"}}`,
		}
		vr, err := parseAttributes(vc, nil, "connectors-csi")
		if err != nil {
			return
		}
		for _, nn := range vr.connectors {
			if nn.Namespace == "" || nn.Name == "" || strings.Contains(nn.Namespace, "/") {
				t.Fatalf("connectors=%q gave %q", connectors, nn)
			}
		}
	})
}
