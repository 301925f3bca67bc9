package render

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// ParamValues are the values given for one configuration, by parameter name.
type ParamValues map[string]json.RawMessage

// resolveParams applies the declared defaults of a configuration's params to the given values
// and rejects undeclared, missing required, mistyped and out-of-enum values.
func resolveParams(class string, conf *v1alpha1.Configuration, given ParamValues) (map[string]any, error) {
	declared := map[string]*v1alpha1.ParamSpec{}
	for i := range conf.Params {
		declared[conf.Params[i].Name] = &conf.Params[i]
	}
	for _, name := range sortedKeys(given) {
		if declared[name] == nil {
			return nil, inputErrorf("configuration.params: configuration %q of ConnectorClass %q declares no param %q (declared: %s)",
				conf.Name, class, name, strings.Join(sortedKeys(declared), ", "))
		}
	}
	out := make(map[string]any, len(declared))
	for name, spec := range declared {
		raw, ok := given[name]
		if !ok && spec.Default == nil {
			return nil, inputErrorf("configuration.params: configuration %q of ConnectorClass %q requires param %q",
				conf.Name, class, name)
		}
		if !ok {
			raw = spec.Default.Raw
		}
		v, err := decodeParam(conf.Name, spec, raw)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func decodeParam(conf string, spec *v1alpha1.ParamSpec, raw json.RawMessage) (any, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, inputErrorf("configuration.params: param %q of configuration %q is not valid JSON: %v", spec.Name, conf, err)
	}
	want := spec.Type
	if want == "" {
		want = v1alpha1.ParamTypeString
	}
	var ok bool
	switch want {
	case v1alpha1.ParamTypeString:
		var s string
		s, ok = v.(string)
		if ok && len(spec.Enum) > 0 && !slices.Contains(spec.Enum, s) {
			return nil, inputErrorf("configuration.params: param %q of configuration %q is %q, not one of %s",
				spec.Name, conf, s, strings.Join(spec.Enum, ", "))
		}
	case v1alpha1.ParamTypeArray:
		_, ok = v.([]any)
	case v1alpha1.ParamTypeObject:
		_, ok = v.(map[string]any)
	}
	if !ok {
		return nil, inputErrorf("configuration.params: param %q of configuration %q must be of type %s", spec.Name, conf, want)
	}
	return v, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
