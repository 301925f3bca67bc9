package approval

import (
	"context"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestARevokedRequestIsLookedAtAgainSoon: a revocation comes back within lateGrantSweep, not
// after the retention, so that a grant a former leader writes between the revocation's delete
// and its status (which no event brings back) goes then.
func TestARevokedRequestIsLookedAtAgainSoon(t *testing.T) {
	c := &Controller{Client: fake.NewClientBuilder().WithScheme(testScheme(t)).Build(), Retention: 24 * time.Hour}
	ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "request"}}
	res, err := c.revoke(context.Background(), ar, "the Pod was deleted")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > lateGrantSweep {
		t.Errorf("revoked, back in %s; want within %s", res.RequeueAfter, lateGrantSweep)
	}
}

// testScheme knows this API's kinds and RBAC's, for the fake clients of these tests.
func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1alpha1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return scheme
}
