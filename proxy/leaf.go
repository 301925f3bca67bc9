package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// leafValidity is how long a minted leaf certificate is valid; leaves are re-minted before.
const leafValidity = 24 * time.Hour

// Authority is the proxy CA.
type Authority interface {
	Authority(ctx context.Context) (*tls.Certificate, error)
}

// leaves mints and caches a TLS certificate per host, signed by the proxy CA, for the TLS the
// proxy terminates on CONNECT. One key serves every leaf: minting then costs one signature.
// Hosts are lower-cased, so spellings of one host share a leaf, and the cache is bounded.
type leaves struct {
	ca    Authority
	key   *ecdsa.PrivateKey
	certs *expirable.LRU[string, *tls.Certificate] // re-minted after 3/4 of their validity
	group singleflight.Group
}

func newLeaves(ca Authority, size int) (*leaves, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	l := &leaves{ca: ca, key: key, certs: expirable.NewLRU[string, *tls.Certificate](size, nil, leafValidity*3/4)}
	cachemetrics.Register("leaf_certificates", l.certs.Len)
	return l, nil
}

// get returns the leaf for host, minting it when missing or close to expiry.
func (l *leaves) get(ctx context.Context, host string) (*tls.Certificate, error) {
	host = strings.ToLower(host)
	if c, ok := l.certs.Get(host); ok {
		return c, nil
	}
	v, err, _ := l.group.Do(host, func() (any, error) {
		c, err := l.mint(ctx, host)
		if err != nil {
			return nil, err
		}
		l.certs.Add(host, c)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

func (l *leaves) mint(ctx context.Context, host string) (*tls.Certificate, error) {
	ca, err := l.ca.Authority(ctx)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, &l.key.PublicKey, ca.PrivateKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.Certificate[0]}, PrivateKey: l.key, Leaf: leaf}, nil
}
