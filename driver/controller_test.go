package driver

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// TestControllerCacheKeepsOnlyWhatItReads: the labels that select the controller's cache of
// Roles, RoleBindings and Services, and the owner references, are anyone's who may create those
// to write. Through a real API server and the controller's cache options, of an object that may
// be the controller's (an AccessRequest's grant, named as the request; a Connector's host
// Service, c-<name>) and is no larger than what the controller writes, the cache keeps what the
// controller reads (content and controller, not labels nor annotations); any other labelled
// object — padded with rules, subjects, ports and annotations, claiming an owner under another
// name or API group, or named and owned as a grant but larger — is kept as a stub that says
// only that it exists; a host Service of its own given many ports is kept with two; a Connector
// is kept without kubectl's copy of its last applied spec.
func TestControllerCacheKeepsOnlyWhatItReads(t *testing.T) {
	cp, err := controlplane.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	const ns = "tenant"
	if err := cp.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}

	rulesOf := func(n int) []rbacv1.PolicyRule {
		names := make([]string, n)
		for i := range names {
			names[i] = strings.Repeat("n", 40)
		}
		return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}, ResourceNames: names}}
	}
	// A grant's rules, and more than the cache keeps of one (about four role templates' output).
	rules, padded := rulesOf(10), rulesOf(6000)
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: ns}}
	roleRef := func(name string) rbacv1.RoleRef {
		return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
	}
	grant, host := map[string]string{approval.LabelGrant: "true"}, map[string]string{connectorstatus.LabelHostService: "true"}
	padding := map[string]string{"padding": strings.Repeat("x", 200<<10)}
	meta := func(name string, labels map[string]string, owner *metav1.OwnerReference) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: padding}
		if owner != nil {
			m.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		return m
	}
	owner := func(apiVersion, kind, name string) *metav1.OwnerReference {
		return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: ptr.To(true)}
	}
	request := func(name string) *metav1.OwnerReference {
		return owner(v1alpha1.GroupVersion.String(), "AccessRequest", name)
	}
	service := func(m metav1.ObjectMeta, ports int) *corev1.Service {
		svc := &corev1.Service{ObjectMeta: m, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "proxy.example"}}
		for i := range ports {
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(80 + i), Protocol: corev1.ProtocolTCP})
		}
		return svc
	}
	cases := []struct {
		obj   client.Object
		whole bool
	}{
		{&rbacv1.Role{ObjectMeta: meta("req-1", grant, request("req-1")), Rules: rules}, true},
		{&rbacv1.RoleBinding{ObjectMeta: meta("req-1", grant, request("req-1")), RoleRef: roleRef("req-1"), Subjects: subjects}, true},
		{&rbacv1.Role{ObjectMeta: meta("padded", grant, nil), Rules: padded}, false},
		{&rbacv1.Role{ObjectMeta: meta("claims-req-1", grant, request("req-1")), Rules: rules}, false},
		{&rbacv1.Role{ObjectMeta: meta("another-group", grant, owner("example.com/v1", "AccessRequest", "another-group")), Rules: rules}, false},
		{&rbacv1.RoleBinding{ObjectMeta: meta("policy", grant, owner(v1alpha1.GroupVersion.String(), "AccessPolicy", "policy")), RoleRef: roleRef("policy"), Subjects: subjects}, false},
		// Named and owned as a request's grant (a tenant can read its requests' names and UIDs),
		// and larger than any the controller writes.
		{&rbacv1.Role{ObjectMeta: meta("req-2", grant, request("req-2")), Rules: padded}, false},
		{&rbacv1.RoleBinding{ObjectMeta: meta("req-2", grant, request("req-2")), RoleRef: roleRef("req-2"), Subjects: append(subjects, subjects...)}, false},
		{service(meta("c-git", host, owner(v1alpha1.GroupVersion.String(), "Connector", "git")), 1), true},
		{service(meta("c-other", host, owner(v1alpha1.GroupVersion.String(), "Connector", "git")), 1), false},
		// Its own, given more ports: kept with two (it then compares unequal, and is patched).
		{service(meta("c-ports", host, owner(v1alpha1.GroupVersion.String(), "Connector", "ports")), 100), true},
		{service(meta("padded", host, nil), 1), false},
	}
	for _, c := range cases {
		if err := cp.Client.Create(ctx, c.obj); err != nil {
			t.Fatalf("create %T %s: %v", c.obj, c.obj.GetName(), err)
		}
	}
	unlabelled := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "unlabelled", Namespace: ns}, Rules: rules}
	if err := cp.Client.Create(ctx, unlabelled); err != nil {
		t.Fatal(err)
	}
	// kubectl's copy of a Connector's last applied spec, which its bound does not count.
	applied := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "applied", Namespace: ns,
		Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: strings.Repeat("x", 200<<10), "kept": "yes"}},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "git", Address: "https://git.example"}}
	if err := cp.Client.Create(ctx, applied); err != nil {
		t.Fatal(err)
	}

	opts := cacheOptions("connectors-system", 1<<20)
	opts.Scheme = cp.Client.Scheme()
	objects, err := cache.New(cp.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = objects.Start(ctx) }()
	for _, kind := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}, &corev1.Service{}, &v1alpha1.Connector{}} {
		if _, err := objects.GetInformer(ctx, kind); err != nil {
			t.Fatal(err)
		}
	}
	if !objects.WaitForCacheSync(ctx) {
		t.Fatal("the cache did not sync")
	}

	for _, c := range cases {
		got := c.obj.DeepCopyObject().(client.Object)
		if err := objects.Get(ctx, client.ObjectKeyFromObject(c.obj), got); err != nil {
			t.Fatalf("%T %s not in the cache: %v", c.obj, c.obj.GetName(), err)
		}
		if got.GetUID() != c.obj.GetUID() || got.GetResourceVersion() != c.obj.GetResourceVersion() {
			t.Errorf("%T %s: cached as UID %s at %s, is %s at %s", c.obj, c.obj.GetName(), got.GetUID(), got.GetResourceVersion(), c.obj.GetUID(), c.obj.GetResourceVersion())
		}
		if c.whole {
			if got.GetLabels() != nil || got.GetAnnotations() != nil || len(got.GetManagedFields()) != 0 || !sameContent(got, c.obj) {
				t.Errorf("%T %s may be the controller's: want what the controller reads of it (content, controller), and no labels, annotations or managed fields", c.obj, c.obj.GetName())
			}
			continue
		}
		if got.GetLabels() != nil || got.GetAnnotations() != nil || got.GetOwnerReferences() != nil || len(got.GetManagedFields()) != 0 || !isStub(got) {
			t.Errorf("%T %s is not the controller's and was kept with more than its name (%d labels, %d annotations, %d owners)",
				c.obj, c.obj.GetName(), len(got.GetLabels()), len(got.GetAnnotations()), len(got.GetOwnerReferences()))
		}
	}
	err = objects.Get(ctx, client.ObjectKeyFromObject(unlabelled), &rbacv1.Role{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("an unlabelled Role: %v, want not found", err)
	}
	var cached v1alpha1.Connector
	if err := objects.Get(ctx, client.ObjectKeyFromObject(applied), &cached); err != nil {
		t.Fatal(err)
	}
	if _, kept := cached.Annotations[corev1.LastAppliedConfigAnnotation]; kept || cached.Annotations["kept"] != "yes" || len(cached.ManagedFields) != 0 {
		t.Errorf("a Connector cached with annotations %v and %d managed fields: want kubectl's last applied copy and the managed fields dropped, the rest kept",
			len(cached.Annotations), len(cached.ManagedFields))
	}
}

