package approval

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestBoundCheckObjectsKeepsStubsOfLargeObjects: a check object over the bound is kept as its
// identity and labels (when they fit), marked with its size; a smaller one, and any object
// that is not unstructured, pass whole.
func TestBoundCheckObjectsKeepsStubsOfLargeObjects(t *testing.T) {
	bound := BoundCheckObjects(1024)
	object := func(labels map[string]any, payload int) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Vote",
			"metadata": map[string]any{"name": "v", "namespace": "team", "uid": "u1", "resourceVersion": "7", "labels": labels,
				"creationTimestamp": "2026-12-07T10:00:00Z"},
			"status": map[string]any{"state": "approved", "note": strings.Repeat("x", payload), "items": []any{int64(1), true, nil}}}}
	}
	small := object(map[string]any{"run": "r1"}, 10)
	if out, _ := bound(small); out != small {
		t.Errorf("a small object was not kept whole: %v", out)
	}
	out, _ := bound(object(map[string]any{"run": "r1"}, 2000))
	stub := out.(*unstructured.Unstructured)
	if stub.GetName() != "v" || stub.GetNamespace() != "team" || string(stub.GetUID()) != "u1" || stub.GetResourceVersion() != "7" ||
		stub.GetKind() != "Vote" || stub.GetLabels()["run"] != "r1" || stub.GetCreationTimestamp().UTC().Format(time.RFC3339) != "2026-12-07T10:00:00Z" {
		t.Errorf("the stub lost the object's identity or labels: %v", stub.Object)
	}
	if stub.GetAnnotations()[AnnotationTooLarge] == "" || stub.Object["status"] != nil {
		t.Errorf("the stub is not marked, or kept the status: %v", stub.Object)
	}
	out, _ = bound(object(map[string]any{"run": strings.Repeat("r", 2000)}, 10))
	if stub := out.(*unstructured.Unstructured); len(stub.GetLabels()) != 0 || stub.GetAnnotations()[AnnotationTooLarge] == "" {
		t.Errorf("labels over the bound were kept: %v", stub.Object)
	}
	marked := object(map[string]any{"run": "r1"}, 10)
	marked.SetAnnotations(map[string]string{AnnotationTooLarge: "1", "kept": "yes"})
	if out, _ := bound(marked); out.(*unstructured.Unstructured).GetAnnotations()[AnnotationTooLarge] != "" ||
		out.(*unstructured.Unstructured).GetAnnotations()["kept"] != "yes" {
		t.Errorf("a small object keeps a mark written by hand: %v", out)
	}
	pod := &corev1.Pod{}
	if out, _ := bound(pod); out != pod {
		t.Error("a typed object was changed")
	}
}
