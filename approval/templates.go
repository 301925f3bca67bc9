package approval

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/templates"
)

// Template ConfigMap keys (SPEC §2.3, §6.2).
const (
	keyRules = "rules"
	keyCheck = "check"
)

// Templates renders role and check templates; it is safe for concurrent use.
type Templates struct{ cache *templates.Cache }

// NewTemplates returns a template renderer with the restricted function set and limits (role
// and check templates run on the leader, some written by tenants). A template that reads a key
// its context lacks fails instead of rendering "<no value>".
func NewTemplates() *Templates {
	return &Templates{cache: templates.NewCache(templates.MissingKeyError(), templates.Restricted())}
}

// Rules decodes a role template ConfigMap's data.rules into RBAC PolicyRules, renders each of
// their strings as a template of its own over the request context, and checks every rule
// against the allow-list (checkRule). Decoding comes first, so that a rendered value (a Pod's
// annotation, a Connector's label) is only ever one string: it cannot add YAML, a rule or a
// list item. Errors name the ConfigMap and the rule.
func (t *Templates) Rules(cm *corev1.ConfigMap, context map[string]any) ([]rbacv1.PolicyRule, error) {
	rules, err := t.rules(cm, context)
	if err != nil {
		return nil, &invalidRoleTemplate{err}
	}
	return rules, nil
}

func (t *Templates) rules(cm *corev1.ConfigMap, context map[string]any) ([]rbacv1.PolicyRule, error) {
	text, ok := cm.Data[keyRules]
	if !ok {
		return nil, fmt.Errorf("role template ConfigMap %s has no data.%s", cm.Name, keyRules)
	}
	var rules []rbacv1.PolicyRule
	if err := yaml.UnmarshalStrict([]byte(text), &rules); err != nil {
		return nil, fmt.Errorf("role template ConfigMap %s: data.%s is not a YAML list of PolicyRules: %w", cm.Name, keyRules, err)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("role template ConfigMap %s grants no rule", cm.Name)
	}
	for i := range rules {
		r := &rules[i]
		if err := t.renderRule(r, context); err != nil {
			return nil, fmt.Errorf("role template ConfigMap %s: rules[%d]: %w", cm.Name, i, err)
		}
		if err := checkRule(r); err != nil {
			return nil, fmt.Errorf("role template ConfigMap %s: rules[%d] (%s): %w", cm.Name, i, ruleString(r), err)
		}
	}
	return rules, nil
}

// renderRule renders every string of a rule in place.
func (t *Templates) renderRule(r *rbacv1.PolicyRule, context map[string]any) error {
	for _, f := range []struct {
		field string
		list  []string
	}{{"apiGroups", r.APIGroups}, {"resources", r.Resources}, {"resourceNames", r.ResourceNames},
		{"verbs", r.Verbs}, {"nonResourceURLs", r.NonResourceURLs}} {
		field, list := f.field, f.list
		for j, text := range list {
			name := fmt.Sprintf("%s[%d]", field, j)
			out, err := t.cache.Execute(name, text, context)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if c, found := controlCharacter(string(out)); found {
				return fmt.Errorf("%s renders a control character (%U), which no rule may hold", name, c)
			}
			list[j] = string(out) // the slice shares the rule's array
		}
	}
	return nil
}

// invalidRoleTemplate is an error of a role template itself (its text, what it renders, a
// rule outside the allow-list): it stays until the template is changed.
type invalidRoleTemplate struct{ err error }

func (e *invalidRoleTemplate) Error() string { return e.err.Error() }
func (e *invalidRoleTemplate) Unwrap() error { return e.err }

// isInvalidRoleTemplate tells a role template's own error from others.
func isInvalidRoleTemplate(err error) bool {
	var e *invalidRoleTemplate
	return errors.As(err, &e)
}

// Check decodes a check template ConfigMap's data.check.
func (t *Templates) Check(cm *corev1.ConfigMap) (*v1alpha1.CheckSpec, error) {
	text, ok := cm.Data[keyCheck]
	if !ok {
		return nil, fmt.Errorf("check template ConfigMap %s has no data.%s", cm.Name, keyCheck)
	}
	var spec v1alpha1.CheckSpec
	if err := yaml.UnmarshalStrict([]byte(text), &spec); err != nil {
		return nil, fmt.Errorf("check template ConfigMap %s: data.%s: %w", cm.Name, keyCheck, err)
	}
	if spec.Selector.ObjectRef.APIVersion == "" || spec.Selector.ObjectRef.Kind == "" {
		return nil, fmt.Errorf("check template ConfigMap %s: selector.objectRef needs apiVersion and kind", cm.Name)
	}
	return &spec, nil
}

