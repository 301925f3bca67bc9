package approval

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// The allow-list of rendered grant rules. The controller holds escalate and bind on Roles (its
// grants carry Pod-scoped subresources RBAC cannot express as held permissions), so a role
// template could otherwise grant anything; grants may give only the use of Connectors.
var (
	// readVerbs are the verbs a grant may give on Connectors themselves: a write could point a
	// Connector's address elsewhere and send its credential there.
	readVerbs = []string{"get", "list", "watch"}
	// openSubresources may be granted with any verb, alone or with a path under them
	// (connectors/proxy/v1/pod/<ns>/<pod>, connectors/apis/<class>/…).
	openSubresources = []string{v1alpha1.ResourceConnectors + "/proxy", v1alpha1.ResourceConnectors + "/apis"}
)

// checkRule says why a rendered rule is not allowed in a grant, or nil.
func checkRule(r *rbacv1.PolicyRule) error {
	switch {
	case len(r.NonResourceURLs) > 0:
		return fmt.Errorf("nonResourceURLs are not allowed")
	case len(r.APIGroups) == 0 || len(r.Resources) == 0 || len(r.Verbs) == 0:
		return fmt.Errorf("a rule needs apiGroups, resources and verbs")
	}
	for _, g := range r.APIGroups {
		if g != v1alpha1.GroupVersion.Group {
			return fmt.Errorf("apiGroup %q is not allowed: only %s", g, v1alpha1.GroupVersion.Group)
		}
	}
	for _, res := range r.Resources {
		switch {
		case res == v1alpha1.ResourceConnectors:
			for _, v := range r.Verbs {
				if !slices.Contains(readVerbs, v) {
					return fmt.Errorf("verb %q on connectors is not allowed: only %s (a write could redirect the Connector's credential)",
						v, strings.Join(readVerbs, ", "))
				}
			}
		case !openSubresource(res):
			return fmt.Errorf("resource %q is not allowed: only connectors (read), %s and paths under them", res, strings.Join(openSubresources, ", "))
		}
	}
	return nil
}

func openSubresource(res string) bool {
	for _, s := range openSubresources {
		if rest, ok := strings.CutPrefix(res, s); ok && (rest == "" || len(rest) > 1 && rest[0] == '/') {
			return true
		}
	}
	return false
}

// ruleString names a rule in messages.
func ruleString(r *rbacv1.PolicyRule) string {
	s := fmt.Sprintf("apiGroups %v, resources %v, verbs %v", r.APIGroups, r.Resources, r.Verbs)
	if len(r.NonResourceURLs) > 0 {
		s += fmt.Sprintf(", nonResourceURLs %v", r.NonResourceURLs)
	}
	return s
}

// controlCharacter returns the first control character (newline, tab, …) in s, if any: a
// rendered rule string never needs one, and one in an RBAC name is at best confusing.
func controlCharacter(s string) (rune, bool) {
	i := strings.IndexFunc(s, unicode.IsControl)
	if i < 0 {
		return 0, false
	}
	return []rune(s[i:])[0], true
}