// sameContent tells whether got has want's controller and content.
func sameContent(got, want client.Object) bool {
	if !reflect.DeepEqual(got.GetOwnerReferences(), want.GetOwnerReferences()) {
		return false
	}
	switch g := got.(type) {
	case *rbacv1.Role:
		return len(g.Rules) == 1 && len(g.Rules[0].ResourceNames) == len(want.(*rbacv1.Role).Rules[0].ResourceNames)
	case *rbacv1.RoleBinding:
		w := want.(*rbacv1.RoleBinding)
		return g.RoleRef == w.RoleRef && len(g.Subjects) == len(w.Subjects)
	case *corev1.Service:
		w := want.(*corev1.Service)
		return g.Spec.ExternalName == w.Spec.ExternalName && g.Spec.Type == w.Spec.Type && reflect.DeepEqual(g.Spec.Ports, w.Spec.Ports[:min(len(w.Spec.Ports), 2)])
	}
	return false
}

// isStub tells whether obj keeps no content of its kind.
func isStub(obj client.Object) bool {
	switch o := obj.(type) {
	case *rbacv1.Role:
		return o.Rules == nil
	case *rbacv1.RoleBinding:
		return o.Subjects == nil && o.RoleRef == rbacv1.RoleRef{}
	case *corev1.Service:
		return o.Spec.ExternalName == "" && o.Spec.Type == ""
	}
	return false
}
