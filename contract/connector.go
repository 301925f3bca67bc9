package contract

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// Connector checks a Connector against its class's contract, as Alauda's admission does: the
// address against the class's enum; address extensions required (no default), declared,
// within their enum, http(s) and not the address itself; params declared, given when required,
// of the declared type and enum; the auth type one of the class's, its Secret given unless the
// type is optional and in the Connector's namespace, and the auth probe's params as params
// are. Every error names the field. The schema's own checks (a URL, unique names) are the
// CRD's; the Secret's contents are the status controller's (SecretReady), since admission
// reads no Secret.
func Connector(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) field.ErrorList {
	spec := field.NewPath("spec")
	owner := fmt.Sprintf("ConnectorClass %q", class.Name)
	errs := addresses(c)
	if a := class.Spec.Address; a != nil {
		if err := Enum(spec.Child("address"), "the address", c.Spec.Address, a.Enum); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, addressExtensions(c, class, owner, spec.Child("addressExtensions"))...)
	_, paramErrs := params(owner, class.Spec.Params, values(c.Spec.Params, spec.Child("params")), spec.Child("params"))
	errs = append(errs, paramErrs...)
	return bounded(append(errs, auth(c, class, owner, spec.Child("auth"))...))
}

// values are a list of params as Values, each with its index's path.
func values(params []v1alpha1.Param, path *field.Path) []Value {
	out := make([]Value, 0, len(params))
	for i, p := range params {
		out = append(out, Value{Name: p.Name, Raw: p.Value.Raw, NamePath: path.Index(i).Child("name"), ValuePath: path.Index(i).Child("value")})
	}
	return out
}

func addressExtensions(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, owner string, path *field.Path) field.ErrorList {
	declared := map[string]*v1alpha1.AddressExtensionSpec{}
	var names []string
	for i := range class.Spec.AddressExtensions {
		e := &class.Spec.AddressExtensions[i]
		declared[e.Name], names = e, append(names, e.Name)
	}
	var errs field.ErrorList
	for i, e := range c.Spec.AddressExtensions {
		at := path.Index(i)
		spec := declared[e.Name]
		if spec == nil {
			errs = append(errs, field.Invalid(at.Child("name"), e.Name,
				fmt.Sprintf("%s declares no address extension %q (declared: %s)", owner, e.Name, strings.Join(names, ", "))))
			continue
		}
		if u, err := url.Parse(e.Value); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, field.Invalid(at.Child("value"), e.Value, "must be an http or https URL"))
		} else if strings.TrimSuffix(e.Value, "/") == strings.TrimSuffix(c.Spec.Address, "/") {
			errs = append(errs, field.Invalid(at.Child("value"), e.Value, "must not be spec.address"))
		}
		if err := Enum(at.Child("value"), fmt.Sprintf("address extension %q", e.Name), e.Value, spec.Enum); err != nil {
			errs = append(errs, err)
		}
	}
	for _, spec := range class.Spec.AddressExtensions {
		given := slices.ContainsFunc(c.Spec.AddressExtensions, func(e v1alpha1.NamedAddress) bool { return e.Name == spec.Name })
		if !given && spec.Default == nil {
			errs = append(errs, field.Required(path, fmt.Sprintf("%s requires address extension %q (it has no default)", owner, spec.Name)))
		}
	}
	return errs
}

// auth checks spec.auth. A Connector without spec.auth uses the class's first auth type, as
// the proxy and the status controller do (ConnectorClass.AuthType).
func auth(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, owner string, path *field.Path) field.ErrorList {
	a := c.Spec.Auth
	if a == nil {
		a = &v1alpha1.ConnectorAuth{}
	}
	var types []string
	if class.Spec.Auth != nil {
		for _, t := range class.Spec.Auth.Types {
			types = append(types, t.Name)
		}
	}
	if len(types) == 0 {
		if a.Name != "" || a.SecretRef != nil {
			return field.ErrorList{field.Forbidden(path, owner+" declares no auth types, so a Connector of it takes no credential")}
		}
		return nil
	}
	t := class.AuthType(a.Name)
	if t == nil {
		return field.ErrorList{field.NotSupported(path.Child("name"), a.Name, types)}
	}
	var errs field.ErrorList
	if a.SecretRef == nil && !t.Optional {
		errs = append(errs, field.Required(path.Child("secretRef"), fmt.Sprintf("auth type %q of %s is not optional", t.Name, owner)))
	}
	if _, err := c.AuthSecretName(); err != nil {
		errs = append(errs, field.Forbidden(path.Child("secretRef", "namespace"), "a Connector may only use Secrets of its own namespace"))
	}
	var declared []v1alpha1.ParamSpec
	if p := class.AuthProbe(t.Name); p != nil {
		declared = p.Params
	}
	_, paramErrs := params(fmt.Sprintf("the auth probe of auth type %q of %s", t.Name, owner), declared, values(a.Params, path.Child("params")), path.Child("params"))
	return append(errs, paramErrs...)
}
