package e2e

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/proxy/ca"
)

// TestProxyCACreatedOnceUnderRace has several drivers' CA stores race to create the CA Secret
// in a fresh namespace: all must end up with the one certificate that was stored.
func TestProxyCACreatedOnceUnderRace(t *testing.T) {
	ns := newNamespace(t)
	secrets := cp.Kube.CoreV1().Secrets(ns)
	const racers = 8
	certs := make([]string, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if certs[i], err = (&ca.Store{Secrets: secrets}).CACert(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	stored, err := secrets.Get(context.Background(), ca.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if stored.Type != corev1.SecretTypeTLS || len(stored.Data[corev1.TLSPrivateKeyKey]) == 0 {
		t.Fatalf("CA Secret has type %q and %d key bytes", stored.Type, len(stored.Data[corev1.TLSPrivateKeyKey]))
	}
	for i, c := range certs {
		if c != string(stored.Data[corev1.TLSCertKey]) {
			t.Errorf("racer %d got a certificate other than the stored one", i)
		}
	}
}
