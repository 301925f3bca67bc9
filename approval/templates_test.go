package approval

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
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

// testContext is the context of a Pod of PipelineRun run-1 whose label names another run.
func testContext() map[string]any {
	return map[string]any{
		"object": map[string]any{"metadata": map[string]any{
			"name": "build-1-pod", "namespace": "team", "labels": map[string]any{"tekton.dev/pipelineRun": "borrowed"}}},
		"connector":   map[string]any{"metadata": map[string]any{"name": "prod-registry", "namespace": "team"}},
		"taskRun":     map[string]any{"metadata": map[string]any{"name": "run-1-build"}},
		"pipelineRun": map[string]any{"metadata": map[string]any{"name": "run-1"}},
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
	labels, err := tpl.MatchLabels(context.Background(), spec, testContext(), false)
	if err != nil || labels["tekton.dev/pipelineRun"] != "run-1" {
		t.Fatalf("matchLabels %v %v", labels, err)
	}
}

func TestCheckOutsideAnOwnerChainSaysSo(t *testing.T) {
	tpl := NewTemplates()
	spec, err := tpl.Check(builtins(t)["connectors-approvals-in-pipeline"])
	if err != nil {
		t.Fatal(err)
	}
	for _, drop := range [][]string{{"pipelineRun"}, {"pipelineRun", "taskRun"}} {
		ctx := testContext()
		for _, k := range drop {
			delete(ctx, k)
		}
		_, err := tpl.MatchLabels(context.Background(), spec, ctx, false)
		var missing *notInOwnerChain
		if !errors.As(err, &missing) || missing.key != "pipelineRun" ||
			err.Error() != "the Pod is not run by a TaskRun of a PipelineRun (owner chain checked by UID)" {
			t.Errorf("without %v: %v", drop, err)
		}
	}
}

func TestMatchLabelsRefuseWhatIsNoLabelValue(t *testing.T) {
	tpl := NewTemplates()
	for _, v := range []string{`{{ .object.metadata.nope }}`, `{{ index .object.metadata.labels "nope" }}`, `a b`} {
		spec := &v1alpha1.CheckSpec{Selector: v1alpha1.CheckSelector{MatchLabels: map[string]string{"k": v}}}
		if labels, err := tpl.MatchLabels(context.Background(), spec, testContext(), true); err == nil {
			t.Errorf("%s rendered %v", v, labels)
		}
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

func TestRulesAllowList(t *testing.T) {
	tpl := NewTemplates()
	allowed := []string{
		`[{apiGroups: [connectors.alauda.io], resources: [connectors], verbs: [get, list, watch]}]`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors/proxy, connectors/apis], verbs: ["*"]}]`,
		`[{apiGroups: [connectors.alauda.io], resources: ["connectors/proxy/v1/pod/{{ .object.metadata.namespace }}/x", connectors/apis/git/gitrefs], verbs: [create]}]`,
	}
	for _, rules := range allowed {
		if _, err := tpl.Rules(&corev1.ConfigMap{Data: map[string]string{"rules": rules}}, testContext()); err != nil {
			t.Errorf("%s: %v", rules, err)
		}
	}
	refused := map[string]string{
		`[{apiGroups: [""], resources: [secrets], verbs: [get]}]`:                                       `apiGroup ""`,
		`[{apiGroups: [connectors.alauda.io, ""], resources: [connectors], verbs: [get]}]`:              `apiGroup ""`,
		`[{apiGroups: ["*"], resources: [connectors/proxy], verbs: [get]}]`:                             `apiGroup "*"`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors], verbs: ["*"]}]`:                  `verb "*" on connectors`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors], verbs: [update]}]`:               `verb "update"`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors/status], verbs: [update]}]`:        `resource "connectors/status"`,
		`[{apiGroups: [connectors.alauda.io], resources: ["*"], verbs: [get]}]`:                         `resource "*"`,
		`[{apiGroups: [connectors.alauda.io], resources: ["*/proxy"], verbs: [get]}]`:                   `resource "*/proxy"`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors/proxyx], verbs: [get]}]`:           `resource "connectors/proxyx"`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors/proxy/], verbs: [get]}]`:           `resource "connectors/proxy/"`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectorclasses], verbs: [get]}]`:            `resource "connectorclasses"`,
		`[{nonResourceURLs: ["/metrics"], verbs: [get]}]`:                                               `nonResourceURLs`,
		`[{apiGroups: [connectors.alauda.io], resources: [connectors/proxy], verbs: []}]`:               `needs apiGroups, resources and verbs`,
		`[{apiGroups: ["{{ .object.metadata.labels.g }}"], resources: [connectors/proxy], verbs: [x]}]`: `map has no entry for key "g"`,
	}
	for rules, want := range refused {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "grants-too-much"}, Data: map[string]string{"rules": rules}}
		_, err := tpl.Rules(cm, testContext())
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "grants-too-much") || !isInvalidRoleTemplate(err) {
			t.Errorf("%s: %v, want an error naming the ConfigMap and %s", rules, err, want)
		}
	}
}

func TestRuleValuesCannotInjectYAML(t *testing.T) {
	tpl := NewTemplates()
	cm := &corev1.ConfigMap{Data: map[string]string{"rules": `- apiGroups: [connectors.alauda.io]
  resources: [connectors/proxy]
  verbs: ["*"]
  resourceNames: ['{{ .object.metadata.annotations.c }}']
`}}
	withAnnotation := func(v string) map[string]any {
		ctx := testContext()
		ctx["object"].(map[string]any)["metadata"].(map[string]any)["annotations"] = map[string]any{"c": v}
		return ctx
	}
	rules, err := tpl.Rules(cm, withAnnotation(`a', 'b`))
	if err != nil || len(rules) != 1 || len(rules[0].ResourceNames) != 1 || rules[0].ResourceNames[0] != `a', 'b` {
		t.Errorf("a quote in a value: %+v %v", rules, err)
	}
	for _, v := range []string{"a']\n- apiGroups: [connectors.alauda.io]\n  resources: [connectors/proxy]\n  verbs: ['*", "a\tb", "a\x00"} {
		if rules, err := tpl.Rules(cm, withAnnotation(v)); err == nil || !strings.Contains(err.Error(), "control character") {
			t.Errorf("%q: %+v %v", v, rules, err)
		}
	}
}

// TestNoValueIsRenderedPastTheBudget: a template cannot be stopped while it runs, so the values
// of a check are not rendered once the evaluation's budget is spent.
func TestNoValueIsRenderedPastTheBudget(t *testing.T) {
	tpl := NewTemplates()
	spec := &v1alpha1.CheckSpec{Selector: v1alpha1.CheckSelector{
		ObjectRef:   v1alpha1.ObjectKindRef{Name: "{{ .object.metadata.name }}"},
		MatchLabels: map[string]string{"k": "{{ .object.metadata.name }}"}}}
	spent, cancel := context.WithCancel(context.Background())
	cancel()
	if labels, err := tpl.MatchLabels(spent, spec, testContext(), true); !errors.Is(err, context.Canceled) {
		t.Errorf("labels past the budget: %v %v", labels, err)
	}
	if f, err := tpl.ObjectFilter(spent, spec, testContext(), true); !errors.Is(err, context.Canceled) {
		t.Errorf("name past the budget: %q %v", f.name, err)
	}
	if labels, err := tpl.MatchLabels(context.Background(), spec, testContext(), true); err != nil || labels["k"] == "" {
		t.Errorf("labels within the budget: %v %v", labels, err)
	}
}