// MatchLabels renders a check's label values over the request context; untrusted values (an
// AccessPolicy's inline check, written by a tenant) may not loop (see
// templates.Cache.ExecuteUntrusted). A value that reads an owner the Pod's verified owner chain
// lacks fails with a *notInOwnerChain; one that does not render a valid label value fails too,
// so that no check matches on garbage.
func (t *Templates) MatchLabels(ctx context.Context, spec *v1alpha1.CheckSpec, data map[string]any, untrusted bool) (map[string]string, error) {
	out := make(map[string]string, len(spec.Selector.MatchLabels))
	for k, v := range spec.Selector.MatchLabels {
		b, err := t.renderSelector(ctx, "matchLabels["+k+"]", v, data, untrusted)
		if err != nil {
			return nil, err
		}
		if problems := validation.IsValidLabelValue(b); len(problems) > 0 {
			return nil, fmt.Errorf("matchLabels[%s] renders a value of %d characters that is not a label value: %s", k, len(b), strings.Join(problems, "; "))
		}
		out[k] = b
	}
	return out, nil
}

// objectFilter is what a check's selector says of its objects besides their labels: their name
// and namespace ("" when unset), and the time they are created since (zero when unset).
type objectFilter struct {
	name, namespace string
	since           time.Time
}

// ObjectFilter renders a check's objectRef.name, objectRef.namespace and createdSince: templates
// over the request context, as matchLabels values.
func (t *Templates) ObjectFilter(ctx context.Context, spec *v1alpha1.CheckSpec, data map[string]any, untrusted bool) (objectFilter, error) {
	var f objectFilter
	var since string
	for _, field := range []struct {
		name, template string
		out            *string
	}{
		{"objectRef.name", spec.Selector.ObjectRef.Name, &f.name},
		{"objectRef.namespace", spec.Selector.ObjectRef.Namespace, &f.namespace},
		{"createdSince", spec.Selector.CreatedSince, &since},
	} {
		if field.template == "" {
			continue
		}
		var err error
		if *field.out, err = t.renderSelector(ctx, field.name, field.template, data, untrusted); err != nil {
			return objectFilter{}, err
		}
	}
	if since != "" {
		var err error
		if f.since, err = time.Parse(time.RFC3339, since); err != nil {
			return objectFilter{}, fmt.Errorf("createdSince renders %q, which is not a time (RFC 3339)", since)
		}
	}
	return f, nil
}

// renderSelector renders one selector value; a value that reads .pipelineRun or .taskRun of a
// Pod outside such an owner chain is a notInOwnerChain. None is rendered once ctx is done (the
// evaluation's budget): a check renders up to 34 values, each of a few dozen calls, and a
// template cannot be stopped while it runs.
func (t *Templates) renderSelector(ctx context.Context, field, v string, data map[string]any, untrusted bool) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s not rendered: %w", field, err)
	}
	tmpl, err := t.parseLabel(field, v, untrusted)
	if err != nil {
		return "", err
	}
	for _, key := range []string{keyPipelineRun, keyTaskRun} {
		if _, ok := data[key]; !ok && templates.UsesField(tmpl, key) {
			return "", &notInOwnerChain{key: key}
		}
	}
	b, err := t.cache.Execute(field, v, data) // vetted by parseLabel
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return string(b), nil
}

// CheckMatchLabels parses a check's label values as MatchLabels would, for a policy's status.
func (t *Templates) CheckMatchLabels(spec *v1alpha1.CheckSpec, untrusted bool) error {
	for k, v := range spec.Selector.MatchLabels {
		if _, err := t.parseLabel("matchLabels["+k+"]", v, untrusted); err != nil {
			return err
		}
	}
	for field, v := range map[string]string{"objectRef.name": spec.Selector.ObjectRef.Name, "objectRef.namespace": spec.Selector.ObjectRef.Namespace,
		"createdSince": spec.Selector.CreatedSince} {
		if _, err := t.parseLabel(field, v, untrusted); v != "" && err != nil {
			return err
		}
	}
	if _, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchExpressions: spec.Selector.MatchExpressions}); err != nil {
		return fmt.Errorf("matchExpressions: %w", err)
	}
	return nil
}

func (t *Templates) parseLabel(field, v string, untrusted bool) (*template.Template, error) {
	parse := t.cache.Parse
	if untrusted {
		parse = t.cache.ParseUntrusted
	}
	tmpl, err := parse(field, v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return tmpl, nil
}

// readTemplate reads a template ConfigMap from the cache, or, when the cache does not have it
// (yet: an administrator applied it a moment ago), from the API server.
func readTemplate(ctx context.Context, cached, live client.Reader, nn types.NamespacedName, cm *corev1.ConfigMap) error {
	err := cached.Get(ctx, nn, cm)
	if apierrors.IsNotFound(err) && live != nil {
		err = live.Get(ctx, nn, cm)
	}
	return err
}
