package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// remoteNS and remoteSA are the namespace and ServiceAccount of the second cluster whose token
// is the k8s Connector's credential; the account may read and apply ConfigMaps there only.
const (
	remoteNS   = "apps"
	remoteSA   = "deployer"
	remoteUser = "system:serviceaccount:" + remoteNS + ":" + remoteSA
)

// everyRequestAudited makes a control plane record every request at Metadata level, failed
// authentications (401) included, so that a test can tell whose credential each request bore.
func everyRequestAudited(t *testing.T) controlplane.Option {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(env *envtest.Environment) {
		args := env.ControlPlane.GetAPIServer().Configure()
		args.Set("audit-policy-file", policy)
		args.Set("audit-log-path", filepath.Join(dir, "audit.log"))
		args.Set("audit-log-mode", "blocking")
	}
}

// startRemoteCluster starts a second kube-apiserver and etcd, the target of the k8s Connectors,
// with the namespace apps, and returns it with a token of its ServiceAccount apps/deployer,
// which may get, list, create and patch ConfigMaps in apps and nothing else of its own.
func startRemoteCluster(t *testing.T) (*controlplane.ControlPlane, string) {
	t.Helper()
	remote, err := controlplane.Start(everyRequestAudited(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = remote.Stop() })
	if _, err := remote.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: remoteNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return remote, remoteAccount(t, remote, remoteSA, "get", "list", "create", "patch")
}

// remoteAccount creates the ServiceAccount apps/<sa> of the remote cluster, allowed verbs on
// ConfigMaps of apps, and returns a token of it.
func remoteAccount(t *testing.T, remote *controlplane.ControlPlane, sa string, verbs ...string) string {
	t.Helper()
	ctx := context.Background()
	kube := remote.Kube
	if _, err := kube.CoreV1().ServiceAccounts(remoteNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "configmaps-" + sa},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: verbs}}}
	if _, err := kube.RbacV1().Roles(remoteNS).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: remoteNS}}}
	if _, err := kube.RbacV1().RoleBindings(remoteNS).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := kube.CoreV1().ServiceAccounts(remoteNS).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// k8sConnector creates a k8s Connector of the remote cluster whose bearer-token Secret, of the
// same name, holds token, and whose caCertSecretRef holds the remote cluster's CA.
func k8sConnector(t *testing.T, ns, name, class string, remote *controlplane.ControlPlane, token string) {
	t.Helper()
	createSecret(t, ns, name, v1alpha1.SecretTypeBearerToken, map[string]string{"token": token})
	createSecret(t, ns, name+"-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": string(remote.Config.CAData)})
	create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: remoteAddress(remote),
			Auth:            &v1alpha1.ConnectorAuth{Name: "bearerTokenAuth", SecretRef: &v1alpha1.SecretRef{Name: name}},
			CACertSecretRef: &v1alpha1.LocalSecretRef{Name: name + "-ca"}}})
}

// remoteAddress is the URL of a control plane's API server.
func remoteAddress(remote *controlplane.ControlPlane) string {
	host := strings.TrimSuffix(remote.Config.Host, "/")
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	return host
}

// publishVolume creates a Pod of builder with a connectors volume of attrs, publishes it until
// the test ends, and returns the volume's path.
func publishVolume(t *testing.T, env *proxyEnv, ns, name string, attrs map[string]string) string {
	t.Helper()
	pod := podWithVolume(t, env.kubelet, ns, name, attrs, nil)
	if err := env.kubelet.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	return env.kubelet.TargetPath(pod, "connectors")
}

