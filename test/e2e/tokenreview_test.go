package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// apiFront serves the test API server to a driver through a TLS front of the test's own, which
// passes every request on (watches streamed) as the admin, except that it can have the next
// TokenReview ask about another token than the one the driver sent: the API server's own
// answer about that token then reaches the driver as the answer about its token.
type apiFront struct {
	kubeconfig string

	mu      sync.Mutex
	instead []string // tokens the next TokenReviews ask about, in turn
	asked   []string // the tokens the driver's TokenReviews were about, in order
}

const tokenReviewsPath = "/apis/authentication.k8s.io/v1/tokenreviews"

func startAPIFront(t *testing.T) *apiFront {
	t.Helper()
	target := apiServerURL(t)
	admin, err := rest.TransportFor(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	f := &apiFront{}
	pass := &httputil.ReverseProxy{Transport: admin, FlushInterval: -1,
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == tokenReviewsPath {
			if err := f.swapToken(r); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		pass.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["front"] = &clientcmdapi.Cluster{Server: srv.URL,
		CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
	cfg.AuthInfos["front"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["front"] = &clientcmdapi.Context{Cluster: "front", AuthInfo: "front"}
	cfg.CurrentContext = "front"
	f.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, f.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return f
}

// askInstead has the next TokenReview ask about token.
func (f *apiFront) askInstead(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instead = append(f.instead, token)
}

// reviewsOf counts the driver's TokenReviews about token so far.
func (f *apiFront) reviewsOf(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.asked {
		if a == token {
			n++
		}
	}
	return n
}

// swapToken records the token r asks about and, when one is waiting, puts another in its place.
func (f *apiFront) swapToken(r *http.Request) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	var review authenticationv1.TokenReview
	if err := json.Unmarshal(body, &review); err != nil {
		return err
	}
	f.mu.Lock()
	f.asked = append(f.asked, review.Spec.Token)
	if len(f.instead) > 0 {
		review.Spec.Token, f.instead = f.instead[0], f.instead[1:]
	}
	f.mu.Unlock()
	if body, err = json.Marshal(&review); err != nil {
		return err
	}
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// boundToken is a token of ServiceAccount sa for the proxy's audience, bound to a Pod of it
// on the tests' node created here; gone deletes the Pod at once, which invalidates the token.
func boundToken(t *testing.T, ns, sa, pod string, gone bool) string {
	t.Helper()
	ctx := context.Background()
	token, err := kubelet.ProjectedToken(ctx, cp.Kube, ns, pod, sa, "node-1", driverName)
	if err != nil {
		t.Fatal(err)
	}
	if gone {
		if err := cp.Kube.CoreV1().Pods(ns).Delete(ctx, pod, *metav1.NewDeleteOptions(0)); err != nil {
			t.Fatal(err)
		}
	}
	return token
}

// TestATokenWhosePodTheAPIServerCouldNotReadIsAskedAgain: the API server answers a TokenReview
// "service account token has been invalidated" both for a token whose Pod is gone and for one
// whose Pod it failed to read (an etcd timeout, a restart). The front has the API server answer
// about a deleted Pod's token in place of a live Pod's, once: that is the very answer its failed
// read gives. The proxy asks again after --token-invalidated-retry-delay and serves the live
// Pod; without the second ask (0), it refused it for --authorization-deny-ttl.
func TestATokenWhosePodTheAPIServerCouldNotReadIsAskedAgain(t *testing.T) {
	tool := startGitServer(t, false)
	front := startAPIFront(t)
	proxyFor := func(retry time.Duration) *proxyEnv {
		return startProxyDriver(t, func(o *driver.Options) {
			o.Role, o.Kubeconfig, o.TokenInvalidatedRetry = driver.RoleNode, front.kubeconfig, retry
		})
	}
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	live, gone := boundToken(t, ns, "builder", "live", false), boundToken(t, ns, "builder", "gone", true)
	refs := "/repo.git/info/refs?service=git-upload-pack"
	get := func(env *proxyEnv, token string) (int, string) {
		return do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool"+refs,
			map[string]string{"Authorization": "Bearer " + token}))
	}

	env := proxyFor(200 * time.Millisecond)
	front.askInstead(gone)
	if code, body := get(env, live); code != http.StatusOK {
		t.Fatalf("the live Pod's token, once answered invalidated: status %d %q, want 200", code, body)
	}
	if n := front.reviewsOf(live); n != 2 {
		t.Fatalf("%d TokenReviews of the live Pod's token, want 2 (the invalidated answer asked again once)", n)
	}
	// A token whose Pod is gone is asked about twice, then refused, and the refusal is kept.
	for range 2 {
		if code, body := get(env, gone); code != http.StatusUnauthorized || !strings.Contains(body, "token not accepted") {
			t.Fatalf("the deleted Pod's token: status %d %q, want 401", code, body)
		}
	}
	if n := front.reviewsOf(gone); n != 2 {
		t.Fatalf("%d TokenReviews of the deleted Pod's token for two requests, want 2 (asked again once, the refusal kept)", n)
	}

	// The failure this guards against: the first answer taken as the refusal it looks like.
	once := proxyFor(0)
	front.askInstead(gone)
	before := front.reviewsOf(live)
	if code, body := get(once, live); code != http.StatusUnauthorized || !strings.Contains(body, "token not accepted") {
		t.Fatalf("without asking again, the live Pod's token answered invalidated: status %d %q, want 401", code, body)
	}
	if n := front.reviewsOf(live) - before; n != 1 {
		t.Fatalf("%d TokenReviews without asking again, want 1", n)
	}
}
