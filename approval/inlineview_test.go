package approval

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestInlineViewShowsIdentityNotSpec(t *testing.T) {
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "build", Namespace: "team-a", UID: "uid-1",
			Labels:      map[string]string{"tekton.dev/pipelineRun": "release-1"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "applied-spec"}},
		Spec: corev1.PodSpec{ServiceAccountName: "builder", Containers: []corev1.Container{{Name: "main", Image: "busybox",
			Env: []corev1.EnvVar{{Name: "TOKEN", Value: "env-value"}}}}},
		Status: corev1.PodStatus{Message: "status-value"},
	}
	podMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pod)
	if err != nil {
		t.Fatal(err)
	}
	connector := map[string]any{"spec": map[string]any{"address": "https://tool"}}
	view := inlineView(map[string]any{"object": podMap, keyConnector: connector, keyPipelineRun: map[string]any{
		"metadata": map[string]any{"name": "release-1"}, "spec": map[string]any{"params": "param-value"}}})
	b, err := json.Marshal(view)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, kept := range []string{`"name":"build"`, `"uid":"uid-1"`, `"tekton.dev/pipelineRun":"release-1"`, `"serviceAccountName":"builder"`,
		`"name":"release-1"`, `"address":"https://tool"`} {
		if !strings.Contains(got, kept) {
			t.Errorf("the inline view lacks %s: %s", kept, got)
		}
	}
	for _, withheld := range []string{"busybox", "env-value", "applied-spec", "status-value", "param-value"} {
		if strings.Contains(got, withheld) {
			t.Errorf("the inline view shows %q: %s", withheld, got)
		}
	}
	if _, ok := podMap["status"]; !ok {
		t.Error("inlineView changed the context it was given")
	}
}
