// Package contract checks values against what a ConnectorClass declares: a Connector's params,
// address extensions and auth against its class (admission), and a volume's
// configuration.params against a configuration (publish). One implementation, so that a value
// refused at admission is refused at publish for the same reason, in the same words.
package contract

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// Value is one given parameter value and where it was given.
type Value struct {
	Name string
	Raw  json.RawMessage
	// NamePath is where the name was given (an undeclared name is reported there), ValuePath
	// where the value was (a mistyped or out-of-enum value).
	NamePath, ValuePath *field.Path
}

// Params checks given values against declared params and returns every value, the declared
// defaults filling gaps. Undeclared, missing required (declared without a default), mistyped
// and out-of-enum values are errors (the first few, and how many more: bounded); owner names the declaration in messages (`ConnectorClass
// "git"`), parent is where a missing param should have been given.
func Params(owner string, declared []v1alpha1.ParamSpec, given []Value, parent *field.Path) (map[string]any, field.ErrorList) {
	out, errs := params(owner, declared, given, parent)
	return out, bounded(errs)
}

// params is Params with every error.
func params(owner string, declared []v1alpha1.ParamSpec, given []Value, parent *field.Path) (map[string]any, field.ErrorList) {
	specs := make(map[string]*v1alpha1.ParamSpec, len(declared))
	names := make([]string, 0, len(declared))
	for i := range declared {
		specs[declared[i].Name] = &declared[i]
		names = append(names, declared[i].Name)
	}
	slices.Sort(names)
	var errs field.ErrorList
	out := make(map[string]any, len(declared))
	declaredNames := strings.Join(names, ", ")
	for _, v := range given {
		spec := specs[v.Name]
		if spec == nil {
			errs = append(errs, field.Invalid(v.NamePath, Short(v.Name),
				fmt.Sprintf("%s declares no param %q (declared: %s)", owner, Short(v.Name), declaredNames)))
			continue
		}
		value, err := decode(spec, v.Raw, v.ValuePath)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[v.Name] = value
	}
	for _, name := range names {
		if _, ok := out[name]; ok || wasGiven(given, name) {
			continue
		}
		spec := specs[name]
		if spec.Default == nil {
			errs = append(errs, field.Required(parent, fmt.Sprintf("%s requires param %q", owner, name)))
			continue
		}
		value, err := decode(spec, spec.Default.Raw, parent)
		if err != nil {
			errs = append(errs, field.Invalid(parent, name, fmt.Sprintf("the default of param %q of %s: %s", name, owner, err.Detail)))
			continue
		}
		out[name] = value
	}
	return out, errs
}

// wasGiven tells whether a value was given for name (and refused: no default stands in for it).
func wasGiven(values []Value, name string) bool {
	return slices.ContainsFunc(values, func(v Value) bool { return v.Name == name })
}

// decode parses one value and checks its type ("string" when the spec names none) and enum.
func decode(spec *v1alpha1.ParamSpec, raw json.RawMessage, path *field.Path) (any, *field.Error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, field.Invalid(path, string(raw), fmt.Sprintf("param %q is not valid JSON: %v", spec.Name, err))
	}
	want := spec.Type
	if want == "" {
		want = v1alpha1.ParamTypeString
	}
	var ok bool
	switch want {
	case v1alpha1.ParamTypeString:
		var s string
		if s, ok = v.(string); ok {
			return v, Enum(path, fmt.Sprintf("param %q", spec.Name), s, spec.Enum)
		}
	case v1alpha1.ParamTypeArray:
		_, ok = v.([]any)
	case v1alpha1.ParamTypeObject:
		_, ok = v.(map[string]any)
	}
	if !ok {
		return nil, field.Invalid(path, string(raw), fmt.Sprintf("param %q must be of type %s", spec.Name, want))
	}
	return v, nil
}

// Enum checks a string against the allowed values of what (none: any value).
func Enum(path *field.Path, what, s string, allowed []string) *field.Error {
	if len(allowed) == 0 || slices.Contains(allowed, s) {
		return nil
	}
	return field.Invalid(path, s, fmt.Sprintf("%s is not one of %s", what, strings.Join(allowed, ", ")))
}
