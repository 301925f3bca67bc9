package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// TestAGrantIsRecordedBeforeItIsWritten: the proxy tells whose a Pod-scoped grant is by the
// requests' statuses (approval.PodGrants), so the controller records that a request is being
// granted before its grant exists, and reads the Pod again after that: a Pod replaced by another
// of its name while its checks were read (a forced delete) gets no grant, which the new Pod
// could otherwise use until the controller's next look. The real controller against the real
// API server; its client is wrapped to see the order of its writes and to replace the Pod at
// the one moment that matters.
func TestAGrantIsRecordedBeforeItIsWritten(t *testing.T) {
	setupApproval(t)
	env := startProxyDriver(t, func(o *driver.Options) { o.Role = driver.RoleNode })
	ns := newNamespace(t)
	pipelineGate(t, ns)
	attrs := map[string]string{"connectors": "prod"}

	var mu sync.Mutex
	var failures []error
	// reasonAtGrant: a request's AccessPermissionSync reason, as the API server has it, when its
	// grant's first object was first written.
	reasonAtGrant := map[string]string{}
	// replace: Pods (by name) replaced by a new Pod of the name once their request records that
	// it is being granted.
	replace := map[string]bool{}
	// stale: requests the controller's cache is made to lag on (it reads these copies);
	// roleCreates: the Roles it created, by name; conflicts: its status writes refused for a stale
	// resourceVersion, by request name.
	stale := map[types.NamespacedName]*v1alpha1.AccessRequest{}
	roleCreates, conflicts := map[string]int{}, map[string]int{}
	// undeletable: grants (by name) whose deletion fails, and how often it was tried.
	undeletable := map[string]int{}
	// statusWrites: the AccessPermissionSync reasons of each request's status writes that the
	// API server took, in order.
	statusWrites := map[string][]string{}
	grantWritten := func(ctx context.Context, obj client.Object) {
		if _, ok := obj.(*rbacv1.Role); !ok {
			return
		}
		if obj.GetUID() == "" {
			mu.Lock()
			roleCreates[obj.GetName()]++
			mu.Unlock()
		}
		var ar v1alpha1.AccessRequest
		reason := "the request could not be read"
		if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(obj), &ar); err == nil {
			reason = syncReason(&ar)
		}
		mu.Lock()
		defer mu.Unlock()
		if _, seen := reasonAtGrant[obj.GetName()]; !seen {
			reasonAtGrant[obj.GetName()] = reason
		}
	}
	// replaceOnRecord replaces a due Pod when its request's status is written with every check
	// passed and no grant yet: the write the controller makes just before granting.
	replaceOnRecord := func(ctx context.Context, obj client.Object) {
		ar, ok := obj.(*v1alpha1.AccessRequest)
		if !ok || syncReason(ar) == v1alpha1.ReasonSynced ||
			!meta.IsStatusConditionTrue(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady) {
			return
		}
		ref := ar.Spec.Context.ObjectRef
		mu.Lock()
		due := replace[ref.Name]
		delete(replace, ref.Name)
		mu.Unlock()
		if !due {
			return
		}
		err := replacePod(ctx, env, ref.Namespace, ref.Name)
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	startApprovalController(t, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			mu.Lock()
			old, lags := stale[key]
			mu.Unlock()
			if ar, ok := obj.(*v1alpha1.AccessRequest); ok && lags {
				old.DeepCopyInto(ar)
				return nil
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			mu.Lock()
			tries, refused := undeletable[obj.GetName()]
			if refused {
				undeletable[obj.GetName()] = tries + 1
			}
			mu.Unlock()
			if refused {
				return apierrors.NewServiceUnavailable("the test refuses this delete")
			}
			return c.Delete(ctx, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			grantWritten(ctx, obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			grantWritten(ctx, obj)
			return c.Update(ctx, obj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			err := c.SubResource(sub).Update(ctx, obj, opts...)
			if ar, ok := obj.(*v1alpha1.AccessRequest); ok && err == nil {
				mu.Lock()
				statusWrites[ar.Name] = append(statusWrites[ar.Name], syncReason(ar))
				mu.Unlock()
			}
			if err != nil {
				if apierrors.IsConflict(err) {
					mu.Lock()
					conflicts[obj.GetName()]++
					mu.Unlock()
				}
				return err
			}
			replaceOnRecord(ctx, obj)
			return nil
		},
	}, nil)
	requestOf := func(pod *corev1.Pod) types.NamespacedName {
		return types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
	}

	// grantedPod makes a Pod of an approved PipelineRun and publishes its volume.
	grantedPod := func(t *testing.T, run string) *corev1.Pod {
		t.Helper()
		approvalTask(t, ns, run, "approved")
		pod := pipelineRunPod(t, env.kubelet, ns, run, "promote", attrs)
		if err := publishOutcome(t, env, pod); err != nil {
			t.Fatalf("the Pod of the approved PipelineRun: %v", err)
		}
		return pod
	}
	wantRecordedFirst := func(t *testing.T, request string) {
		t.Helper()
		mu.Lock()
		got, written := reasonAtGrant[request]
		mu.Unlock()
		if !written || got != v1alpha1.ReasonGranting {
			t.Fatalf("when the grant was written its request said AccessPermissionSync reason %q (written %v), want %q", got, written, v1alpha1.ReasonGranting)
		}
	}

	// wantNoGrantForTheReplaced: the request, whose Pod was replaced as it was about to be
	// granted, is revoked, saying why, and was never granted.
	wantNoGrantForTheReplaced := func(t *testing.T, key types.NamespacedName) {
		t.Helper()
		waitRevoked(t, key)
		mu.Lock()
		defer mu.Unlock()
		if err := errors.Join(failures...); err != nil || len(failures) != 1 {
			t.Fatalf("the Pod was replaced %d times (want once): %v", len(failures), err)
		}
		failures = nil
		if reason, written := reasonAtGrant[key.Name]; written {
			t.Fatalf("a grant was written for the replaced Pod (its request said %q then)", reason)
		}
		var ar v1alpha1.AccessRequest
		if err := cp.Client.Get(context.Background(), key, &ar); err != nil {
			t.Fatal(err)
		}
		want := "was deleted before its grant was written"
		if ready := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionReady); ready == nil || !strings.Contains(ready.Message, want) {
			t.Fatalf("the revoked request's Ready: %+v, want a message saying %q", ready, want)
		}
	}

	t.Run("the status says so before the grant exists", func(t *testing.T) {
		wantRecordedFirst(t, requestOf(grantedPod(t, "release-1")).Name)
	})

	t.Run("a pending request approved after its Pod was replaced gets no grant", func(t *testing.T) {
		approvalTask(t, ns, "release-3", "pending")
		pod := pipelineRunPod(t, env.kubelet, ns, "release-3", "promote", attrs)
		t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
		// The publish makes the request and waits for it, in vain while the task is pending.
		if err := env.kubelet.Publish(context.Background(), pod, "connectors"); status.Code(err) != codes.Unavailable {
			t.Fatalf("publish while the ApprovalTask is pending: %v, want Unavailable", err)
		}
		key := requestOf(pod)
		request := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name}}
		waitObjectCondition(t, request, func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions },
			v1alpha1.ConditionAccessPermissionSync, metav1.ConditionUnknown, v1alpha1.ReasonPending)
		mu.Lock()
		replace[pod.Name] = true
		mu.Unlock()
		approvalTask(t, ns, "release-3", "approved")
		wantNoGrantForTheReplaced(t, key)
	})

	t.Run("a cache that lags does not bring a revoked grant back", func(t *testing.T) {
		pod := grantedPod(t, "release-4")
		key := requestOf(pod)
		var granted v1alpha1.AccessRequest
		if err := cp.Client.Get(context.Background(), key, &granted); err != nil {
			t.Fatal(err)
		}
		// The volume goes (the Pod stays): the grant is revoked.
		if err := env.kubelet.Unpublish(context.Background(), pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		waitRevoked(t, key)
		// The controller's cache still has the request as granted, before its annotation and
		// revocation, when the request is next evaluated.
		mu.Lock()
		stale[key], roleCreates[key.Name], conflicts[key.Name] = &granted, 0, 0
		mu.Unlock()
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"e2e-touched":"true"}}}`))
		if err := cp.Client.Patch(context.Background(), &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}, patch); err != nil {
			t.Fatal(err)
		}
		if !kubelet.WaitUntil(20*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return conflicts[key.Name] > 0 || roleCreates[key.Name] > 0
		}) {
			t.Fatal("the controller never evaluated the stale copy (neither was a status write refused nor a Role created)")
		}
		mu.Lock()
		delete(stale, key)
		created := roleCreates[key.Name]
		mu.Unlock()
		if created != 0 {
			t.Errorf("the controller created the revoked request's Role again %d times from a stale copy", created)
		}
		for _, obj := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			if err := cp.Client.Get(context.Background(), key, obj); !apierrors.IsNotFound(err) {
				t.Errorf("the %T of revoked AccessRequest %s is back: %v", obj, key, err)
			}
		}
	})

	t.Run("a rejection says the grant is gone only once it is", func(t *testing.T) {
		pod := grantedPod(t, "release-5")
		key := requestOf(pod)
		mu.Lock()
		undeletable[key.Name] = 0
		mu.Unlock()
		approvalTask(t, ns, "release-5", "rejected")
		if !kubelet.WaitUntil(20*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return undeletable[key.Name] >= 2 // the first try, and one after it was requeued
		}) {
			t.Fatal("the controller never tried to delete the rejected request's grant")
		}
		var ar v1alpha1.AccessRequest
		if err := cp.Client.Get(context.Background(), key, &ar); err != nil {
			t.Fatal(err)
		}
		if got := syncReason(&ar); got != v1alpha1.ReasonSynced {
			t.Fatalf("with its grant still there, the rejected request says AccessPermissionSync reason %q, want %q until it is deleted", got, v1alpha1.ReasonSynced)
		}
		mu.Lock()
		delete(undeletable, key.Name)
		mu.Unlock()
		request := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name}}
		waitObjectCondition(t, request, func(ar *v1alpha1.AccessRequest) []metav1.Condition { return ar.Status.Conditions },
			v1alpha1.ConditionAccessPermissionSync, metav1.ConditionFalse, v1alpha1.ReasonNoPermissionRequired)
		if err := cp.Client.Get(context.Background(), key, &rbacv1.RoleBinding{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the rejected request's RoleBinding: %v, want it deleted", err)
		}
	})

	t.Run("a grant that cannot be written is tried again at the backoff's pace", func(t *testing.T) {
		approvalTask(t, ns, "release-6", "approved")
		pod := pipelineRunPod(t, env.kubelet, ns, "release-6", "promote", attrs)
		key := requestOf(pod)
		// An administrator's Role of the request's name: never written over (SyncFailed).
		create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name}})
		t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
		go func() { _ = env.kubelet.Publish(context.Background(), pod, "connectors") }()
		var writes []string
		if !kubelet.WaitUntil(20*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			writes = slices.Clone(statusWrites[key.Name])
			failed := slices.Index(writes, v1alpha1.ReasonSyncFailed)
			return failed >= 0 && len(writes)-failed > 3 // tried again, three times
		}) {
			t.Fatalf("the request's grant was not tried again after it failed: status writes %q", writes)
		}
		// Each try writes the status it read (checked against its resourceVersion, changing
		// nothing); one that said Granting would change it, and each change would requeue
		// the request at once, past its backoff.
		if after := writes[slices.Index(writes, v1alpha1.ReasonSyncFailed):]; slices.Contains(after, v1alpha1.ReasonGranting) {
			t.Fatalf("a request whose grant cannot be written went back to Granting: status writes %q", writes)
		}
	})

	t.Run("a Pod replaced while its checks were read gets no grant", func(t *testing.T) {
		approvalTask(t, ns, "release-2", "approved")
		pod := pipelineRunPod(t, env.kubelet, ns, "release-2", "promote", attrs)
		mu.Lock()
		replace[pod.Name] = true
		mu.Unlock()
		// The publish creates the request and waits for it; it is refused or times out, which
		// is not what this looks at.
		_ = publishOutcome(t, env, pod)
		wantNoGrantForTheReplaced(t, requestOf(pod))
	})
}

// TestApprovalsTakeTurnsByNamespace: the controller's four workers serve every tenant, and a
// tenant may have many requests, each woken by changes of its checks' objects: a tenant
// whose many requests are slow to evaluate must not hold another tenant's approval behind its
// backlog — neither when each has its own Connectors, nor when both use one shared Connector
// (whose namespace holds both tenants' requests). The real controller against the real API
// server; reading the busy tenant's Pods is made slow, as a costly policy would make its
// evaluations.
func TestApprovalsTakeTurnsByNamespace(t *testing.T) {
	setupApproval(t)
	busy, quiet, shared := newNamespace(t), newNamespace(t), newNamespace(t)
	var mu sync.Mutex
	var evaluated []string // the Pod namespaces of requests, in the order of their first status
	seen := map[types.NamespacedName]bool{}
	startApprovalController(t, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			// Only this test's requests: the controller serves the whole cluster, other tests'
			// requests too.
			podNamespace := obj.(*v1alpha1.AccessRequest).Spec.Context.ObjectRef.Namespace
			mu.Lock()
			if key := client.ObjectKeyFromObject(obj); !seen[key] && (podNamespace == busy || podNamespace == quiet) {
				seen[key] = true
				evaluated = append(evaluated, podNamespace)
			}
			mu.Unlock()
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	}, func(r client.Reader) client.Reader {
		return slowReader{Reader: r, slow: func(key client.ObjectKey, obj client.Object) bool {
			_, pod := obj.(*corev1.Pod)
			return pod && key.Namespace == busy
		}}
	})
	request := func(ns, podNamespace, name string) *v1alpha1.AccessRequest {
		return &v1alpha1.AccessRequest{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.AccessRequestSpec{
				Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: podNamespace},
				ConnectorRef: v1alpha1.LocalObjectRef{Name: "tool"},
				Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
					APIVersion: "v1", Kind: "Pod", Name: name + "-pod", Namespace: podNamespace, UID: types.UID(name + "-uid")}},
			}}
	}
	const backlog = 40
	for _, tc := range []struct{ name, busyRequests, quietRequest string }{
		{"Connectors of their own", busy, quiet},
		{"one shared Connector", shared, shared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			evaluated = nil
			mu.Unlock()
			for i := range backlog {
				create(t, request(tc.busyRequests, busy, fmt.Sprintf("%s-build-%d", tc.busyRequests, i)))
			}
			create(t, request(tc.quietRequest, quiet, tc.quietRequest+"-release"))
			var before int
			if !kubelet.WaitUntil(30*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				before = slices.Index(evaluated, quiet)
				return before >= 0
			}) {
				t.Fatal("the quiet tenant's request was never evaluated")
			}
			// Those the four workers had begun, and a turn or two more; first come first served
			// would have the whole backlog first.
			if before >= backlog/2 {
				t.Fatalf("%d of the busy tenant's %d requests were evaluated before the quiet tenant's one", before, backlog)
			}
			t.Logf("%d of the busy tenant's requests were evaluated before the quiet tenant's one", before)
			// The rest of the backlog drains before the next case.
			if !kubelet.WaitUntil(60*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(evaluated) == backlog+1
			}) {
				t.Fatalf("the backlog did not drain: %d of %d requests evaluated", len(evaluated), backlog+1)
			}
		})
	}
}

// slowReader makes the reads that slow picks take 300 ms longer, as a costly evaluation would.
type slowReader struct {
	client.Reader
	slow func(client.ObjectKey, client.Object) bool
}

func (r slowReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if r.slow(key, obj) {
		time.Sleep(300 * time.Millisecond)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// syncReason is a request's AccessPermissionSync reason ("" before its first evaluation).
func syncReason(ar *v1alpha1.AccessRequest) string {
	if c := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync); c != nil {
		return c.Reason
	}
	return ""
}

// replacePod deletes a Pod at once (a lost node) and creates another of its name and
// ServiceAccount.
func replacePod(ctx context.Context, env *proxyEnv, ns, name string) error {
	var old corev1.Pod
	if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &old); err != nil {
		return err
	}
	if err := cp.Client.Delete(ctx, &old, client.GracePeriodSeconds(0)); err != nil {
		return err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
		ServiceAccountName: old.Spec.ServiceAccountName, NodeName: old.Spec.NodeName,
		Containers: []corev1.Container{{Name: "main", Image: "busybox"}}}}
	_, err := env.kubelet.CreatePod(ctx, pod)
	return err
}

// startApprovalController runs the AccessRequest controller alone, as the driver's controller
// role wires it, with its client's calls going through funcs and its uncached reads through
// reader(the API reader) (nil: the API reader); it stops when the test ends.
func startApprovalController(t *testing.T, funcs interceptor.Funcs, reader func(client.Reader) client.Reader) {
	t.Helper()
	mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{
		Scheme: cp.Client.Scheme(),
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{
			&corev1.Secret{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}}}},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	states, err := approval.NewStates(100, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	uncached := mgr.GetAPIReader()
	if reader != nil {
		uncached = reader(uncached)
	}
	c := &approval.Controller{
		Client: interceptor.NewClient(withoutWatch{mgr.GetClient()}, funcs),
		Reader: uncached, Cache: mgr.GetCache(), SystemNamespace: systemNS, DriverName: driverName,
		Retention: opts.RequestRetention, PodRecheck: opts.PodRecheck, States: states,
	}
	if err := c.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the approval controller: %v", err)
		}
	})
}

// withoutWatch makes the manager's client one interceptor.NewClient takes; the controller never
// watches through its client (its informers come from the manager's cache).
type withoutWatch struct{ client.Client }

func (withoutWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("the approval controller does not watch through its client")
}
