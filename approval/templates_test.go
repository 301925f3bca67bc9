package approval

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// builtins reads the built-in template ConfigMaps of deploy/base/templates.yaml.
func builtins(t *testing.T) map[string]*corev1.ConfigMap {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "base", "templates.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*corev1.ConfigMap{}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var cm corev1.ConfigMap
		if err := yaml.UnmarshalStrict([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		out[cm.Name] = &cm
	}
	return out
}

func testContext() map[string]any {
	return map[string]any{
		"object": map[string]any{"metadata": map[string]any{
			"name": "build-1-pod", "namespace": "team", "labels": map[string]any{"tekton.dev/pipelineRun": "run-1"}}},
		"connector": map[string]any{"metadata": map[string]any{"name": "prod-registry", "namespace": "team"}},
	}
}

func TestBuiltinRoleTemplates(t *testing.T) {
	cms, tpl := builtins(t), NewTemplates()
	for name, want := range map[string]string{
		"connectors-use-connectors-proxy":        "connectors/proxy",
		"connectors-use-connectors-proxy-in-pod": "connectors/proxy/v1/pod/team/build-1-pod",
	} {
		rules, err := tpl.Rules(cms[name], testContext())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := rules[0]
		if len(rules) != 1 || r.Resources[0] != want || r.ResourceNames[0] != "prod-registry" || r.Verbs[0] != "*" ||
			r.APIGroups[0] != "connectors.alauda.io" {
			t.Errorf("%s rendered %+v", name, rules)
		}
	}
}

func TestBuiltinCheckTemplate(t *testing.T) {
	tpl := NewTemplates()
	spec, err := tpl.Check(builtins(t)["connectors-approvals-in-pipeline"])
	if err != nil {
		t.Fatal(err)
	}
	if spec.Selector.ObjectRef.Kind != "ApprovalTask" || spec.Selector.ObjectRef.APIVersion != "openshift-pipelines.org/v1alpha1" {
		t.Fatalf("objectRef %+v", spec.Selector.ObjectRef)
	}
	labels, err := tpl.MatchLabels(spec, testContext())
	if err != nil || labels["tekton.dev/pipelineRun"] != "run-1" {
		t.Fatalf("matchLabels %v %v", labels, err)
	}
}

func TestBadTemplatesAreNamed(t *testing.T) {
	tpl := NewTemplates()
	for _, cm := range []*corev1.ConfigMap{
		{Data: map[string]string{"rule": "x"}},
		{Data: map[string]string{"rules": "{{ .nope"}},
		{Data: map[string]string{"rules": "not: a list"}},
		{Data: map[string]string{"rules": "[]"}},
	} {
		cm.Name = "bad-template"
		if _, err := tpl.Rules(cm, testContext()); err == nil || !strings.Contains(err.Error(), "bad-template") {
			t.Errorf("%v: err %v", cm.Data, err)
		}
	}
	if _, err := tpl.Check(&corev1.ConfigMap{Data: map[string]string{"check": "selector: {}"}}); err == nil {
		t.Error("a check without objectRef was accepted")
	}
}
