package approval

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Template context keys of a Pod's Tekton owners. They are present only when the owner chain
// verifies, so that a check can rely on them: whoever creates a Pod sets its labels (and could
// name any PipelineRun there), but not the UID of an object the API server made.
const (
	keyTaskRun     = "taskRun"
	keyPipelineRun = "pipelineRun"
)

// tektonGroup is the API group of Tekton's TaskRun and PipelineRun.
const tektonGroup = "tekton.dev"

// ownerChainKeys are the context keys present only for Pods in a verified owner chain, with
// what a Pod without them is not run by.
var ownerChainKeys = map[string]string{
	keyTaskRun:     "a TaskRun",
	keyPipelineRun: "a TaskRun of a PipelineRun",
}

// tektonOwners returns the Pod's TaskRun and that TaskRun's PipelineRun as template context
// entries: each the controller ownerReference of the one before, read from the API server
// (the PipelineRun from its watch cache first: getCacheFirst) and kept only when its UID is the
// one the reference names, and the TaskRun only
// when it records no other Pod as its own (recordsPod). An entry is missing when its link does
// not verify.
func tektonOwners(ctx context.Context, r client.Reader, pod *corev1.Pod) (map[string]any, error) {
	out := map[string]any{}
	// The TaskRun from etcd: its record of its Pod and its end change, and a watch cache's
	// stale copy would let a bare Pod of a finished run's Pod's name borrow its approval. The
	// PipelineRun (up to a MiB, its spec embedded, at every recheck) from the watch cache
	// first: it is asked for by UID, which its name cannot be given again with.
	taskRun, err := verifiedOwner(ctx, r, pod.Namespace, pod, "TaskRun", false)
	if err != nil || taskRun == nil || !recordsPod(taskRun, pod.Name) {
		return out, err
	}
	out[keyTaskRun] = taskRun.Object
	pipelineRun, err := verifiedOwner(ctx, r, pod.Namespace, taskRun, "PipelineRun", true)
	if err != nil || pipelineRun == nil {
		return out, err
	}
	out[keyPipelineRun] = pipelineRun.Object
	return out, nil
}

// verifiedOwner reads the object's controller owner of a Tekton kind; nil when there is none,
// it does not exist, or its UID differs from the reference's.
func verifiedOwner(ctx context.Context, r client.Reader, namespace string, obj metav1.Object, kind string, cacheFirst bool) (*unstructured.Unstructured, error) {
	ref := metav1.GetControllerOfNoCopy(obj)
	if ref == nil || ref.Kind != kind {
		return nil, nil
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil || gv.Group != tektonGroup {
		return nil, nil
	}
	owner := &unstructured.Unstructured{}
	owner.SetGroupVersionKind(gv.WithKind(kind))
	key := types.NamespacedName{Namespace: namespace, Name: ref.Name}
	if cacheFirst {
		err = getCacheFirst(ctx, r, key, owner, ref.UID)
	} else {
		err = r.Get(ctx, key, owner)
	}
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read %s %s/%s, owner of %s: %w", kind, namespace, ref.Name, obj.GetName(), err)
	case owner.GetUID() != ref.UID:
		return nil, nil
	}
	return owner, nil
}

// recordsPod tells whether taskRun, still running (no status.completionTime), records pod as its
// own (status.podName, which Tekton writes through the status subresource once it made the
// Pod), or records none yet. The Pod's ownerReference alone proves nothing: whoever may create
// Pods and read the TaskRun (its UID) could give a bare Pod of theirs that reference, and
// borrow the run's approval; and once the run is over, its Pod deleted, a bare Pod of that
// name could, again and again.
func recordsPod(taskRun *unstructured.Unstructured, pod string) bool {
	if done, _, _ := unstructured.NestedString(taskRun.Object, "status", "completionTime"); done != "" {
		return false
	}
	recorded, _, _ := unstructured.NestedString(taskRun.Object, "status", "podName")
	return recorded == "" || recorded == pod
}

// notInOwnerChain is the error of a template that reads an owner the Pod does not have.
type notInOwnerChain struct{ key string }

func (e *notInOwnerChain) Error() string {
	return fmt.Sprintf("the Pod is not run by %s (owner chain checked by UID)", ownerChainKeys[e.key])
}
