package approval

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// TestReadsGoToTheWatchCacheFirst: an evaluation's read of a Pod (or owner) asks the API
// server's watch cache (resourceVersion 0) and stops there when it holds the object of the UID
// asked for; a miss, or another object of the name, is read again from etcd before anything is
// decided on it (a lagging cache would revoke a grant).
func TestReadsGoToTheWatchCacheFirst(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "now"}}
	for name, tc := range map[string]struct {
		cached *corev1.Pod // what the watch cache holds; nil: nothing
		uid    types.UID
		want   []string // the resource versions asked, in order
	}{
		"held":           {pod, "now", []string{"0"}},
		"held, any UID":  {pod, "", []string{"0"}},
		"not yet held":   {nil, "now", []string{"0", ""}},
		"an earlier Pod": {&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "before"}}, "now", []string{"0", ""}},
	} {
		var asked []string
		r := interceptor.NewClient(fake.NewClientBuilder().WithObjects(pod).Build(), interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				o := &client.GetOptions{}
				o.ApplyOptions(opts)
				rv := ""
				if o.Raw != nil {
					rv = o.Raw.ResourceVersion
				}
				asked = append(asked, rv)
				if rv == "0" {
					if tc.cached == nil {
						return apierrors.NewNotFound(corev1.Resource("pods"), key.Name)
					}
					tc.cached.DeepCopyInto(obj.(*corev1.Pod))
					return nil
				}
				return c.Get(ctx, key, obj, opts...)
			}})
		var got corev1.Pod
		if err := getCacheFirst(context.Background(), r, client.ObjectKeyFromObject(pod), &got, tc.uid); err != nil || got.UID != pod.UID && tc.uid != "" {
			t.Errorf("%s: read %v %v", name, got.UID, err)
		}
		if len(asked) != len(tc.want) || asked[0] != tc.want[0] || len(asked) > 1 && asked[1] != tc.want[1] {
			t.Errorf("%s: asked for resource versions %q, want %q", name, asked, tc.want)
		}
	}
}
