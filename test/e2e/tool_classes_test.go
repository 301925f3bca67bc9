package e2e

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/contract"
)

// TestToolClassesTakeTheDocumentedConnectors: the Connectors Alauda's pages show for each tool
// class (class name, auth name, address extensions; public ones without a Secret) pass the
// contract the admission webhook and publish check against the deployed classes.
func TestToolClassesTakeTheDocumentedConnectors(t *testing.T) {
	withSecret := func(auth string) *v1alpha1.ConnectorAuth {
		return &v1alpha1.ConnectorAuth{Name: auth, SecretRef: &v1alpha1.SecretRef{Name: "tool-secret"}}
	}
	for _, tc := range []struct {
		file string
		spec v1alpha1.ConnectorSpec
	}{
		{"github.yaml", v1alpha1.ConnectorSpec{Address: "https://github.com", Auth: withSecret("patAuth"),
			AddressExtensions: []v1alpha1.NamedAddress{{Name: "api", Value: "https://api.github.com"}}}},
		{"github.yaml", v1alpha1.ConnectorSpec{Address: "https://github.com", Auth: &v1alpha1.ConnectorAuth{Name: "patAuth"}}},
		{"gitlab.yaml", v1alpha1.ConnectorSpec{Address: "https://gitlab.com", Auth: withSecret("patAuth")}},
		{"gitlab.yaml", v1alpha1.ConnectorSpec{Address: "https://gitlab.com", Auth: &v1alpha1.ConnectorAuth{Name: "patAuth"}}},
		{"harbor.yaml", v1alpha1.ConnectorSpec{Address: "https://harbor.example.com"}},
		{"harbor.yaml", v1alpha1.ConnectorSpec{Address: "https://harbor.example.com", Auth: withSecret("basicAuth")}},
		{"sonarqube.yaml", v1alpha1.ConnectorSpec{Address: "https://sonarqube.example.com", Auth: withSecret("tokenAuth")}},
	} {
		var class v1alpha1.ConnectorClass
		readDeployedClass(t, tc.file, &class)
		tc.spec.ConnectorClassName = class.Name
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: class.Name + "-demo", Namespace: "team"}, Spec: tc.spec}
		if errs := contract.Connector(c, &class); len(errs) > 0 {
			t.Errorf("class %s refuses the documented Connector at %s: %v", class.Name, tc.spec.Address, errs.ToAggregate())
		}
	}
}
