package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
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

// TestRegistryPullsInTheFastLane: an image's GETs through the forward proxy to a registry of
// token auth are the fast lane's, a challenge among them answered there (the puller's
// Connector has no token yet: the registry's 401 is read and dropped, a token fetched with the
// Connector's credential, the GET sent again), its layers of more than 64 KiB streamed to the
// client byte for byte; the push (POST, PATCH, PUT) goes to net/http's server as before.
func TestRegistryPullsInTheFastLane(t *testing.T) {
	reg := startRegistry(t)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	ns := newNamespace(t)
	class := deployedClass(t, "oci.yaml")
	ociConnector(t, ns, "pusher", class, reg, reg.Password)
	ociConnector(t, ns, "puller", class, reg, reg.Password)
	allowConnectors(t, ns, "builder", "pusher", "puller")
	token := proxyToken(t, ns, "builder")
	through := func(connector string) remote.Option {
		forward, _ := url.Parse(env.proxyURL)
		forward.User = url.UserPassword(ns+"/"+connector, token)
		return remote.WithTransport(&http.Transport{Proxy: http.ProxyURL(forward)})
	}
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(96<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, through("pusher")); err != nil {
		t.Fatalf("push through the proxy: %v", err)
	}

	before, seen := scrape(t, metricsAddr), len(reg.Requests())
	pulled, err := remote.Image(ref, through("puller"))
	if err != nil {
		t.Fatalf("pull through the proxy: %v", err)
	}
	layers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		rc, err := l.Compressed() // read whole: go-containerregistry checks each blob's digest
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		if err != nil || rc.Close() != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if n < 64<<10 {
			t.Fatalf("layer %d is %d bytes, below what is streamed", i, n)
		}
	}
	want, _ := img.Digest()
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Fatalf("pulled digest %v (%v), want %v", got, err, want)
	}
	// Served by the fast lane: the manifest's GET and the config's and the three layers', parsed
	// or, with the token kept, read in place.
	var c [3]float64
	kubelet.WaitUntil(10*time.Second, func() bool {
		c = laneCounts(before, scrape(t, metricsAddr))
		return c[0]+c[1] >= 5
	})
	if c[0]+c[1] < 5 {
		t.Errorf("the fast lane served %v of the pull's GETs (%v in place), want at least the 5 of the manifest and blobs", c[0]+c[1], c[1])
	}
	var challenged, tokens int
	for _, s := range reg.Requests()[seen:] {
		switch {
		case s.Server == "registry" && s.Authorization == "" && strings.Contains(s.Path, "/manifests/"):
			challenged++
		case s.Server == "token":
			tokens++
		}
		if s.ProxyAuthorization != "" || strings.Contains(s.Authorization, token) || s.Server == "registry" && strings.HasPrefix(s.Authorization, "Basic") {
			t.Errorf("%s %s %s received %q (Proxy-Authorization %q)", s.Server, s.Method, s.Path, s.Authorization, s.ProxyAuthorization)
		}
	}
	if challenged == 0 || tokens == 0 {
		t.Errorf("the puller's first GET of the manifest was challenged %d times, %d tokens fetched; want both", challenged, tokens)
	}
}

// TestRegistryChallengeIsNotStreamedToTheClient: a registry's 401 challenge of more than 64
// KiB, read and dropped by the proxy before it fetches a token and sends the GET again, never
// reaches the client (large answers are streamed to the client only once they are the one it
// gets); the client gets the retried GET's answer, whole, and the next on the same connection.
func TestRegistryChallengeIsNotStreamedToTheClient(t *testing.T) {
	const size = 100 << 10
	var rec *recorder
	rec = startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			_, _ = io.WriteString(w, `{"token":"registry-token-1","expires_in":300}`)
		case r.Header.Get("Authorization") != "Bearer registry-token-1":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+rec.URL+`/token",service="fake",scope="repository:team/app:pull"`)
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(bytes.Repeat([]byte("c"), size))
		default:
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = w.Write(bytes.Repeat([]byte("b"), size))
		}
	})
	env := startProxyDriver(t, nil)
	get := blobGetter(t, env, rec.URL, "")
	for i := range 2 {
		get(i, strings.Repeat("b", size))
	}
	var tokens int
	for _, r := range rec.requests() {
		if r.RequestURI == "/token" || strings.HasPrefix(r.RequestURI, "/token?") {
			tokens++
			if r.Authorization != "Basic "+basic("puller", "registry-password") {
				t.Errorf("the token service got %q, want the Connector's credential", r.Authorization)
			}
		}
	}
	if tokens != 1 {
		t.Errorf("%d token requests, want 1", tokens)
	}
}

