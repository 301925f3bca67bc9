package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// alaudaShapes is where the objects written from Alauda's published schemas are.
var alaudaShapes = filepath.Join(controlplane.RepoRoot(), "test", "e2e", "testdata", "alauda")

// TestAlaudaShapesApplyStrictly applies one object per documented shape of Alauda's
// ConnectorClass, Connector, AccessPolicy and AccessRequest (every field of the published
// schemas at least once) with strict server-side field validation, then their statuses to
// the status subresource the same way: nothing is unknown, nothing is pruned. A field the
// schemas do not have is still refused, naming it.
func TestAlaudaShapesApplyStrictly(t *testing.T) {
	specs := filepath.Join(alaudaShapes, "spec-shapes.yaml")
	t.Cleanup(func() { _, _ = cp.Kubectl(nil, "delete", "--ignore-not-found", "--wait=false", "-f", specs) })
	out, err := cp.Kubectl(nil, "apply", "--server-side", "--validate=strict", "--field-manager=compat-test", "-f", specs)
	if err != nil {
		t.Fatalf("Alauda's shapes are refused: %v", err)
	}
	if strings.Contains(strings.ToLower(out), "warning") {
		t.Errorf("applying Alauda's shapes warned (unknown or duplicate fields):\n%s", out)
	}
	assertRoundTrip(t, specs, "spec")
	applyStatuses(t, filepath.Join(alaudaShapes, "status-shapes.yaml"))

	bogus := []byte(`apiVersion: connectors.alauda.io/v1alpha1
kind: ConnectorClass
metadata: {name: shapes-bogus}
spec:
  livenessProbe:
    http: {path: /, followRedirects: true}
`)
	out, err = cp.Kubectl(bogus, "apply", "--server-side", "--validate=strict", "--dry-run=server", "-f", "-")
	if err == nil || !strings.Contains(out, "followRedirects") {
		t.Errorf("a field no schema has was not refused by name (err %v):\n%s", err, out)
	}
}

// assertRoundTrip reads every object of file back and checks that each field under key
// ("spec") is stored as written: the schema pruned nothing.
func assertRoundTrip(t *testing.T, file, key string) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	for _, obj := range readObjects(t, file) {
		want, ok := obj.Object[key]
		if !ok {
			continue
		}
		got, err := dyn.Resource(resourceOf(obj)).Namespace(obj.GetNamespace()).Get(context.Background(), obj.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if missing := missingFields(want, got.Object[key], key); len(missing) > 0 {
			t.Errorf("%s %s: stored without %v", obj.GetKind(), obj.GetName(), missing)
		}
	}
}

// applyStatuses server-side applies each object of file to its status subresource, strictly.
func applyStatuses(t *testing.T, file string) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	force := true
	for _, obj := range readObjects(t, file) {
		body, err := obj.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		_, err = dyn.Resource(resourceOf(obj)).Namespace(obj.GetNamespace()).Patch(context.Background(), obj.GetName(), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "compat-test", FieldValidation: metav1.FieldValidationStrict, Force: &force}, "status")
		if err != nil {
			t.Errorf("the status of %s %s is refused: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	assertRoundTrip(t, file, "status")
}

// readObjects decodes a multi-document YAML file, skipping Namespaces.
func readObjects(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var objs []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			break
		}
		if obj.Object != nil && obj.GetKind() != "Namespace" {
			objs = append(objs, obj)
		}
	}
	if len(objs) == 0 {
		t.Fatalf("no objects in %s", file)
	}
	return objs
}

// resourceOf maps this project's kinds to their resources.
func resourceOf(obj *unstructured.Unstructured) schema.GroupVersionResource {
	gv, _ := schema.ParseGroupVersion(obj.GetAPIVersion())
	plural := map[string]string{"ConnectorClass": "connectorclasses", "Connector": "connectors",
		"AccessPolicy": "accesspolicies", "AccessRequest": "accessrequests"}[obj.GetKind()]
	return gv.WithResource(plural)
}

// missingFields lists the paths of want that got lacks (got may hold more: defaults).
func missingFields(want, got any, path string) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{path}
		}
		var missing []string
		for k, v := range w {
			missing = append(missing, missingFields(v, g[k], path+"."+k)...)
		}
		return missing
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{path}
		}
		var missing []string
		for i := range w {
			missing = append(missing, missingFields(w[i], g[i], path+"[]")...)
		}
		return missing
	case nil:
		return nil
	default:
		if got == nil {
			return []string{path}
		}
		return nil
	}
}
