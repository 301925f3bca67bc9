package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestProxyPermissionsSettle: when the node sees one of a Pod's AccessRequests change while
// the API server still answers from the RoleBinding the change revoked (as one whose RBAC cache
// lags behind does), the allowing answer it gets is kept only for --proxy-permission-settle,
// not for --proxy-permission-ttl (an hour here): once the RoleBinding is gone, the Pod is
// refused without any further change of its AccessRequests.
func TestProxyPermissionsSettle(t *testing.T) {
	tool := startGitServer(t, false)
	metricsAddr := freeLoopbackAddr(t)
	env := startProxyDriver(t, func(o *driver.Options) {
		o.Role = driver.RoleNode // no controller: this test writes the AccessRequest's verdict and the RBAC
		o.MetricsListen = metricsAddr
		o.ProxyPermissionTTL, o.ProxyPermissionSettle = time.Hour, 5*time.Second
		o.ApprovalWait = time.Second
	})
	ctx := context.Background()
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true", "enable-connectors-approval": "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	gateByApprovalTask(t, ns, "promote", "tool")

	// The node makes the Pod's AccessRequest, and watches it; its verdict and the Pod-scoped
	// grant are written here, as the controller would.
	pod := podWithVolume(t, env.kubelet, ns, "client", map[string]string{"connectors": "tool"}, nil)
	if !kubelet.WaitUntil(15*time.Second, func() bool { return grpcstatus.Code(env.kubelet.Publish(ctx, pod, "connectors")) == codes.Unavailable }) {
		t.Fatal("the gated Pod's publish did not wait for its AccessRequest")
	}
	ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns,
		Name: approval.RequestName("tool", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}}
	if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(ar), ar); err != nil {
		t.Fatal(err)
	}
	grantPodProxy(t, ns, pod.Name, "tool")
	ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Granted",
		Message: "granted by the test", LastTransitionTime: metav1.Now()}}
	if err := cp.Client.Status().Update(ctx, ar); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(15*time.Second, func() bool { return env.kubelet.Publish(ctx, pod, "connectors") == nil }) {
		t.Fatal("the granted Pod's volume was not published")
	}
	t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
	token := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
	status := func() int {
		code, _ := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/repo.git/info/refs?service=git-upload-pack",
			map[string]string{"Authorization": "Bearer " + token}))
		return code
	}
	if !kubelet.WaitUntil(15*time.Second, func() bool { return status() == http.StatusOK }) {
		t.Fatal("the Pod-scoped connectors/proxy grant did not let the Pod's token through")
	}

	// The Pod's AccessRequest changes (the controller writes a revocation after deleting the
	// RoleBinding); the API server answering the node has not seen the deletion yet.
	asked := series("connectors_authorization_decisions_total", map[string]string{"reviewer": "proxy_permissions", "decision": "allow", "cache": "miss"})
	before := scrape(t, metricsAddr)[asked]
	if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(ar), ar); err != nil {
		t.Fatal(err)
	}
	meta.SetStatusCondition(&ar.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue,
		Reason: "Synced", Message: "changed by the test"})
	if err := cp.Client.Status().Update(ctx, ar); err != nil {
		t.Fatal(err)
	}
	// The node drops the Pod's decisions and asks again: still allowed, by the stale RoleBinding.
	if !kubelet.WaitUntil(15*time.Second, func() bool { return status() == http.StatusOK && scrape(t, metricsAddr)[asked] > before }) {
		t.Fatal("the node did not ask again after the Pod's AccessRequest changed")
	}
	if err := cp.Client.Delete(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "proxy-" + pod.Name, Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(30*time.Second, func() bool { return status() == http.StatusForbidden }) {
		t.Fatal("the Pod is still allowed: the answer given just after its AccessRequest changed was kept for --proxy-permission-ttl")
	}
}
