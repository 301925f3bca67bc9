//go:build scale

package e2e

// The scale lane (make scale): the driver's two roles as real processes with their deployed
// RBAC, against the envtest API server filled to the size of a large cluster, counted by the
// API server's own audit log. It prints figures (a benchmark, not pass/fail on timing); it
// fails only when something breaks.

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// scaleSize is the lane's size; SCALE_* variables shrink it for a quick run.
type scaleSize struct {
	nodes, volumesPerNode, connectors, nodeObjects, pods, requests int
	period, duration                                               time.Duration
}

func sizeFromEnv() scaleSize {
	num := func(key string, def int) int {
		if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n > 0 {
			return n
		}
		return def
	}
	dur := func(key string, def time.Duration) time.Duration {
		if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
			return d
		}
		return def
	}
	return scaleSize{nodes: num("SCALE_NODES", 20), volumesPerNode: num("SCALE_VOLUMES_PER_NODE", 20),
		connectors: num("SCALE_CONNECTORS", 10000), nodeObjects: num("SCALE_NODE_OBJECTS", 5000),
		pods: num("SCALE_PODS", 50000), requests: num("SCALE_ACCESSREQUESTS", 1000),
		period: dur("SCALE_REPUBLISH_PERIOD", time.Minute), duration: dur("SCALE_DURATION", 10*time.Minute)}
}

// parallel runs n calls of f on 16 workers; the first error fails the test.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// rssMiB is a process's resident set (all of it, file-backed pages included).
func rssMiB(t *testing.T, pid int) float64 { return statusMiB(t, pid, "VmRSS:") }

// statusMiB reads one kB field of /proc/<pid>/status in MiB.
func statusMiB(t *testing.T, pid int, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	t.Fatalf("no %s for %d", field, pid)
	return 0
}

// heapMiB is the heap in use of the driver serving metrics at addr (go_memstats_heap_inuse_bytes):
// what it holds, not what the runtime has not returned to the system yet.
func heapMiB(t *testing.T, addr string) float64 {
	t.Helper()
	code, body := do(t, noRedirects, newRequest(t, "GET", "http://"+addr+"/metrics", nil))
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f / (1 << 20)
		}
	}
	t.Fatal("no go_memstats_heap_inuse_bytes")
	return 0
}

// rss is a process's resident set and its anonymous part (the rest: the binary's file pages).
type rss struct{ total, anon float64 }

func (r rss) String() string {
	return fmt.Sprintf("%.1f MiB (%.1f anonymous, %.1f file-backed)", r.total, r.anon, r.total-r.anon)
}

// meanRSS is the drivers' mean resident set.
func meanRSS(t *testing.T, drivers []*runningDriver) rss {
	var sum rss
	for _, d := range drivers {
		sum.total += rssMiB(t, d.pid)
		sum.anon += statusMiB(t, d.pid, "RssAnon:")
	}
	n := float64(len(drivers))
	return rss{sum.total / n, sum.anon / n}
}

