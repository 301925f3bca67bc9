package trust

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func testCert(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func commonNames(t *testing.T, bundle []byte) []string {
	t.Helper()
	var names []string
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return names
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, c.Subject.CommonName)
	}
}

func TestCertificatesPEMTakesOnlyCertificatesFromTheDocumentedKeys(t *testing.T) {
	a, b, c := testCert(t, "a"), testCert(t, "b"), testCert(t, "c")
	got, err := CertificatesPEM(map[string][]byte{
		"ca.crt":      a,
		"other.pem":   b,
		"bundle":      append([]byte("comment\n"), c...), // no suffix, but a PEM header
		"token":       []byte("s3cret-token"),            // neither: never read
		"notes.crt":   []byte("not a certificate"),
		"tls.key.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("k")}),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Key order: bundle, ca.crt, notes.crt (nothing), other.pem, tls.key.pem (a key: dropped).
	if names := strings.Join(commonNames(t, got), ","); names != "c,a,b" {
		t.Fatalf("certificates %s, want c,a,b", names)
	}
	if bytes.Contains(got, []byte("s3cret")) || bytes.Contains(got, []byte("PRIVATE KEY")) {
		t.Fatal("something other than a certificate left the Secret")
	}
}

func TestCertificatesPEMWithoutACertificateIsAnError(t *testing.T) {
	for name, data := range map[string]map[string][]byte{
		"empty":        nil,
		"garbage crt":  {"ca.crt": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
		"only a token": {"token": []byte("abc")},
		"only a key":   {"key.pem": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("k")})},
	} {
		if _, err := CertificatesPEM(data); !errors.Is(err, ErrNoCertificate) {
			t.Errorf("%s: err %v, want ErrNoCertificate", name, err)
		}
	}
}

func TestBundleLayersGlobalAndConnectorCertificates(t *testing.T) {
	global, own := testCert(t, "global"), testCert(t, "own")
	secrets := map[string]*corev1.Secret{
		"tenant/ca":      {Data: map[string][]byte{"tool.pem": own}},
		"tenant/invalid": {Data: map[string][]byte{"ca.crt": []byte("nope")}},
	}
	get := func(_ context.Context, ns, name string) (*corev1.Secret, error) {
		if s, ok := secrets[ns+"/"+name]; ok {
			return s, nil
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
	}
	connector := func(ref string) *v1alpha1.Connector {
		c := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "tool"}}
		if ref != "" {
			c.Spec.CACertSecretRef = &v1alpha1.LocalSecretRef{Name: ref}
		}
		return c
	}
	g := StaticGlobal(global)
	for _, tc := range []struct {
		ref        string
		withGlobal bool
		want       string
		reason     string
	}{
		{"", false, "", ""},
		{"", true, "global", ""},
		{"ca", false, "own", ""},
		{"ca", true, "global,own", ""},
		{"missing", true, "", ReasonSecretNotFound},
		{"invalid", true, "", ReasonInvalidPEM},
	} {
		got, err := Bundle(context.Background(), g, tc.withGlobal, connector(tc.ref), get)
		var caErr *ConnectorCAError
		switch {
		case tc.reason != "" && (!errors.As(err, &caErr) || caErr.Reason != tc.reason):
			t.Errorf("ref %q: err %v, want reason %s", tc.ref, err, tc.reason)
		case tc.reason == "" && err != nil:
			t.Errorf("ref %q: %v", tc.ref, err)
		case strings.Join(commonNames(t, got), ",") != tc.want:
			t.Errorf("ref %q global %v: %v, want %s", tc.ref, tc.withGlobal, commonNames(t, got), tc.want)
		}
	}
	if len(g.PEM()) != len(global) {
		t.Fatal("Bundle changed the shared global bundle")
	}
}

func TestTransportsSharedPerBundle(t *testing.T) {
	made := 0
	tr := NewTransports(2, "test_transports", func(roots *x509.CertPool) *http.Transport {
		made++
		return &http.Transport{}
	})
	a, b := testCert(t, "a"), testCert(t, "b")
	if tr.For(nil) != tr.For([]byte{}) || made != 1 {
		t.Fatalf("an empty bundle must share the system transport (%d made)", made)
	}
	first, again := tr.For(a), tr.For(a)
	if first != again || first == tr.For(b) || first == tr.For(nil) || made != 3 {
		t.Fatalf("one transport per bundle expected, %d made", made)
	}
}

func TestCertificatesParsedOncePerSecretVersion(t *testing.T) {
	a, b := testCert(t, "a"), testCert(t, "b")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{UID: "u-1", ResourceVersion: "7"}, Data: map[string][]byte{"ca.crt": a}}
	first, err := parsedCertificates(sec)
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["ca.crt"] = b // the same version cannot change: the kept answer is returned
	if again, _ := parsedCertificates(sec); !bytes.Equal(again, first) {
		t.Fatal("the same Secret version was parsed again")
	}
	sec.ResourceVersion = "8"
	if next, _ := parsedCertificates(sec); strings.Join(commonNames(t, next), ",") != "b" {
		t.Fatal("a new Secret version was not parsed")
	}
}

// TestParsedBundlesAreBoundedInBytes: new versions of a large CA Secret (a changed annotation
// is enough) do not pile up parsed copies past parsedBytes.Max.
func TestParsedBundlesAreBoundedInBytes(t *testing.T) {
	one := testCert(t, "ca")
	bundle := bytes.Repeat(one, (2<<20)/len(one)) // about 2 MiB of certificates
	for v := range 20 {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{UID: "uid", ResourceVersion: strconv.Itoa(v)},
			Data: map[string][]byte{"ca.crt": bundle}}
		if _, err := parsedCertificates(sec); err != nil {
			t.Fatal(err)
		}
	}
	if held := parsedBytes.Held(); held > parsedBytes.Max {
		t.Errorf("%d bytes of parsed bundles held, more than %d", held, parsedBytes.Max)
	}
}
