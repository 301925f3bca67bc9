package approval

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// getCacheFirst reads key into obj from the API server's watch cache (resourceVersion 0: no
// read of etcd), and again from etcd when the cache has none of the name, or one whose UID is
// not uid (when set): a watch cache lags by a moment, and neither answer may revoke a grant,
// nor refuse an owner chain, on its word. For an object only read for what its UID fixes (a
// PipelineRun, read at every recheck: at 10,000 live gated Pods about 20 a second, up to a MiB
// each, its spec embedded), not for one whose changes decide (a Pod's end, a TaskRun's).
func getCacheFirst(ctx context.Context, r client.Reader, key types.NamespacedName, obj client.Object, uid types.UID) error {
	err := r.Get(ctx, key, obj, &client.GetOptions{Raw: &metav1.GetOptions{ResourceVersion: "0"}})
	switch {
	case err == nil && (uid == "" || obj.GetUID() == uid):
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	return r.Get(ctx, key, obj)
}