// TestRegistryTokenInPlaceFallsBackOnAChallenge: along a connection's remembered route to a
// registry, a GET is written in place with the token the proxy keeps for its repository (the
// client's own Authorization dropped); when the registry refuses that token (revoked), its 401
// challenge never reaches the client: the GET goes the general way, which fetches a new token
// and sends it again, and the next GET is in place with the new token.
func TestRegistryTokenInPlaceFallsBackOnAChallenge(t *testing.T) {
	const size = 100 << 10
	var (
		rec          *recorder
		mu           sync.Mutex
		issued       int
		valid        string
		answered     = strings.Repeat("b", size)
		refusalBytes = bytes.Repeat([]byte("c"), size)
	)
	rec = startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.URL.Path == "/token":
			issued++
			valid = "registry-token-" + strconv.Itoa(issued)
			_, _ = io.WriteString(w, `{"token":"`+valid+`","expires_in":300}`)
		case r.Header.Get("Authorization") != "Bearer "+valid:
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+rec.URL+`/token",service="fake",scope="repository:team/app:pull"`)
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(refusalBytes)
		default:
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = io.WriteString(w, answered)
		}
	})
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.MetricsListen = metricsAddr })
	get := blobGetter(t, env, rec.URL, "Authorization: Bearer the-clients-own\r\n")
	before := scrape(t, metricsAddr)
	get(1, answered) // challenged, a token fetched, sent again: the route is remembered
	get(2, answered) // in place, with the kept token
	mu.Lock()
	valid = "revoked"
	mu.Unlock()
	get(3, answered) // in place, refused: the general path fetches a new token
	get(4, answered) // in place, with the new token
	after := scrapeUntil(t, metricsAddr, before, laneWants(2, 2, 0))
	if c := laneCounts(before, after); c != [3]float64{2, 2, 0} {
		t.Errorf("the fast lane served %v GETs parsed, %v in place, handed %v over; want 2, 2, 0", c[0], c[1], c[2])
	}

	var tokens int
	var sent []string
	for _, r := range rec.requests() {
		if strings.HasPrefix(r.RequestURI, "/token") {
			tokens++
		}
		if r.RequestURI == "/v2/team/app/blobs/sha256:0123" {
			sent = append(sent, r.Authorization)
		}
		if r.ProxyAuthorization != "" || strings.Contains(r.Authorization, "the-clients-own") {
			t.Errorf("the registry received a proxy credential or the client's Authorization: %+v", r)
		}
	}
	if tokens != 2 {
		t.Errorf("%d token requests, want 2 (the first GET's and the revoked token's)", tokens)
	}
	// GET 1 without a token, then with token 1; GET 2 with token 1; GET 3 in place with token 1,
	// again on the general path with it, then with token 2; GET 4 with token 2.
	want := []string{"", "Bearer registry-token-1", "Bearer registry-token-1", "Bearer registry-token-1",
		"Bearer registry-token-1", "Bearer registry-token-2", "Bearer registry-token-2"}
	if !slices.Equal(sent, want) {
		t.Errorf("the registry received Authorization %q, want %q", sent, want)
	}
}

// blobGetter creates the Connector "fake" of the oci class for the registry stand-in at url
// (its token service at url/token; the Secret's user "puller", password "registry-password"),
// lets builder use it, and returns a function that sends builder's GET of a blob through the
// forward proxy on one connection, with extra header lines, and checks that the answer is a
// 200 with body want (i numbers the GET in failures).
func blobGetter(t *testing.T, env *proxyEnv, url, extra string) func(i int, want string) {
	t.Helper()
	ns := newNamespace(t)
	createSecret(t, ns, "fake", v1alpha1.SecretTypeDistributionRegistryAuth, map[string]string{"username": "puller", "password": "registry-password"})
	create(t, &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: "fake", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: deployedClass(t, "oci.yaml"), Address: url,
			AddressExtensions: []v1alpha1.NamedAddress{{Name: "token", Value: url + "/token"}},
			Auth:              &v1alpha1.ConnectorAuth{Name: "registryToken", SecretRef: &v1alpha1.SecretRef{Name: "fake"}}},
	})
	allowConnectors(t, ns, "builder", "fake")
	token := proxyToken(t, ns, "builder")
	head := "GET " + url + "/v2/team/app/blobs/sha256:0123 HTTP/1.1\r\nHost: " + strings.TrimPrefix(url, "http://") +
		"\r\n" + extra + "Proxy-Authorization: Basic " + basic(ns+"/fake", token) + "\r\n\r\n"
	conn := dialProxy(t, strings.TrimPrefix(env.proxyURL, "http://"))
	br := bufio.NewReader(conn)
	return func(i int, want string) {
		t.Helper()
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != http.StatusOK || string(body) != want {
			t.Fatalf("GET %d: %d, %d bytes (%d of the challenge's), %v", i, res.StatusCode, len(body), bytes.Count(body, []byte("c")), err)
		}
	}
}
