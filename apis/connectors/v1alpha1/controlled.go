package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ControlledBy tells whether obj's controller is the object of this API group of the given kind
// and name. Whoever creates an object writes its owner references, so this names who the object
// claims, not who made it.
func ControlledBy(obj metav1.Object, kind, name string) bool {
	ref := metav1.GetControllerOfNoCopy(obj)
	if ref == nil || ref.Kind != kind || ref.Name != name {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == GroupVersion.Group
}

// ControllerMeta is obj's name, namespace, UID and resourceVersion, and its controller reference
// alone: what a cache that bounds what it keeps keeps of an object's metadata.
func ControllerMeta(obj metav1.Object) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: obj.GetName(), Namespace: obj.GetNamespace(), UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion()}
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		m.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return m
}
