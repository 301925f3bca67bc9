// Package trust decides which certificate authorities a Connector's tool is trusted with
// (Alauda's custom CA certificates): the system roots, the global bundle (labelled Secrets of
// the system namespace, collected by the controller into one ConfigMap every process
// watches) when the feature flag enable-custom-ca-certs is on, and the Connector's own
// spec.caCertSecretRef. It also keeps one pooled transport per resulting bundle.
package trust

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"sort"
	"strings"
)

// ErrNoCertificate is returned for Secret data that holds no PEM certificate.
var ErrNoCertificate = errors.New("no PEM-encoded certificate in keys ending in .crt or .pem or in values with a PEM header")

// CertificatesPEM returns the certificates of a CA Secret's data as PEM, key by key in key
// order: keys ending in .crt or .pem, and any value that holds a PEM header. Other keys (a
// token someone put in the same Secret) are never read, and blocks that are not parsable
// certificates are dropped, so nothing but certificates leaves this function.
func CertificatesPEM(data map[string][]byte) ([]byte, error) {
	keys := make([]string, 0, len(data))
	for k, v := range data {
		if strings.HasSuffix(k, ".crt") || strings.HasSuffix(k, ".pem") || bytes.Contains(v, []byte("-----BEGIN ")) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out bytes.Buffer
	for _, k := range keys {
		rest := data[k]
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				continue
			}
			_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})
		}
	}
	if out.Len() == 0 {
		return nil, ErrNoCertificate
	}
	return out.Bytes(), nil
}
