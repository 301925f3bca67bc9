package e2e

import (
	"context"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestAccessRequestAPI checks the AccessRequest CRD: spec is immutable, kubectl shows the
// columns of SPEC §2.4, and an AccessPolicy check must be a ref or a spec.
func TestAccessRequestAPI(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	ar := &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "prod-registry-build-1", Namespace: ns},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: "prod-registry"},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
				APIVersion: "v1", Kind: "Pod", Name: "build-1-pod", Namespace: ns, UID: "0000-1111"}},
		},
	}
	create(t, ar)
	// Gone with the test: a controller a later test starts would evaluate it (no Pod, no
	// Connector), and spend that test's Event burst on it.
	t.Cleanup(func() { _ = cp.Client.Delete(context.Background(), ar.DeepCopy()) })
	ar.Spec.ConnectorRef.Name = "other"
	if err := cp.Client.Update(ctx, ar); err == nil || !strings.Contains(err.Error(), "spec is immutable") {
		t.Fatalf("changing spec: %v", err)
	}
	out, err := cp.Kubectl(nil, "get", "accessrequests", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"CONNECTOR", "SUBJECT", "POD", "CHECK", "PERMISSION", "AGE"} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get accessrequests lacks %s:\n%s", col, out)
		}
	}
	if !strings.Contains(out, "prod-registry") || !strings.Contains(out, "build-1-pod") {
		t.Errorf("kubectl get accessrequests:\n%s", out)
	}
	bad := &v1alpha1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns},
		Spec: v1alpha1.AccessPolicySpec{CheckGrantedPermission: &v1alpha1.CheckGrantedPermission{Spec: v1alpha1.CheckGrantedPermissionSpec{
			Checks:       []v1alpha1.Check{{Name: "neither"}},
			RoleTemplate: v1alpha1.RoleTemplate{Ref: v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-use-connectors-proxy"}}},
		}}},
	}
	if err := cp.Client.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "set exactly one of ref and spec") {
		t.Fatalf("a check with neither ref nor spec: %v", err)
	}
}
