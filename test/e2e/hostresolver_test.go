package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestBuiltInProxyHostResolver: a class annotated connectors.cpaas.io/proxy-resolver: host
// gives each of its Connectors its own host on the built-in proxy, as Alauda's default does:
// the controller (deployed RBAC) keeps the ExternalName Service c-<name> in the Connector's
// namespace, owned by the Connector, leading to the proxy's Service; the status address and
// the rendered .gitconfig use http://c-<name>.<ns>.svc.cluster.local:<port>, and a git clone
// through it (that name resolved to the proxy, as cluster DNS would) reaches the tool with the
// Pod's token. A Pod of another namespace gets the path form instead (that Service is the
// Connector's namespace's to lead anywhere). A Service of that name someone else made is never taken over, and a Connector
// name that makes no Service name says so.
func TestBuiltInProxyHostResolver(t *testing.T) {
	tool := startGitServer(t, false)
	nodeKubeconfig, controllerKubeconfig := deployedKubeconfigs(t)
	var proxyService, port string
	env := startProxyDriver(t, func(o *driver.Options) {
		_, port, _ = net.SplitHostPort(o.ProxyListen)
		proxyService = "connectors-proxy." + systemNS + ".svc.cluster.local"
		o.Role, o.Kubeconfig, o.ProxyURL = driver.RoleNode, nodeKubeconfig, "http://"+proxyService+":"+port
	})
	opts := testOptions()
	opts.Role, opts.Kubeconfig, opts.ProxyURL = driver.RoleController, controllerKubeconfig, "http://"+proxyService+":"+port
	runDriver(t, opts)

	ctx := context.Background()
	ns := newNamespace(t)
	class := classWith(t, "git-host", func(c *v1alpha1.ConnectorClass) {
		c.Annotations = map[string]string{v1alpha1.AnnotationProxyResolver: "host"}
	})
	gitConnector(t, ns, "repo", class, tool)
	allowConnectors(t, ns, "builder", "repo")
	c := waitCondition(t, ns, "repo", v1alpha1.ConditionProxyServiceReady, metav1.ConditionTrue, connectorstatus.ReasonBuiltInHost)
	host := fmt.Sprintf("c-repo.%s.svc.cluster.local", ns)
	if got, want := c.Status.Proxy.HTTPAddress.URL, "http://"+host+":"+port; got != want {
		t.Fatalf("status.proxy.httpAddress.url = %s, want %s", got, want)
	}
	svc, err := cp.Kube.CoreV1().Services(ns).Get(ctx, "c-repo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeExternalName || svc.Spec.ExternalName != proxyService || !metav1.IsControlledBy(svc, c) {
		t.Errorf("Service c-repo: type %s, externalName %s, owners %+v", svc.Spec.Type, svc.Spec.ExternalName, svc.OwnerReferences)
	}

	// The controller sees the change at once (it watches the Services it owns), and its cache
	// keeps of the Service only what it compares, so the repair patches what changed and keeps
	// what others added.
	t.Run("a Service led elsewhere is led back, keeping what others added", func(t *testing.T) {
		patch := []byte(`{"metadata":{"annotations":{"team.example/owner":"platform"}},"spec":{"externalName":"elsewhere.example"}}`)
		if _, err := cp.Kube.CoreV1().Services(ns).Patch(ctx, "c-repo", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		var got *corev1.Service
		if !kubelet.WaitUntil(20*time.Second, func() bool {
			got, err = cp.Kube.CoreV1().Services(ns).Get(ctx, "c-repo", metav1.GetOptions{})
			return err == nil && got.Spec.ExternalName == proxyService
		}) {
			t.Fatalf("Service c-repo was not led back to the proxy: %v %+v", err, got)
		}
		if got.Annotations["team.example/owner"] != "platform" || len(got.Spec.Ports) != 1 || !metav1.IsControlledBy(got, c) {
			t.Errorf("the repair dropped what it does not compare: annotations %v, ports %v, owners %v", got.Annotations, got.Spec.Ports, got.OwnerReferences)
		}
		// The repair is the controller's one write of the Service since it created it: a Service
		// as it wants it is not written again at each reconcile.
		writes, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.ControllerUser && (ev.Verb == "update" || ev.Verb == "patch") &&
				ev.ObjectRef != nil && ev.ObjectRef.Resource == "services" && ev.ObjectRef.Namespace == ns
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(writes) != 1 {
			t.Errorf("the controller wrote Service c-repo %d times after creating it, want once (the repair)", len(writes))
		}
	})

	t.Run("git clone through the Connector's own host", func(t *testing.T) {
		pod := podWithVolume(t, env.kubelet, ns, "git", map[string]string{"connectors": "repo", "configuration.names": "gitconfig"}, nil)
		if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
		vol := env.kubelet.TargetPath(pod, "connectors")
		_, proxyPort, _ := net.SplitHostPort(env.proxyURL[len("http://"):])
		gitEnv := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")}
		// What cluster DNS and the Service would do: the Connector's host leads to the proxy.
		resolve := fmt.Sprintf("http.curloptResolve=%s:%s:127.0.0.1", host, proxyPort)
		if out, err := gitserver.Git("", gitEnv, "-c", resolve, "clone", "-q", tool.URL+"/repo.git", filepath.Join(t.TempDir(), "clone")); err != nil {
			t.Fatalf("git clone: %v\n%s", err, out)
		}
		checkToolSawOnlyConnectorCredential(t, tool, visibleFiles(t, vol)["context.token"])
	})

	// The Connector's own host is a Service of its namespace, whose members may lead it to a
	// listener of theirs: a Pod of another namespace must not send its token there.
	t.Run("a Pod of another namespace gets the path form", func(t *testing.T) {
		consumer := newNamespace(t)
		shareConnector(t, ns, "repo", consumer, "builder")
		pod := podWithVolume(t, env.kubelet, consumer, "git", map[string]string{"connectors": ns + "/repo", "configuration.names": "gitconfig"}, nil)
		if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
		vol := env.kubelet.TargetPath(pod, "connectors")
		files := visibleFiles(t, vol)
		pathForm := "http://" + proxyService + ":" + port + "/namespaces/" + ns + "/connectors/repo"
		if got := files["connector.status.proxyAddress"]; got != pathForm {
			t.Errorf("connector.status.proxyAddress = %s, want %s", got, pathForm)
		}
		if strings.Contains(files[".gitconfig"], "c-repo") || !strings.Contains(files[".gitconfig"], pathForm) {
			t.Errorf(".gitconfig names the Connector's own host, or not the path form:\n%s", files[".gitconfig"])
		}
		_, proxyPort, _ := net.SplitHostPort(env.proxyURL[len("http://"):])
		gitEnv := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")}
		resolve := fmt.Sprintf("http.curloptResolve=%s:%s:127.0.0.1", proxyService, proxyPort)
		if out, err := gitserver.Git("", gitEnv, "-c", resolve, "clone", "-q", tool.URL+"/repo.git", filepath.Join(t.TempDir(), "clone")); err != nil {
			t.Fatalf("git clone: %v\n%s", err, out)
		}
		checkToolSawOnlyConnectorCredential(t, tool, files["context.token"])
	})

	t.Run("a Service someone else made is not taken over", func(t *testing.T) {
		mine := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "c-taken", Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
		create(t, mine)
		gitConnector(t, ns, "taken", class, tool)
		waitCondition(t, ns, "taken", v1alpha1.ConditionProxyServiceReady, metav1.ConditionFalse, connectorstatus.ReasonServiceNameTaken)
		got, err := cp.Kube.CoreV1().Services(ns).Get(ctx, "c-taken", metav1.GetOptions{})
		if err != nil || got.Spec.Type == corev1.ServiceTypeExternalName || len(got.OwnerReferences) > 0 {
			t.Errorf("the tenant's Service was changed: %+v (%v)", got, err)
		}
		gitConnector(t, ns, "with.dot", class, tool)
		waitCondition(t, ns, "with.dot", v1alpha1.ConditionProxyServiceReady, metav1.ConditionFalse, connectorstatus.ReasonInvalidName)
	})
}
