package approval

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestARequestsPodIsReadFromTheWatchCacheAndConfirmedBeforeARevocation: a recheck reads the
// Pod from the API server's watch cache (resourceVersion 0), not etcd; what would revoke the
// request there (the Pod not found, another UID: the cache may lag) is read again, consistently,
// and that read decides.
func TestARequestsPodIsReadFromTheWatchCacheAndConfirmedBeforeARevocation(t *testing.T) {
	scheme := testScheme(t)
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "build", UID: "live"}}
	ar := &v1alpha1.AccessRequest{Spec: v1alpha1.AccessRequestSpec{Context: v1alpha1.AccessContext{
		ObjectRef: v1alpha1.ContextObjectRef{Kind: "Pod", Namespace: "team", Name: "build", UID: "live"}}}}
	for _, tc := range []struct {
		name        string
		cached      *corev1.Pod // nil: not in the watch cache yet
		wantReads   []string
		wantRevoked bool
	}{
		{"the cache has the Pod", pod, []string{"0"}, false},
		{"the cache lags: no Pod yet", nil, []string{"0", ""}, false},
		{"the cache lags: an earlier Pod of the name", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "build", UID: "earlier"}}, []string{"0", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reads []string
			reader := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).WithObjects(pod.DeepCopy()).Build(), interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					o := (&client.GetOptions{}).ApplyOptions(opts)
					version := ""
					if o.Raw != nil {
						version = o.Raw.ResourceVersion
					}
					reads = append(reads, version)
					if version == "0" {
						if tc.cached == nil {
							return apierrors.NewNotFound(corev1.Resource("pods"), key.Name)
						}
						tc.cached.DeepCopyInto(obj.(*corev1.Pod))
						return nil
					}
					return c.Get(ctx, key, obj, opts...)
				},
			})
			c := &Controller{Reader: reader}
			got, err := c.readPod(context.Background(), ar, nil)
			if revoked := revocation(ar, got, err, nil) != ""; revoked != tc.wantRevoked || len(reads) != len(tc.wantReads) {
				t.Fatalf("reads with resourceVersions %q, revoked %v; want %q, %v", reads, revoked, tc.wantReads, tc.wantRevoked)
			}
			for i := range reads {
				if reads[i] != tc.wantReads[i] {
					t.Fatalf("reads with resourceVersions %q, want %q", reads, tc.wantReads)
				}
			}
		})
	}
	deleted := &Controller{Reader: fake.NewClientBuilder().WithScheme(scheme).Build()}
	got, err := deleted.readPod(context.Background(), ar, nil)
	if revocation(ar, got, err, nil) == "" {
		t.Error("a Pod deleted: not revoked")
	}
}
