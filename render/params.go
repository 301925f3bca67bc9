package render

import (
	"encoding/json"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/contract"
)

// ParamValues are the values given for one configuration, by parameter name.
type ParamValues map[string]json.RawMessage

// resolveParams applies the declared defaults of a configuration's params to the given values
// and rejects undeclared, missing required, mistyped and out-of-enum values, as admission
// checks a Connector's params (package contract).
func resolveParams(class string, conf *v1alpha1.Configuration, given ParamValues) (map[string]any, error) {
	path := field.NewPath("configuration.params").Key(conf.Name)
	values := make([]contract.Value, 0, len(given))
	for _, name := range sortedKeys(given) {
		values = append(values, contract.Value{Name: name, Raw: given[name], NamePath: path.Key(contract.Short(name)), ValuePath: path.Key(contract.Short(name))})
	}
	out, errs := contract.Params(fmt.Sprintf("configuration %q of ConnectorClass %q", conf.Name, class), conf.Params, values, path)
	if len(errs) > 0 {
		return nil, &InputError{msg: errs.ToAggregate().Error()}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
