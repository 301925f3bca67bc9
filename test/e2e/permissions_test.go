package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/driver"
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
		o.Role = driver.RoleNode // no controller: only this test writes the AccessRequest and RBAC
		o.MetricsListen = metricsAddr
		o.ProxyPermissionTTL, o.ProxyPermissionSettle = time.Hour, 5*time.Second
	})
	ctx := context.Background()
	ns := newNamespace(t)
	gitConnector(t, ns, "tool", gitClass(t), tool)
	allowConnectors(t, ns, "builder", "tool")
	pod, token := publishedToken(t, env, ns, "client", "tool")
	status := func() int {
		code, _ := do(t, noRedirects, newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/connectors/tool/repo.git/info/refs?service=git-upload-pack",
			map[string]string{"Authorization": "Bearer " + token}))
		return code
	}
	setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
	grantPodProxy(t, ns, pod.Name, "tool")
	if !kubelet.WaitUntil(15*time.Second, func() bool { return status() == http.StatusOK }) {
		t.Fatal("the Pod-scoped connectors/proxy grant did not let the Pod's token through")
	}

	// The Pod's AccessRequest changes (the controller writes a revocation after deleting the
	// RoleBinding); the API server answering the node has not seen the deletion yet.
	asked := series("connectors_authorization_decisions_total", map[string]string{"reviewer": "proxy_permissions", "decision": "allow", "cache": "miss"})
	before := scrape(t, metricsAddr)[asked]
	create(t, &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "changed", Namespace: ns, Labels: map[string]string{v1alpha1.LabelNode: approval.LabelValue("node-1")}},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: "tool"},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{APIVersion: "v1", Kind: "Pod",
				Name: pod.Name, Namespace: ns, UID: pod.UID}},
		}})
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
