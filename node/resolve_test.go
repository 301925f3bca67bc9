package node

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// A ConnectorClass the informer cache has not seen yet (applied with its Connector and the
// Pod) is read from the API server; one that exists in neither is NotFound, naming it.
func TestResolveReadsAClassTheCacheHasNotSeen(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	connector := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "git"},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "new-class"}}
	class := &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: "new-class"}}
	reader := func(objs ...client.Object) client.Reader {
		return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	}
	nn := types.NamespacedName{Namespace: "team", Name: "git"}
	for _, tc := range []struct {
		name string
		live client.Reader
		want codes.Code
	}{
		{"read live", reader(connector, class), codes.OK},
		{"no live reader", nil, codes.NotFound},
		{"nowhere", reader(connector), codes.NotFound},
	} {
		s := NewServer(Server{Objects: reader(connector), LiveClasses: tc.live})
		src, err := s.resolve(context.Background(), nn, false)
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && src.Class.Name != "new-class" {
			t.Errorf("%s: class %q, want new-class", tc.name, src.Class.Name)
		}
		if err != nil && !strings.Contains(err.Error(), `ConnectorClass "new-class" of Connector team/git not found`) {
			t.Errorf("%s: %v, want it to name the class and the Connector", tc.name, err)
		}
	}
}
