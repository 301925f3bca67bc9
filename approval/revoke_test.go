package approval

import (
	"context"
	"slices"
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

// TestFinishedRequestsAreOrderedAsTheyEndedThenAsCreated: the end of a request is recorded in
// whole seconds, so requests that ended in one second are ordered by their creation, and
// then by name.
func TestFinishedRequestsAreOrderedAsTheyEndedThenAsCreated(t *testing.T) {
	at := func(name string, ended, created time.Time) *v1alpha1.AccessRequest {
		ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
		ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, LastTransitionTime: metav1.NewTime(ended)}}
		return ar
	}
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	requests := []*v1alpha1.AccessRequest{
		at("ended-last", t0.Add(2*time.Second), t0),
		at("created-second", t0.Add(time.Second), t0.Add(time.Second)),
		at("created-first", t0.Add(time.Second), t0),
		at("b-created-first", t0.Add(time.Second), t0),
	}
	slices.SortFunc(requests, olderFirst)
	var names []string
	for _, ar := range requests {
		names = append(names, ar.Name)
	}
	if want := []string{"b-created-first", "created-first", "created-second", "ended-last"}; !slices.Equal(names, want) {
		t.Errorf("%v, want %v", names, want)
	}
}
