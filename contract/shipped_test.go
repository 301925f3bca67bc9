package contract

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// objects decodes every document of the YAML files under dir (recursively) whose kind is kind.
func objects[T any](t *testing.T, dir, kind string) []T {
	t.Helper()
	var out []T
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, doc := range bytes.Split(b, []byte("\n---")) {
			var meta struct{ Kind string }
			if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(doc), 4096).Decode(&meta); errors.Is(err, io.EOF) || meta.Kind != kind {
				continue
			}
			var obj T
			if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(doc), 4096).Decode(&obj); err != nil {
				return err
			}
			out = append(out, obj)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestShippedConnectorsKeepTheirContract: with the webhook on, every Connector of deploy/'s
// examples must still be admitted by deploy/'s classes.
func TestShippedConnectorsKeepTheirContract(t *testing.T) {
	classes := map[string]*v1alpha1.ConnectorClass{}
	for _, c := range objects[v1alpha1.ConnectorClass](t, "../deploy/classes", "ConnectorClass") {
		classes[c.Name] = &c
	}
	connectors := objects[v1alpha1.Connector](t, "../deploy/examples", "Connector")
	if len(classes) == 0 || len(connectors) == 0 {
		t.Fatalf("found %d classes and %d Connectors under deploy/", len(classes), len(connectors))
	}
	for _, c := range connectors {
		class := classes[c.Spec.ConnectorClassName]
		if class == nil {
			t.Errorf("Connector %s/%s: no class %q under deploy/classes", c.Namespace, c.Name, c.Spec.ConnectorClassName)
			continue
		}
		if errs := Connector(&c, class); len(errs) > 0 {
			t.Errorf("Connector %s/%s breaks its class's contract: %v", c.Namespace, c.Name, errs.ToAggregate())
		}
	}
}
