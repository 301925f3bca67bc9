package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/registry"
)

// volumeTransport is an HTTP transport configured only from a volume's files: the forward
// proxy of http.proxy and the proxy CA of ca.crt.
func volumeTransport(t *testing.T, vol string) *http.Transport {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(vol, "https.proxy"))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := url.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(vol, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: roots}}
}

// startRegistry runs a registry with token auth on the tools' loopback address.
func startRegistry(t testing.TB) *registry.Server {
	t.Helper()
	reg, err := registry.Start(t.TempDir(), gitserver.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return reg
}

// ociConnector creates an oci Connector for reg (its token service as the address extension
// "token") whose registry-token Secret, of the same name, holds reg's user and password.
func ociConnector(t testing.TB, ns, name, class string, reg *registry.Server, password string) {
	t.Helper()
	createSecret(t, ns, name, v1alpha1.SecretTypeDistributionRegistryAuth, map[string]string{"username": reg.Username, "password": password})
	create(t, &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: reg.URL,
			AddressExtensions: []v1alpha1.NamedAddress{{Name: "token", Value: reg.TokenURL}},
			Auth:              &v1alpha1.ConnectorAuth{Name: "registryToken", SecretRef: &v1alpha1.SecretRef{Name: name}}},
	})
}

func TestImagePushPullThroughProxy(t *testing.T) {
	reg := startRegistry(t)
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	ociConnector(t, ns, "registry", deployedClass(t, "oci.yaml"), reg, reg.Password)
	allowConnectors(t, ns, "builder", "registry")
	pod := podWithVolume(t, env.kubelet, ns, "push", map[string]string{"connectors": "registry", "configuration.names": "registry-config,buildkitd"}, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	vol := env.kubelet.TargetPath(pod, "connectors")
	files := visibleFiles(t, vol)
	token := files["context.token"]

	var docker struct {
		Proxies map[string]map[string]string `json:"proxies"`
	}
	if err := json.Unmarshal([]byte(files["config.json"]), &docker); err != nil {
		t.Fatalf("config.json is not JSON: %v\n%s", err, files["config.json"])
	}
	if docker.Proxies["default"]["httpsProxy"] != files["https.proxy"] {
		t.Errorf("config.json proxies %v, want https.proxy", docker.Proxies)
	}
	regHost := strings.TrimPrefix(reg.URL, "http://")
	if want := "[registry.\"" + regHost + "\"]\n  http = true\n  ca = [\"/connectors/ca.crt\"]"; !strings.Contains(files["buildkitd.toml"], want) {
		t.Errorf("buildkitd.toml =\n%s\nwant it to contain\n%s", files["buildkitd.toml"], want)
	}

	ref, err := name.ParseReference(regHost+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	transport := remote.WithTransport(volumeTransport(t, vol))
	if err := remote.Write(ref, img, transport); err != nil {
		t.Fatalf("push through the proxy: %v", err)
	}
	pulled, err := remote.Image(ref, transport)
	if err != nil {
		t.Fatalf("pull through the proxy: %v", err)
	}
	want, _ := img.Digest()
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Fatalf("pulled digest %v (%v), want %v", got, err, want)
	}
	if _, err := pulled.RawManifest(); err != nil {
		t.Fatal(err)
	}

	basicCred := "Basic " + basic(reg.Username, reg.Password)
	var bearer, tokenCalls int
	for _, s := range reg.Requests() {
		if s.Server == "registry" && strings.HasPrefix(s.Authorization, "Bearer ") {
			bearer++
		}
		if s.Server == "token" {
			tokenCalls++
		}
		if s.ProxyAuthorization != "" || strings.Contains(s.Authorization, token) {
			t.Errorf("%s %s %s received the Pod token or a proxy credential", s.Server, s.Method, s.Path)
		}
		if s.Server == "registry" && strings.HasPrefix(s.Authorization, "Basic") {
			t.Errorf("the registry itself received basic credentials on %s %s", s.Method, s.Path)
		}
		if s.Server == "token" && s.Authorization != basicCred {
			t.Errorf("the token service received %q, want the Connector's credential", s.Authorization)
		}
	}
	if bearer == 0 || tokenCalls == 0 {
		t.Errorf("token auth was not exercised: %d registry requests with a Bearer token, %d token requests", bearer, tokenCalls)
	}
	if strings.Contains(logs.String(), reg.Password) || strings.Contains(logs.String(), token) {
		t.Error("the driver log holds the registry password or the Pod token")
	}
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
}
