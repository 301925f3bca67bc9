package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// waitObjectCondition waits until obj (read again by its key) has a condition of the type with
// the status and reason; conditions returns the object's conditions.
func waitObjectCondition[T client.Object](t *testing.T, obj T, conditions func(T) []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) T {
	t.Helper()
	key := client.ObjectKeyFromObject(obj)
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		if err := cp.Client.Get(context.Background(), key, obj); err != nil {
			return false
		}
		c := meta.FindStatusCondition(conditions(obj), typ)
		return c != nil && c.Status == status && c.Reason == reason
	}) {
		t.Fatalf("%T %s: %s never became %s/%s; conditions: %+v", obj, key, typ, status, reason, conditions(obj))
	}
	return obj
}

// waitCondition waits until the Connector's condition has the status and reason.
func waitCondition(t *testing.T, ns, name, typ string, status metav1.ConditionStatus, reason string) *v1alpha1.Connector {
	t.Helper()
	return waitObjectCondition(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		func(c *v1alpha1.Connector) []metav1.Condition { return c.Status.Conditions }, typ, status, reason)
}

func TestConnectorStatus(t *testing.T) {
	tool := startGitServer(t, false)
	env := startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	git := gitClass(t)
	gitConnector(t, ns, "good", git, tool)
	newConnector(t, ns, "no-class", "missing-class", "https://x.example.com")
	bad := &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: "no-secret", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: git, Address: tool.URL,
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "absent"}}},
	}
	create(t, bad)
	newConnector(t, ns, "down", git, "http://127.0.0.2:9")

	good := waitCondition(t, ns, "good", v1alpha1.ConditionReady, metav1.ConditionTrue, "Ready")
	if got, want := good.Status.Proxy.HTTPAddress.URL, env.proxyURL+"/namespaces/"+ns+"/connectors/good"; got != want {
		t.Errorf("status.proxy.httpAddress.url = %q, want %q", got, want)
	}
	if good.Labels[v1alpha1.LabelConnectorClass] != git {
		t.Errorf("class label = %q, want %q", good.Labels[v1alpha1.LabelConnectorClass], git)
	}
	for _, typ := range []string{v1alpha1.ConditionConnectorClassReady, v1alpha1.ConditionSecretReady,
		v1alpha1.ConditionProxyServiceReady, v1alpha1.ConditionLivenessReady, v1alpha1.ConditionAuthReady} {
		if !meta.IsStatusConditionTrue(good.Status.Conditions, typ) {
			t.Errorf("%s is not True: %+v", typ, meta.FindStatusCondition(good.Status.Conditions, typ))
		}
	}
	waitCondition(t, ns, "no-class", v1alpha1.ConditionConnectorClassReady, metav1.ConditionFalse, "NotFound")
	waitCondition(t, ns, "no-class", v1alpha1.ConditionReady, metav1.ConditionFalse, "ConnectorClassReadyFailed")
	waitCondition(t, ns, "no-secret", v1alpha1.ConditionSecretReady, metav1.ConditionFalse, "NotFound")
	waitCondition(t, ns, "down", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "Unreachable")

	out, err := cp.Kubectl(nil, "get", "connectors", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.Contains(lines[0], "CLASS") || !strings.Contains(lines[0], "ADDRESS") || !strings.Contains(lines[0], "READY") || !strings.Contains(lines[0], "REASON") {
		t.Fatalf("kubectl get connectors header: %q", lines[0])
	}
	found := false
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if f[0] == "good" {
			found = f[1] == git && f[2] == tool.URL && f[3] == "True" && f[4] == "Ready"
		}
	}
	if !found {
		t.Fatalf("kubectl get connectors does not show good as Ready:\n%s", out)
	}
}

// TestTenancyProbesKeepNoConnection: a Connector's tool is whoever its owner points it at. One
// that redirects each liveness probe to another of its names and keeps every connection open
// left them all idle in the controller, with no idle timeout: a tenant's thousands of
// Connectors kept the leader's memory and descriptors until it was killed. Probes keep no
// connection: the tool sees each closed once its probe is done.
func TestTenancyProbesKeepNoConnection(t *testing.T) {
	var open atomic.Int64
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/" { // the probe's path: on to the same server by another name
				http.Redirect(w, r, "http://localhost:"+port+"/up", http.StatusFound)
				return
			}
			_, _ = io.WriteString(w, "up")
		}),
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	startDriverWith(t, t.TempDir(), nil, nil)
	ns := newNamespace(t)
	newConnector(t, ns, "kept", gitClass(t), "http://127.0.0.1:"+port)
	waitCondition(t, ns, "kept", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
	if !kubelet.WaitUntil(10*time.Second, func() bool { return open.Load() == 0 }) {
		t.Errorf("%d of the probes' connections to the tool are still open, want every one closed after its probe", open.Load())
	}
}
