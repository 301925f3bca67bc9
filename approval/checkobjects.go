package approval

import (
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	toolscache "k8s.io/client-go/tools/cache"
)

// AnnotationTooLarge marks a check object that the controller's cache keeps as a stub (see
// BoundCheckObjects): its value is the object's size in bytes, at least.
const AnnotationTooLarge = "connectors.cpaas.io/check-object-too-large"

// BoundCheckObjects is the cache's transform for the check kinds' objects (unstructured, the
// only unstructured objects it holds): one larger than maxBytes, about as JSON, is kept as a
// stub of its identity and, when they fit, its labels, annotated with AnnotationTooLarge; a
// check that matches it fails, naming the bound. Check kinds are watched cluster-wide, and
// their objects are anyone's to write who may run a pipeline: without it, a tenant's thousand
// ApprovalTasks of 1.5 MiB each would hold the controller's memory, and every tenant's
// approvals with it. A check that matches a stub fails, or, for a request that holds a grant,
// waits and keeps it. Other objects pass as they are; maxBytes ≤ 0 keeps every object whole
// (the flag's 0 is its default).
func BoundCheckObjects(maxBytes int) toolscache.TransformFunc {
	return func(in any) (any, error) {
		u, ok := in.(*unstructured.Unstructured)
		if !ok || maxBytes <= 0 {
			return in, nil
		}
		size := jsonSize(u.Object, maxBytes)
		if size <= maxBytes {
			// The mark is the transform's to set: one written by hand would fail a check with a
			// false reason.
			if _, marked := u.GetAnnotations()[AnnotationTooLarge]; marked {
				annotations := u.GetAnnotations()
				delete(annotations, AnnotationTooLarge)
				u.SetAnnotations(annotations)
			}
			return in, nil
		}
		stub := &unstructured.Unstructured{}
		stub.SetAPIVersion(u.GetAPIVersion())
		stub.SetKind(u.GetKind())
		stub.SetName(u.GetName())
		stub.SetNamespace(u.GetNamespace())
		stub.SetUID(u.GetUID())
		stub.SetResourceVersion(u.GetResourceVersion())
		stub.SetCreationTimestamp(u.GetCreationTimestamp()) // a check's createdSince reads it
		// Kept so that the check's selector still finds the object, and fails, rather than
		// waiting for an object it cannot see.
		if labels := u.GetLabels(); jsonSize(toAny(labels), maxBytes) <= maxBytes {
			stub.SetLabels(labels)
		}
		stub.SetAnnotations(map[string]string{AnnotationTooLarge: strconv.Itoa(size)})
		return stub, nil
	}
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// jsonSize is about the size of v as JSON (every string counted without escapes), counted up
// to a little past limit and no further: the object is not encoded, only walked, and a large
// one only as far as it takes to know.
func jsonSize(v any, limit int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		if n > limit {
			return
		}
		switch v := v.(type) {
		case map[string]any:
			n += 2
			for k, e := range v {
				n += len(k) + 4
				walk(e)
				if n > limit {
					return
				}
			}
		case []any:
			n += 2
			for _, e := range v {
				n++
				walk(e)
				if n > limit {
					return
				}
			}
		case string:
			n += len(v) + 2
		default: // numbers, booleans, null
			n += 8
		}
	}
	walk(v)
	return n
}