func TestScale(t *testing.T) {
	size := sizeFromEnv()
	ctx := context.Background()
	t.Logf("size: %+v", size)
	nodeKubeconfig, controllerKubeconfig := deployedKubeconfigs(t)
	git := gitClass(t)

	// The controller, as its Deployment runs it. Every Connector address here is on loopback
	// (nothing listens): its status probes never leave the machine.
	controllerMetrics := freeLoopbackAddr(t)
	controller := startDriverProcessWith(t, t.TempDir(), "--role=controller", "--kubeconfig="+controllerKubeconfig,
		"--leader-elect=true", "--allow-loopback-destinations", "--metrics-listen="+controllerMetrics)

	// Cluster objects: Connectors in 100 namespaces, Nodes, Pods bound to them.
	var nss []string
	for range 100 {
		nss = append(nss, newNamespace(t))
	}
	createConnectors := func(from, to int) {
		parallel(t, to-from, func(i int) error {
			i += from
			return cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c-%d", i), Namespace: nss[i%len(nss)]},
				Spec: v1alpha1.ConnectorSpec{ConnectorClassName: git, Address: "http://127.0.0.2:9/org-" + strconv.Itoa(i)}})
		})
	}
	createPods := func(from, to int) {
		parallel(t, to-from, func(i int) error {
			i += from
			return cp.Client.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: nss[i%len(nss)]},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("filler-%d", i%size.nodeObjects), ServiceAccountName: "default",
					Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}})
		})
	}
	start := time.Now()
	parallel(t, size.nodeObjects, func(i int) error {
		return cp.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("filler-%d", i)}})
	})
	createConnectors(0, size.connectors/10)
	createPods(0, size.pods/10)
	t.Logf("created %d Nodes, %d Connectors, %d Pods in %s", size.nodeObjects, size.connectors/10, size.pods/10, time.Since(start).Round(time.Second))

	// The node processes, each with its kubelet stand-in and volumes of the Connectors
	// "used-<n>" of its namespace (two per node).
	var nodes []*scaleNode
	for n := range size.nodes {
		nodeID := fmt.Sprintf("scale-node-%d", n)
		d := startDriverProcessWith(t, t.TempDir(), "--role=node", "--node-id="+nodeID, "--kubeconfig="+nodeKubeconfig,
			"--unprivileged-mounts")
		k, err := kubelet.New(cp.Kube, d.socket, driverName, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k.Close() })
		nodes = append(nodes, &scaleNode{driver: d, kubelet: k})
	}
	volumeNS := newNamespace(t)
	for i := range 2 {
		newConnector(t, volumeNS, fmt.Sprintf("used-%d", i), git, fmt.Sprintf("http://127.0.0.2:9/used-%d", i))
	}
	allowConnectors(t, volumeNS, "builder", "used-0", "used-1")
	for n, node := range nodes {
		for v := range size.volumesPerNode {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d-v%d", n, v), Namespace: volumeNS},
				Spec: corev1.PodSpec{ServiceAccountName: "builder", NodeName: fmt.Sprintf("scale-node-%d", n),
					Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
					Volumes: []corev1.Volume{{Name: "connectors", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
						Driver: driverName, ReadOnly: ptr.To(true), VolumeAttributes: map[string]string{"connectors": fmt.Sprintf("used-%d", v%2)}}}}}}}
			created, err := node.kubelet.CreatePod(ctx, pod)
			if err != nil {
				t.Fatal(err)
			}
			node.pods = append(node.pods, created)
		}
	}
	publishAll := func() {
		parallel(t, len(nodes)*size.volumesPerNode, func(i int) error {
			node := nodes[i/size.volumesPerNode]
			return node.kubelet.Publish(ctx, node.pods[i%size.volumesPerNode], "connectors")
		})
	}
	publishAll()
	nodeRSSSmall := meanRSS(t, driversOf(nodes))

	// The cluster grows to its full size while the nodes keep their volumes: first the
	// Connectors and AccessRequests, then (the controller's RSS taken between) the Pods.
	start = time.Now()
	createConnectors(size.connectors/10, size.connectors)
	parallel(t, size.requests, func(i int) error {
		ns := nss[i%len(nss)]
		var pod corev1.Pod // a live request: its Pod exists
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("p-%d", i)}, &pod); err != nil {
			return err
		}
		return cp.Client.Create(ctx, &v1alpha1.AccessRequest{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ar-%d", i), Namespace: ns,
				Labels: map[string]string{v1alpha1.LabelNode: fmt.Sprintf("filler-%d", i%size.nodeObjects)}},
			Spec: v1alpha1.AccessRequestSpec{
				Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "default", Namespace: ns},
				ConnectorRef: v1alpha1.LocalObjectRef{Name: fmt.Sprintf("c-%d", i)},
				Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{APIVersion: "v1", Kind: "Pod",
					Name: pod.Name, Namespace: ns, UID: pod.UID}},
			}})
	})
	// The controller works through what was created (at its client's rate limit) before a
	// figure is taken.
	settle := func() { waitControllerQuiet(t) }
	settle()
	controllerRSSSmall, controllerHeapSmall := rssMiB(t, controller.pid), heapMiB(t, controllerMetrics)
	createPods(size.pods/10, size.pods)
	settle()
	t.Logf("grown to %d Connectors, %d Pods, %d AccessRequests in %s", size.connectors, size.pods, size.requests, time.Since(start).Round(time.Second))

	// Steady state: kubelet republishes every volume each period. One round first, which sees
	// what changed while the cluster grew (the controller labelled the Connectors).
	publishAll()
	steady := time.Now()
	for time.Since(steady) < size.duration {
		round := time.Now()
		publishAll()
		time.Sleep(size.period - time.Since(round))
	}
	elapsed := time.Since(steady)
	nodeRSSLarge := meanRSS(t, driversOf(nodes))
	controllerRSSLarge, controllerHeapLarge := rssMiB(t, controller.pid), heapMiB(t, controllerMetrics)

	// What the nodes sent in the steady state, by node (the User-Agent names it).
	events, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && !ev.RequestReceivedTimestamp.Time.Before(steady)
	})
	if err != nil {
		t.Fatal(err)
	}
	requests, watches := map[string]int{}, map[string]int{}
	kinds := map[string]int{} // what was sent, by verb and resource
	for _, ev := range events {
		if ev.ObjectRef != nil && ev.Verb != "watch" {
			kinds[ev.Verb+" "+ev.ObjectRef.Resource]++
		}
		node := ev.UserAgent
		if ev.Verb == "watch" {
			if ev.Stage == auditv1.StageResponseStarted {
				watches[node]++
			}
			continue
		}
		if ev.Stage == auditv1.StageResponseComplete {
			requests[node]++
		}
	}
	all, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.NodeUser && ev.Verb == "watch" && ev.Stage == auditv1.StageResponseStarted
	})
	if err != nil {
		t.Fatal(err)
	}
	// A stream is what a watch selects: an informer's initial watch-list
	// (sendInitialEvents) and the watch it continues with select the same.
	streams := map[string]map[string]bool{}
	for _, ev := range all {
		u, err := url.Parse(ev.RequestURI)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if streams[ev.UserAgent] == nil {
			streams[ev.UserAgent] = map[string]bool{}
		}
		streams[ev.UserAgent][u.Path+"?"+q.Get("labelSelector")+q.Get("fieldSelector")] = true
	}
	var firstNode []string
	for s := range streams[nodes2ids(1)[0]] {
		firstNode = append(firstNode, s)
	}
	slices.Sort(firstNode)
	t.Logf("RESULT watch streams of scale-node-0: %s", strings.Join(firstNode, " "))
	var perMinute, streamsPerNode []float64
	for _, node := range nodes2ids(size.nodes) {
		perMinute = append(perMinute, float64(requests[node])/elapsed.Minutes())
		streamsPerNode = append(streamsPerNode, float64(len(streams[node])))
	}
	slices.Sort(perMinute)
	slices.Sort(streamsPerNode)

	// What the controller sent at rest (the same window), by verb and resource.
	controllerEvents, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
		return ev.User.Username == controlplane.ControllerUser && ev.Verb != "watch" && ev.Stage == auditv1.StageResponseComplete &&
			!ev.RequestReceivedTimestamp.Time.Before(steady)
	})
	if err != nil {
		t.Fatal(err)
	}
	controllerKinds := map[string]int{}
	for _, ev := range controllerEvents {
		if ev.ObjectRef != nil {
			controllerKinds[ev.Verb+" "+ev.ObjectRef.Resource+"/"+ev.ObjectRef.Subresource]++
		}
	}

	// Approval and revocation at full size, on one more node (in this process).
	toPublish, toRefuse := scaleApproval(t, 5)

	t.Logf("RESULT node requests in the steady state, by verb and resource: %v", kinds)
	t.Logf("RESULT nodes=%d volumes/node=%d republish-period=%s steady-state=%s", size.nodes, size.volumesPerNode, size.period, elapsed.Round(time.Second))
	t.Logf("RESULT API requests per node per minute (steady state): min %.2f, max %.2f; watch streams per node: min %.0f, max %.0f; watches (re)opened in the steady state: %d",
		perMinute[0], perMinute[len(perMinute)-1], streamsPerNode[0], streamsPerNode[len(streamsPerNode)-1], sumValues(watches))
	t.Logf("RESULT node RSS (mean of %d): %s with %d Connectors, %s with %d", size.nodes, nodeRSSSmall, size.connectors/10, nodeRSSLarge, size.connectors)
	t.Logf("RESULT controller RSS (heap in use): %.1f MiB (%.1f) with %d Pods, %.1f MiB (%.1f) with %d Pods (and %d Connectors, %d AccessRequests)",
		controllerRSSSmall, controllerHeapSmall, size.pods/10, controllerRSSLarge, controllerHeapLarge, size.pods, size.connectors, size.requests)
	t.Logf("RESULT controller requests at rest: %.1f per minute (target: at most %d Connectors per --connector-recheck-interval, 5m: %.0f per minute); by verb and resource: %v",
		float64(len(controllerEvents))/elapsed.Minutes(), size.connectors, float64(size.connectors)/5, controllerKinds)
	t.Logf("RESULT approval to mount: %s; unpublish to refusal: %s", durations(toPublish), durations(toRefuse))
	t.Logf("RESULT extrapolated to 5,000 nodes: %.1f node requests/s in the steady state", perMinute[len(perMinute)-1]*5000/60)
}