// volumeKubectl runs the kubectl of the test binaries with only the volume's kubeconfig: no
// proxy variables, a fresh HOME (kubectl's discovery cache), nothing else of this process.
func volumeKubectl(t *testing.T, vol string) func(stdin string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(cp.Assets, "kubectl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kubectl is missing from the test binaries (%v): run hack/tools.sh (hack/testbin.sh provides it)", err)
	}
	env := []string{"KUBECONFIG=" + filepath.Join(vol, "kubeconfig"), "HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	return func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

// TestToolK8sKubectlThroughProxy mounts the k8s class's kubeconfig as the docs' Pod does and
// runs the real kubectl with it against a second real kube-apiserver (its own CA, trusted
// through the Connector's caCertSecretRef), whose ServiceAccount token is the Connector's
// bearer token: kubectl reaches it through the forward proxy with only the Pod token.
func TestToolK8sKubectlThroughProxy(t *testing.T) {
	remote, remoteToken := startRemoteCluster(t)
	enableMultiConnector(t) // for the volume of two Connectors at the end
	env := startDeployedDrivers(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	class := deployedClass(t, "k8s.yaml")
	k8sConnector(t, ns, "k8s-connector", class, remote, remoteToken)
	// The class's probes: /version without a credential, /api with it, both through the CA.
	waitCondition(t, ns, "k8s-connector", v1alpha1.ConditionReady, metav1.ConditionTrue, "Ready")
	allowConnectors(t, ns, "builder", "k8s-connector")
	// The volume attributes of the docs' Job, unchanged.
	vol := publishVolume(t, env, ns, "k8s-access", map[string]string{"connector.name": "k8s-connector", "configuration.names": "kubeconfig"})
	files := visibleFiles(t, vol)
	podToken := files["context.token"]

	t.Run("the kubeconfig is the documented one and holds no credential", func(t *testing.T) {
		checkK8sKubeconfig(t, files, ns, remoteAddress(remote), env.proxyURL)
		for name, content := range files {
			if strings.Contains(content, remoteToken) {
				t.Errorf("the volume's %s holds the Connector's token", name)
			}
		}
	})

	kubectl := volumeKubectl(t, vol)
	t.Run("kubectl auth whoami: the remote cluster authenticates the Connector's ServiceAccount", func(t *testing.T) {
		out, err := kubectl("", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		if err != nil || out != remoteUser {
			t.Fatalf("kubectl auth whoami = %q (%v), want %s", out, err, remoteUser)
		}
	})
	t.Run("kubectl apply and get", func(t *testing.T) {
		for i, want := range []string{"configmap/settings created", "configmap/settings configured"} {
			manifest := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: " + remoteNS + "}\ndata: {revision: \"" + string(rune('1'+i)) + "\"}\n"
			if out, err := kubectl(manifest, "apply", "-f", "-"); err != nil || strings.TrimSpace(out) != want {
				t.Fatalf("kubectl apply = %q (%v), want %q", out, err, want)
			}
		}
		if out, err := kubectl("", "get", "configmap", "settings", "-n", remoteNS, "-o", "jsonpath={.data.revision}"); err != nil || out != "2" {
			t.Fatalf("kubectl get = %q (%v), want revision 2", out, err)
		}
		cm, err := remote.Kube.CoreV1().ConfigMaps(remoteNS).Get(ctx, "settings", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(cm.ManagedFields) == 0 || cm.ManagedFields[0].Manager != "kubectl-client-side-apply" {
			t.Errorf("managedFields %+v, want kubectl-client-side-apply's", cm.ManagedFields)
		}
	})
	t.Run("the Connector's RBAC, not the Pod's, decides", func(t *testing.T) {
		out, err := kubectl("", "get", "configmaps", "-n", "kube-system")
		if err == nil || !strings.Contains(out, `User "`+remoteUser+`" cannot list resource "configmaps"`) {
			t.Fatalf("kubectl get in another namespace = %q (%v), want the deployer's Forbidden", out, err)
		}
	})

	checkRemoteSawOnlyConnector(t, remote, ns, podToken)

	// A reader's and a deployer's Connector of one API server: each context gets its own.
	t.Run("two Connectors of one cluster in one volume", func(t *testing.T) {
		readerToken := remoteAccount(t, remote, "reader", "get", "list")
		k8sConnector(t, ns, "reader", class, remote, readerToken)
		allowConnectorsAs(t, ns, "builder", "use-reader", "reader")
		vol := publishVolume(t, env, ns, "k8s-two", map[string]string{"connectors": "k8s-connector,reader", "configuration.names": "kubeconfig"})
		kubectl := volumeKubectl(t, vol)
		if out, err := kubectl("", "config", "current-context"); err != nil || strings.TrimSpace(out) != ns+"/k8s-connector" {
			t.Errorf("current context %q (%v), want the first Connector's", out, err)
		}
		for connector, user := range map[string]string{"k8s-connector": remoteUser, "reader": "system:serviceaccount:" + remoteNS + ":reader"} {
			out, err := kubectl("", "--context", ns+"/"+connector, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
			if err != nil || out != user {
				t.Errorf("whoami in context %s = %q (%v), want %s", connector, out, err, user)
			}
		}
		if out, err := kubectl("", "--context", ns+"/reader", "get", "configmap", "settings", "-n", remoteNS, "-o", "jsonpath={.data.revision}"); err != nil || out != "2" {
			t.Errorf("the reader's kubectl get = %q (%v)", out, err)
		}
		if out, err := kubectl("", "--context", ns+"/reader", "delete", "configmap", "settings", "-n", remoteNS); err == nil || !strings.Contains(out, "cannot delete") {
			t.Errorf("the reader deleted a ConfigMap: %q (%v)", out, err)
		}
		for _, secret := range []string{readerToken, remoteToken} {
			for name, content := range visibleFiles(t, vol) {
				if strings.Contains(content, secret) {
					t.Errorf("the volume's %s holds a Connector's token", name)
				}
			}
		}
	})

	t.Run("an address with a path: an API server behind a platform proxy", func(t *testing.T) {
		front := startPathFront(t, remote, "/kubernetes/remote")
		createSecret(t, ns, "front-ca", corev1.SecretTypeOpaque, map[string]string{"ca.crt": front.caPEM})
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "behind-proxy", Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: front.url + "/kubernetes/remote",
				Auth:            &v1alpha1.ConnectorAuth{Name: "bearerTokenAuth", SecretRef: &v1alpha1.SecretRef{Name: "k8s-connector"}},
				CACertSecretRef: &v1alpha1.LocalSecretRef{Name: "front-ca"}}})
		waitCondition(t, ns, "behind-proxy", v1alpha1.ConditionReady, metav1.ConditionTrue, "Ready")
		allowConnectorsAs(t, ns, "builder", "use-behind-proxy", "behind-proxy")
		kubectl := volumeKubectl(t, publishVolume(t, env, ns, "k8s-path", // the attributes of the docs' TaskRun workspace
			map[string]string{"connector.name": "behind-proxy", "connector.namespace": "", "configuration.names": "kubeconfig"}))
		if out, err := kubectl("", "get", "configmap", "settings", "-n", remoteNS, "-o", "jsonpath={.data.revision}"); err != nil || out != "2" {
			t.Fatalf("kubectl get through the path = %q (%v)", out, err)
		}
		if front.outside.Load() != 0 {
			t.Errorf("%d requests reached the front outside /kubernetes/remote", front.outside.Load())
		}
	})

	t.Run("a token the cluster refuses: AuthReady=False/Rejected", func(t *testing.T) {
		k8sConnector(t, ns, "bad-token", class, remote, "not-a-token-of-that-cluster")
		waitCondition(t, ns, "bad-token", v1alpha1.ConditionAuthReady, metav1.ConditionFalse, "Rejected")
	})

	for _, secret := range []string{remoteToken, podToken} {
		if strings.Contains(logs.String(), secret) {
			t.Error("the driver log holds a token")
		}
	}
}

// checkK8sKubeconfig asserts the volume's kubeconfig: the Connector's address as the server, the
// forward proxy with the Connector's name and the Pod token as proxy-url, the proxy CA, and a
// user whose token is a placeholder (the Pod token appears once: in proxy-url).
func checkK8sKubeconfig(t *testing.T, files map[string]string, ns, server, proxy string) {
	t.Helper()
	raw := files["kubeconfig"]
	cfg, err := clientcmd.Load([]byte(raw))
	if err != nil {
		t.Fatalf("kubeconfig does not load: %v\n%s", err, raw)
	}
	podToken := files["context.token"]
	cluster, ctx, user := cfg.Clusters["k8s"], cfg.Contexts["k8s"], cfg.AuthInfos["k8s"]
	if cfg.CurrentContext != "k8s" || cluster == nil || ctx == nil || user == nil || ctx.Cluster != "k8s" || ctx.AuthInfo != "k8s" {
		t.Fatalf("kubeconfig has no cluster, context and user k8s as current context:\n%s", raw)
	}
	if cluster.Server != server {
		t.Errorf("server %q, want the Connector's address %q", cluster.Server, server)
	}
	if want := strings.Replace(proxy, "http://", "http://"+ns+"%2Fk8s-connector:"+podToken+"@", 1); cluster.ProxyURL != want {
		t.Errorf("proxy-url is not the forward proxy with <ns>%%2F<name>:<Pod token>")
	}
	if string(cluster.CertificateAuthorityData) != files["ca.crt"] {
		t.Errorf("certificate-authority-data is not the proxy CA of ca.crt")
	}
	if user.Token == "" || user.Token == podToken || strings.Count(raw, podToken) != 1 {
		t.Errorf("the user's token is not a placeholder, or the Pod token appears elsewhere than proxy-url")
	}
}

// checkRemoteSawOnlyConnector asserts from the remote API server's audit log that every kubectl
// request was authenticated as the Connector's ServiceAccount and none was refused
// authentication. A token of the first cluster (as the Pod token is) sent to the remote one
// leaves a 401 event: the check proves it with a token of another account, sent directly.
func checkRemoteSawOnlyConnector(t *testing.T, remote *controlplane.ControlPlane, ns, podToken string) {
	t.Helper()
	if _, err := cp.Kube.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "control"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cp.Kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "control", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status.Token == podToken {
		t.Fatal("the control token is the Pod token")
	}
	if code := directRequest(t, remote, tr.Status.Token); code != http.StatusUnauthorized {
		t.Fatalf("a first-cluster token sent to the remote API server got %d, want 401", code)
	}
	events, err := remote.AuditEvents(func(ev *auditv1.Event) bool {
		return strings.HasPrefix(ev.UserAgent, "kubectl/") || ev.UserAgent == leakControlAgent
	})
	if err != nil {
		t.Fatal(err)
	}
	var kubectl, control int
	for _, ev := range events {
		if ev.UserAgent == leakControlAgent {
			if ev.ResponseStatus != nil && ev.ResponseStatus.Code == http.StatusUnauthorized {
				control++
			}
			continue
		}
		kubectl++
		if ev.User.Username != remoteUser {
			code := int32(0)
			if ev.ResponseStatus != nil {
				code = ev.ResponseStatus.Code
			}
			t.Errorf("%s %s reached the remote API server as %q (status %d), want %s", ev.Verb, ev.RequestURI, ev.User.Username, code, remoteUser)
		}
	}
	if control == 0 {
		t.Fatal("the remote audit log did not record the refused first-cluster token: the check proves nothing")
	}
	if kubectl == 0 {
		t.Fatal("the remote audit log holds no kubectl request")
	}
}

const leakControlAgent = "connectors-csi-test/leak-control"

// directRequest sends GET /api straight to the remote API server with token; its status.
func directRequest(t *testing.T, remote *controlplane.ControlPlane, token string) int {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(remote.Config.CAData)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	req, err := http.NewRequest(http.MethodGet, remoteAddress(remote)+"/api", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("User-Agent", leakControlAgent)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pathFront is an HTTPS reverse proxy in front of the remote API server that serves it only
// under a path prefix (as a platform exposes clusters at https://platform/kubernetes/<name>),
// passing the client's Authorization on.
type pathFront struct {
	url, caPEM string
	outside    atomic.Int32 // requests outside the prefix (answered 404)
}

func startPathFront(t *testing.T, remote *controlplane.ControlPlane, prefix string) *pathFront {
	t.Helper()
	target, err := url.Parse(remoteAddress(remote))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(remote.Config.CAData)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	front := &pathFront{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
			front.outside.Add(1)
			http.NotFound(w, r)
			return
		}
		r.URL.Path, r.URL.RawPath = rest, ""
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	front.url = srv.URL
	front.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	return front
}
