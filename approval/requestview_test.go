package approval

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestRequestCacheViewKeepsEachPolicySpecOnce: requests recording equal policy specs share one
// in the cache, a different spec is its own; of the annotations only the revocation's is kept.
func TestRequestCacheViewKeepsEachPolicySpecOnce(t *testing.T) {
	view := RequestCacheView()
	spec := func(cel string) *v1alpha1.AccessPolicySpec {
		return &v1alpha1.AccessPolicySpec{Connector: v1alpha1.ConnectorSelector{Names: []string{"prod"}},
			CheckGrantedPermission: &v1alpha1.CheckGrantedPermission{Spec: v1alpha1.CheckGrantedPermissionSpec{
				Checks: []v1alpha1.Check{{Name: "c", Spec: &v1alpha1.CheckSpec{State: &v1alpha1.CheckState{CEL: cel}}}}}}}
	}
	request := func(name string, s *v1alpha1.AccessPolicySpec, annotations map[string]string) *v1alpha1.AccessRequest {
		ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team", Annotations: annotations,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}}
		ar.Status.Policies = []v1alpha1.PolicyStatus{{Name: "p", PolicySpec: s}}
		return ar
	}
	bulky := strings.Repeat("x", 32<<10)
	var kept []*v1alpha1.AccessRequest
	for i, annotations := range []map[string]string{nil, {AnnotationRevoked: "2026-12-07T10:00:00Z", "filler": bulky}, {"filler": bulky}} {
		out, err := view(request(string(rune('a'+i)), spec(`"approved" // `+bulky), annotations))
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, out.(*v1alpha1.AccessRequest))
	}
	first := kept[0].Status.Policies[0].PolicySpec
	for _, ar := range kept[1:] {
		if ar.Status.Policies[0].PolicySpec != first {
			t.Errorf("request %s keeps a copy of an equal policy spec", ar.Name)
		}
	}
	other, _ := view(request("d", spec(`"pending"`), nil))
	if s := other.(*v1alpha1.AccessRequest).Status.Policies[0].PolicySpec; s == first || s.CheckGrantedPermission.Spec.Checks[0].Spec.State.CEL != `"pending"` {
		t.Errorf("a different policy spec was not kept as itself: %+v", s)
	}
	if a := kept[1].Annotations; len(a) != 1 || a[AnnotationRevoked] == "" || kept[2].Annotations != nil || kept[0].ManagedFields != nil {
		t.Errorf("annotations kept: %v and %v, managed fields %v; want the revocation's alone, none, none", a, kept[2].Annotations, kept[0].ManagedFields)
	}
}

// BenchmarkRequestCacheViewHeld reports the heap 1,000 cached requests hold that record one
// policy spec of 64 KiB, each decoded from the API server's JSON as the cache's are, with and
// without the view.
func BenchmarkRequestCacheViewHeld(b *testing.B) {
	spec := &v1alpha1.AccessPolicySpec{CheckGrantedPermission: &v1alpha1.CheckGrantedPermission{Spec: v1alpha1.CheckGrantedPermissionSpec{
		Checks: []v1alpha1.Check{{Name: "c", Spec: &v1alpha1.CheckSpec{State: &v1alpha1.CheckState{CEL: `"approved" // ` + strings.Repeat("x", 64<<10)}}}}}}}
	ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "team"}}
	ar.Status.Policies = []v1alpha1.PolicyStatus{{Name: "p", PolicySpec: spec}}
	raw, err := json.Marshal(ar)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		view func(any) (any, error)
	}{{"whole", func(in any) (any, error) { return in, nil }}, {"view", RequestCacheView()}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				held := make([]any, 1000)
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for i := range held {
					var r v1alpha1.AccessRequest
					if err := json.Unmarshal(raw, &r); err != nil {
						b.Fatal(err)
					}
					held[i], _ = tc.view(&r)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(held)), "heap-B/request")
				runtime.KeepAlive(held)
			}
		})
	}
}
