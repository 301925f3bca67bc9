// Package ca keeps the proxy's certificate authority: a Secret in the system namespace, created
// once by whichever driver gets there first. Pods receive its certificate as ca.crt; the proxy
// mints per-host leaf certificates from it.
package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// SecretName is the name of the proxy CA Secret in the system namespace.
const SecretName = "connectors-proxy-ca"

// validity of a new CA.
const validity = 10 * 365 * 24 * time.Hour

// Store loads (or creates) the CA Secret once and then serves it from memory.
type Store struct {
	Secrets corev1client.SecretInterface // in the system namespace

	mu      sync.Mutex
	certPEM string
	pair    *tls.Certificate
}

// CACert returns the CA certificate in PEM.
func (s *Store) CACert(ctx context.Context) (string, error) {
	if _, err := s.Authority(ctx); err != nil {
		return "", err
	}
	return s.certPEM, nil
}

// Authority returns the CA certificate and key, to sign leaf certificates with.
func (s *Store) Authority(ctx context.Context) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pair != nil {
		return s.pair, nil
	}
	sec, err := s.ensure(ctx)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s does not hold a usable CA: %w", SecretName, err)
	}
	if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
		return nil, err
	}
	s.certPEM, s.pair = string(sec.Data[corev1.TLSCertKey]), &pair
	return s.pair, nil
}

// ensure reads the Secret, creating it when missing. Two drivers racing both create; the loser
// gets AlreadyExists and reads the winner's.
func (s *Store) ensure(ctx context.Context) (*corev1.Secret, error) {
	sec, err := s.Secrets.Get(ctx, SecretName, metav1.GetOptions{})
	if err == nil {
		return sec, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read Secret %s: %w", SecretName, err)
	}
	certPEM, keyPEM, err := generate()
	if err != nil {
		return nil, err
	}
	sec = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	created, err := s.Secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return s.Secrets.Get(ctx, SecretName, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create Secret %s: %w", SecretName, err)
	}
	return created, nil
}

// generate makes a self-signed ECDSA P-256 CA.
func generate() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "connectors-proxy-ca", Organization: []string{"connectors-csi"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