func nodes2ids(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("connectors-csi/%s (node; scale-node-%d)", driver.Version, i))
	}
	return out
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func durations(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.Round(time.Millisecond).String())
	}
	return strings.Join(parts, ", ")
}

// scaleApproval runs n approval cycles on a node driver in this process with the deployed
// RBAC (and a controller of its own), the cluster at full size.
func scaleApproval(t *testing.T, n int) (toPublish, toRefuse []time.Duration) {
	setupApproval(t)
	env := startDeployedDrivers(t, func(o *driver.Options) { o.ApprovalWait = 20 * time.Second; o.NodeID = "scale-approval" })
	ns := gatedPromotion(t)
	for i := range n {
		p, r := approvalCycle(t, env, ns, fmt.Sprintf("run-%d", i))
		toPublish, toRefuse = append(toPublish, p), append(toRefuse, r)
	}
	return toPublish, toRefuse
}

// scaleNode is one node process under test, its kubelet stand-in and its Pods.
type scaleNode struct {
	driver  *runningDriver
	kubelet *kubelet.Kubelet
	pods    []*corev1.Pod
}

func driversOf(nodes []*scaleNode) []*runningDriver {
	out := make([]*runningDriver, len(nodes))
	for i, n := range nodes {
		out[i] = n.driver
	}
	return out
}

// waitControllerQuiet waits until the controller has sent no more than a few requests (its
// Lease renewals aside) in the last 30 s, for up to 20 minutes.
func waitControllerQuiet(t *testing.T) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 20*time.Minute {
		time.Sleep(30 * time.Second)
		since := time.Now().Add(-30 * time.Second)
		evs, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.ControllerUser && ev.Verb != "watch" && ev.Stage == auditv1.StageResponseComplete &&
				ev.ObjectRef != nil && ev.ObjectRef.Resource != "leases" && !ev.RequestReceivedTimestamp.Time.Before(since)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) <= 5 {
			t.Logf("the controller settled in %s", time.Since(start).Round(time.Second))
			return
		}
	}
	t.Logf("the controller was still busy after 20 minutes")
}
