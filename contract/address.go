package contract

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// MaxAddressBytes bounds a Connector's address and each address extension: a tool's base URL
// is far shorter, and templates copy it into files (some several times, some HTML-escaped), so
// an unbounded one would cost the node that much memory at every publish.
const MaxAddressBytes = 2048

// quoteOrComment are the characters that quote, escape or start a comment in the files that
// classes render addresses into (.gitconfig, .npmrc, INI, YAML, TOML, shell): an address that
// holds one could end a value and add settings after it, e.g. `https://;x@evil.example` reads
// as `https://` to git. URLs need none of them in a tool's base address.
const quoteOrComment = "\"'\\;#`<>{}|^"

// Address checks an address a Connector gives (spec.address, an address extension's value)
// for what the files rendered from it need, beyond the schema's "a URL": at most
// MaxAddressBytes; printable ASCII with no quote or comment character, as written and as
// templates see it decoded (urlParse's path); no user information (credentials belong in
// spec.auth), hence no fragment (#); a host that is a DNS name or an IP address. The checks are on the whole string, as classes copy it as
// written. Errors name the place, never the value: one with user information holds a password.
func Address(path *field.Path, addr string) *field.Error {
	if len(addr) > MaxAddressBytes {
		return field.TooLong(path, "", MaxAddressBytes)
	}
	if msg := addressCharacters(addr); msg != "" {
		return field.Invalid(path, field.OmitValueType{}, msg)
	}
	decoded, err := url.PathUnescape(addr)
	if err != nil {
		return field.Invalid(path, field.OmitValueType{}, "holds a malformed percent-escape")
	}
	if msg := addressCharacters(decoded); msg != "" {
		return field.Invalid(path, field.OmitValueType{}, "decoded, "+msg)
	}
	u, err := url.Parse(addr)
	switch {
	case err != nil:
		return field.Invalid(path, field.OmitValueType{}, "must be a URL")
	case u.User != nil:
		return field.Invalid(path, field.OmitValueType{}, "must not carry user information (credentials belong in spec.auth)")
	case !hostName(u.Hostname()):
		return field.Invalid(path, field.OmitValueType{}, "the host must be a DNS name (letters, digits, '-', '_', '.') or an IP address without a zone")
	}
	return nil
}

// hostName tells whether host is empty, an IP address without a zone (the proxy refuses to
// dial one: proxy/egress) or a name of letters, digits, '-', '_' and '.': YAML and TOML read a
// key such as *x or &x as something else than a host.
func hostName(host string) bool {
	if addr, err := netip.ParseAddr(host); err == nil {
		return addr.Zone() == ""
	}
	return strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == ""
}

// addressCharacters says what is wrong with s's characters, or "".
func addressCharacters(s string) string {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f:
			return fmt.Sprintf("holds byte %#02x at %d: an address is printable ASCII without spaces, as written and percent-decoded (a host in punycode)", c, i)
		case strings.IndexByte(quoteOrComment, c) >= 0:
			return fmt.Sprintf("holds %q at %d: an address holds none of %s, which quote or start comments in the files rendered from it",
				c, i, strings.Join(strings.Split(quoteOrComment, ""), " "))
		}
	}
	return ""
}

// Addresses checks a Connector's address and its address extensions' values.
func Addresses(c *v1alpha1.Connector) field.ErrorList {
	return bounded(addresses(c))
}

// addresses is Addresses with every error.
func addresses(c *v1alpha1.Connector) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if err := Address(spec.Child("address"), c.Spec.Address); err != nil {
		errs = append(errs, err)
	}
	for i, e := range c.Spec.AddressExtensions {
		if err := Address(spec.Child("addressExtensions").Index(i).Child("value"), e.Value); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
