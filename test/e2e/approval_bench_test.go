package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/approval"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// BenchmarkApproval measures, per run, the time from the ApprovalTask turning approved to the
// waiting publish succeeding, and from unpublish to the proxy refusing the Pod's token. Run it
// with -benchtime=50x for 50 runs; it reports p50 and p99 of both.
func BenchmarkApproval(b *testing.B) {
	setupApprovalFor(b)
	env := startProxyDriver(b, func(o *driver.Options) { o.ApprovalWait = 20 * time.Second })
	benchmarkApprovalCycles(b, env, gatedPromotion(b))
}

// BenchmarkApprovalBehindRechecks is BenchmarkApproval while 200 live approved requests of 50
// other namespaces are rechecked every second (--accessrequest-pod-recheck-interval 1s): 200
// evaluations and 600 reads a second asked of a controller at its default --kube-api-qps (50).
// 10,000 live gated Pods at the default interval of 5 minutes ask 33 and 100, past the limit
// too; this is that, made with a fiftieth of the objects. Run it with -benchtime=10x.
func BenchmarkApprovalBehindRechecks(b *testing.B) {
	setupApprovalFor(b)
	env := startProxyDriver(b, func(o *driver.Options) {
		o.ApprovalWait = 20 * time.Second
		// The defaults, which testOptions raises for tests.
		o.KubeAPIQPS, o.KubeAPIBurst, o.PodRecheckQPS = 50, 100, 20
	})
	liveGatedRequests(b, env, 50, 4)
	benchmarkApprovalCycles(b, env, gatedPromotion(b))
}

// liveGatedRequests makes, in each of namespaces namespaces gated as gatedPromotion's (one Git
// server for all), each approved requests of Pods of their own PipelineRuns, and waits until
// every one is granted.
func liveGatedRequests(b *testing.B, env *proxyEnv, namespaces, each int) {
	b.Helper()
	tool := startGitServer(b, false)
	var keys []types.NamespacedName
	for range namespaces {
		keys = append(keys, liveGatedRequestsIn(b, env, gatedPromotionOf(b, tool), each)...)
	}
	waitGranted(b, keys)
}

// liveGatedRequestsIn makes count approved requests of Pods of their own PipelineRuns in ns,
// gated as gatedPromotionOf's, and returns their keys.
func liveGatedRequestsIn(tb testing.TB, env *proxyEnv, ns string, count int) []types.NamespacedName {
	tb.Helper()
	var keys []types.NamespacedName
	for i := range count {
		run := fmt.Sprintf("live-%d", i)
		approvalTaskFor(tb, ns, run, "approved")
		ar := podRequest("prod", pipelineRunPod(tb, env.kubelet, ns, run, "promote", map[string]string{"connectors": "prod"}), "builder")
		create(tb, ar)
		keys = append(keys, types.NamespacedName{Namespace: ar.Namespace, Name: ar.Name})
	}
	return keys
}

// waitGranted waits until every request of keys is Ready.
func waitGranted(tb testing.TB, keys []types.NamespacedName) {
	tb.Helper()
	for _, key := range keys {
		if !kubelet.WaitUntil(5*time.Minute, func() bool {
			var ar v1alpha1.AccessRequest
			return cp.Client.Get(context.Background(), key, &ar) == nil && meta.IsStatusConditionTrue(ar.Status.Conditions, v1alpha1.ConditionReady)
		}) {
			tb.Fatalf("live request %s was not granted", key)
		}
	}
}

// benchmarkApprovalCycles runs b.N approvalCycles in ns and reports their percentiles.
func benchmarkApprovalCycles(b *testing.B, env *proxyEnv, ns string) {
	var toPublish, toRefuse []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		publish, refuse := approvalCycle(b, env, ns, fmt.Sprintf("run-%d", i))
		toPublish, toRefuse = append(toPublish, publish), append(toRefuse, refuse)
	}
	b.StopTimer()
	reportPercentilesNamed(b, "approve-to-publish", toPublish)
	reportPercentilesNamed(b, "unpublish-to-refuse", toRefuse)
}

// approvalCycle runs one gated use of Connector "prod" of ns (gated by an AccessPolicy whose
// check is the PipelineRun's ApprovalTask) by a new Pod of PipelineRun run, and returns the
// time from the ApprovalTask turning approved to the waiting publish succeeding, and from
// unpublish to the proxy refusing the Pod's token.
func approvalCycle(tb testing.TB, env *proxyEnv, ns, run string) (toPublish, toRefuse time.Duration) {
	tb.Helper()
	ctx := context.Background()
	pod := pipelineRunPod(tb, env.kubelet, ns, run, "promote", map[string]string{"connectors": "prod"})
	approvalTaskFor(tb, ns, run, "pending")
	done := make(chan error, 1)
	go func() { done <- env.kubelet.Publish(ctx, pod, "connectors") }()
	arKey := types.NamespacedName{Namespace: ns, Name: approval.RequestName("prod", records.Pod{Namespace: ns, Name: pod.Name, UID: string(pod.UID)})}
	if !kubelet.WaitUntil(20*time.Second, func() bool {
		var ar v1alpha1.AccessRequest
		return cp.Client.Get(ctx, arKey, &ar) == nil && len(ar.Status.Conditions) > 0
	}) {
		tb.Fatal("no AccessRequest")
	}
	approved := time.Now()
	approvalTaskFor(tb, ns, run, "approved")
	if err := <-done; err != nil {
		tb.Fatalf("publish: %v (%v)", err, status.Code(err) == codes.Unavailable)
	}
	toPublish = time.Since(approved)

	token := visibleFiles(tb, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
	refs := fmt.Sprintf("%s/namespaces/%s/connectors/prod/repo.git/info/refs?service=git-upload-pack", env.proxyURL, ns)
	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, refs, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := noRedirects.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	if !kubelet.WaitUntil(10*time.Second, func() bool { return get() == http.StatusOK }) {
		tb.Fatal("the approved token was not let through")
	}
	unpublished := time.Now()
	if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
		tb.Fatal(err)
	}
	for get() != http.StatusForbidden {
		if time.Since(unpublished) > 10*time.Second {
			tb.Fatal("the proxy never refused the revoked token")
		}
		time.Sleep(10 * time.Millisecond)
	}
	toRefuse = time.Since(unpublished)
	_ = cp.Kube.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	return toPublish, toRefuse
}

// gatedPromotion makes, for approvalCycle, a namespace whose git Connector "prod" (of a Git
// server of its own) is gated by an AccessPolicy checking the PipelineRun's ApprovalTask. The
// approval flags must be on (setupApprovalFor).
func gatedPromotion(tb testing.TB) string {
	tb.Helper()
	return gatedPromotionOf(tb, startGitServer(tb, false))
}

// gatedPromotionOf is gatedPromotion with the Git server tool.
func gatedPromotionOf(tb testing.TB, tool *gitserver.Server) string {
	tb.Helper()
	ns := newNamespace(tb)
	gitConnector(tb, ns, "prod", gitClass(tb), tool)
	allowConnectors(tb, ns, "builder", "prod")
	policy := gatingPolicy("promote", "prod", v1alpha1.Check{Name: "approval",
		Ref: &v1alpha1.TemplateRef{ConfigMap: &v1alpha1.ConfigMapRef{Name: "connectors-approvals-in-pipeline"}}})
	policy.Namespace = ns
	create(tb, policy)
	return ns
}
