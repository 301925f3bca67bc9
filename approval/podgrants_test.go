package approval

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

func TestGrantOwner(t *testing.T) {
	request := func(connector, pod, uid, sync string) v1alpha1.AccessRequest {
		ar := v1alpha1.AccessRequest{Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: connector},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", Namespace: "team", Name: pod, UID: types.UID(uid)}}}}
		if sync != "" {
			ar.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionTrue, Reason: sync}}
		}
		return ar
	}
	cases := []struct {
		name             string
		requests         []v1alpha1.AccessRequest
		foreign, settled bool
	}{
		{"no request: a grant by hand", nil, false, false},
		{"the Pod's own granted request", []v1alpha1.AccessRequest{request("git", "build", "new", v1alpha1.ReasonSynced)}, false, true},
		{"an earlier Pod's granted request", []v1alpha1.AccessRequest{request("git", "build", "old", v1alpha1.ReasonSynced)}, true, false},
		{"an earlier Pod's grant written in part", []v1alpha1.AccessRequest{request("git", "build", "old", v1alpha1.ReasonSyncFailed)}, true, false},
		{"an earlier Pod's revoked request", []v1alpha1.AccessRequest{request("git", "build", "old", v1alpha1.ReasonPermissionCleanUp)}, false, false},
		{"an earlier Pod's request never evaluated", []v1alpha1.AccessRequest{request("git", "build", "old", "")}, false, false},
		{"an earlier Pod's request rejected", []v1alpha1.AccessRequest{request("git", "build", "old", v1alpha1.ReasonNoPermissionRequired)}, false, false},
		{"an earlier Pod's request being granted", []v1alpha1.AccessRequest{request("git", "build", "old", v1alpha1.ReasonGranting)}, true, false},
		{"an earlier Pod's grant kept while a check is pending again", []v1alpha1.AccessRequest{request("git", "build", "old", v1alpha1.ReasonPending)}, true, false},
		{"the own grant wins over an earlier one", []v1alpha1.AccessRequest{
			request("git", "build", "old", v1alpha1.ReasonSynced), request("git", "build", "new", v1alpha1.ReasonSynced)}, false, true},
		{"the own request still pending", []v1alpha1.AccessRequest{
			request("git", "build", "old", v1alpha1.ReasonSynced), request("git", "build", "new", "")}, true, false},
		{"an earlier Pod's grant for another Connector", []v1alpha1.AccessRequest{request("registry", "build", "old", v1alpha1.ReasonSynced)}, true, false},
		{"the Pod's own grant for another Connector", []v1alpha1.AccessRequest{request("registry", "build", "new", v1alpha1.ReasonSynced)}, false, false},
		{"a request labelled for the Pod but of another", []v1alpha1.AccessRequest{request("git", "other", "old", v1alpha1.ReasonSynced)}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			foreign, settled := grantOwner(tc.requests, "git", "team", "build", "new")
			if foreign != tc.foreign || settled != tc.settled {
				t.Fatalf("grantOwner = foreign %v, settled %v; want %v, %v", foreign, settled, tc.foreign, tc.settled)
			}
		})
	}
}

// TestPodGrantsReadsConsistently: when this node's cache does not settle it, the requests are
// read with a consistent read (no resourceVersion): the status the controller wrote before the
// grant the proxy was just allowed by must be seen, which the watch cache as it happens to be
// (resourceVersion 0) does not promise.
func TestPodGrantsReadsConsistently(t *testing.T) {
	scheme := testScheme(t)
	earlier := v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "git-build-old", Labels: podLabels("team", "build")},
		Spec: v1alpha1.AccessRequestSpec{ConnectorRef: v1alpha1.LocalObjectRef{Name: "git"},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", Namespace: "team", Name: "build", UID: "old"}}},
		Status: v1alpha1.AccessRequestStatus{Conditions: []metav1.Condition{{Type: v1alpha1.ConditionAccessPermissionSync, Status: metav1.ConditionUnknown, Reason: v1alpha1.ReasonGranting}}},
	}
	var versions []string
	live := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).WithObjects(&earlier).Build(), interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			o := (&client.ListOptions{}).ApplyOptions(opts)
			version := ""
			if o.Raw != nil {
				version = o.Raw.ResourceVersion
			}
			versions = append(versions, version)
			return c.List(ctx, list, opts...)
		},
	})
	g := &PodGrants{Local: fake.NewClientBuilder().WithScheme(scheme).Build(), Live: live}
	foreign, err := g.OfAnotherPod(context.Background(), types.NamespacedName{Namespace: "team", Name: "git"}, "team", "build", "new")
	if err != nil {
		t.Fatal(err)
	}
	if !foreign {
		t.Fatal("an earlier Pod's request being granted: not foreign")
	}
	if len(versions) != 1 || versions[0] != "" {
		t.Fatalf("the requests were listed with resourceVersions %q, want one consistent read (\"\")", versions)
	}
}
