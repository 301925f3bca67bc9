// Package e2e tests the driver through real parts: a real kube-apiserver and etcd (envtest),
// the driver's real gRPC server on a unix socket, the kubelet stand-in, and real tmpfs mounts
// when run as root (a directory mounter otherwise).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/mount"
	"github.com/kube-connectors/connectors-csi/regoeval"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

const (
	driverName = "connectors-csi"
	proxyURL   = "http://connectors-proxy.connectors-system.svc.cluster.local:3128"
	systemNS   = "connectors-system"
)

var (
	cp   *controlplane.ControlPlane
	logs = &syncBuffer{}
)

// syncBuffer collects the driver's logs so that tests can search them for secrets.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestMain(m *testing.M) {
	// The controllers' state.rego children are this test binary.
	regoeval.ServeSandboxIfChild()
	fs := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(fs)
	// Highest verbosity, all into the buffer: the secret tests search it.
	_ = fs.Parse([]string{"-v=10", "-logtostderr=false", "-alsologtostderr=false", "-stderrthreshold=FATAL"})
	klog.SetOutput(logs)
	ctrl.SetLogger(klog.Background())

	var err error
	cp, err = controlplane.Start(controlplane.WithAuditLog())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := setupCluster(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = cp.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- driver log (last 100 lines) ---\n%s\n", lastLines(logs.String(), 100))
	}
	_ = cp.Stop()
	if binary != "" {
		_ = os.RemoveAll(filepath.Dir(binary)) // 120 MiB per run otherwise left in /tmp
	}
	os.Exit(code)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// setupCluster applies the CSIDriver object and the system namespace from deploy/.
func setupCluster(ctx context.Context) error {
	var drv storagev1.CSIDriver
	if err := controlplane.ReadYAML(filepath.Join(controlplane.RepoRoot(), "deploy", "base", "csidriver.yaml"), &drv); err != nil {
		return err
	}
	if _, err := cp.Kube.StorageV1().CSIDrivers().Create(ctx, &drv, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := cp.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}}, metav1.CreateOptions{})
	return err
}

// runningDriver is one driver "process" started in this test process.
type runningDriver struct {
	socket  string
	mounter mount.Mounter
	stop    func()
	pid     int // of a driver process (startDriverProcess), else 0
}

// isRoot tells whether volumes are real tmpfs mounts.
func isRoot() bool { return os.Geteuid() == 0 }

// startDriver runs the driver with its state in stateDir until the test ends or stop is called.
// mounter nil means real tmpfs as root and a directory mounter otherwise.
func startDriver(t testing.TB, stateDir string, mounter mount.Mounter) *runningDriver {
	t.Helper()
	return startDriverWith(t, stateDir, mounter, nil)
}

// kubeconfigVia writes a copy of the admin kubeconfig whose server is addr (host:port).
func kubeconfigVia(t testing.TB, addr string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + addr
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startDriverWith is startDriver with options changed by adjust.
func startDriverWith(t testing.TB, stateDir string, mounter mount.Mounter, adjust func(*driver.Options)) *runningDriver {
	t.Helper()
	if mounter == nil {
		mounter = mount.NewTmpfs()
		if !isRoot() {
			mounter = mount.NewDirectories()
		}
	}
	socketDir, err := os.MkdirTemp("", "csi-")
	if err != nil {
		t.Fatal(err)
	}
	d := &runningDriver{socket: filepath.Join(socketDir, "csi.sock"), mounter: mounter}
	opts := testOptions()
	opts.Endpoint, opts.StateDir, opts.Mounter = "unix://"+d.socket, stateDir, mounter
	if adjust != nil {
		adjust(&opts)
	}
	stop, done := runDriver(t, opts)
	d.stop = func() { stop(); _ = os.RemoveAll(socketDir) }
	t.Cleanup(d.stop)
	failed := make(chan error, 1)
	up := kubelet.WaitUntil(30*time.Second, func() bool {
		select {
		case err := <-done:
			failed <- err
			done <- err // for stop
			return true
		default:
		}
		_, err := os.Stat(d.socket)
		return err == nil
	})
	select {
	case err := <-failed:
		t.Fatalf("driver stopped before serving: %v", err)
	default:
	}
	if !up {
		t.Fatal("driver socket did not appear")
	}
	return d
}

// testOptions are the driver's options in these tests: the admin kubeconfig, the role all,
// short cache periods.
func testOptions() driver.Options {
	return driver.Options{
		NodeID:          "node-1",
		DriverName:      driverName,
		Kubeconfig:      cp.Kubeconfig,
		SystemNamespace: systemNS,
		ProxyURL:        proxyURL,
		NoProxy:         "localhost,127.0.0.1,::1",
		TokenAudience:   driverName,
		VolumeSizeLimit: "4Mi",
		// Every test's driver reconciles every Connector and class earlier tests left (a proxy
		// address of its own rewrites each status): at 50/s that backlog grew past the 20 s the
		// tests wait for a status. The envtest API server takes far more.
		KubeAPIQPS:    1000,
		KubeAPIBurst:  2000,
		AuthzAllowTTL: 10 * time.Second,
		AuthzDenyTTL:  2 * time.Second,
		TokenCacheTTL: time.Second,
		// The flag's default: an answer that a token has been invalidated is asked again.
		TokenInvalidatedRetry: 500 * time.Millisecond,
		SecretCacheTTL:        time.Second,
		StatusRecheck:         time.Minute,
		ApprovalWait:          3 * time.Second,
		ProxyPermissionTTL:    time.Second,
		RequestRetention:      time.Hour,
		// Pods are not watched: a deleted or completed Pod is seen at the next look.
		PodRecheck: time.Second,
		// Every test's controller rechecks the live requests earlier tests left, at the start
		// and every second: at 20/s those would come before a test's own for many seconds.
		PodRecheckQPS:    1000,
		RepublishRecheck: 5 * time.Minute,
		// Plain HTTP, open: tests read /metrics to count what the driver sent the API server,
		// which the scrape's own reviews would change. TestMetricsAreGuarded and
		// TestMonitoringRules serve it as deployed (delegated).
		MetricsAuth: driver.MetricsAuthNone,
		// The test tools listen on loopback.
		AllowLoopbackDestinations: true,
		// No name is looked up for real: Connectors of tests name hosts such as github.com,
		// and the status controller probes every Connector of the cluster.
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			if host == "localhost" {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, fmt.Errorf("test: %s is not looked up (tests never leave this machine)", host)
		},
	}
}

// runDriver runs driver.Run with opts until stop is called (or the test ends). done yields
// Run's error if it returns first.
func runDriver(t testing.TB, opts driver.Options) (stop func(), done chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), klog.Background()))
	done = make(chan error, 1)
	go func() { done <- driver.Run(ctx, opts) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("driver: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, done
}

// startDeployedDrivers runs the driver as deploy/ does, each role with exactly its deployed
// RBAC: a node process (--role=node, the node ServiceAccount) with its proxy, and a controller
// process (--role=controller, the controller ServiceAccount). adjust changes both.
func startDeployedDrivers(t testing.TB, adjust func(*driver.Options)) *proxyEnv {
	t.Helper()
	env, controllerKubeconfig := startDeployedNode(t, adjust)
	startDeployedController(t, env, controllerKubeconfig, adjust)
	return env
}

// startDeployedNode is startDeployedDrivers' node, and the kubeconfig of the controller's
// identity as deployed.
func startDeployedNode(t testing.TB, adjust func(*driver.Options)) (env *proxyEnv, controllerKubeconfig string) {
	t.Helper()
	nodeKubeconfig, controllerKubeconfig := deployedKubeconfigs(t)
	env = startProxyDriver(t, func(o *driver.Options) {
		// As the DaemonSet's arguments say.
		o.CallersAs, o.APICallersGroup = systemNS+"/connectors-csi-callers", "connectors-csi:connectors-api"
		if adjust != nil {
			adjust(o)
		}
		o.Role, o.Kubeconfig = driver.RoleNode, nodeKubeconfig
	})
	return env, controllerKubeconfig
}

// startDeployedController runs a controller with the identity of kubeconfig for env's node,
// until stop.
func startDeployedController(t testing.TB, env *proxyEnv, kubeconfig string, adjust func(*driver.Options)) (stop func()) {
	t.Helper()
	opts := testOptions()
	if adjust != nil {
		adjust(&opts)
	}
	// The controller writes the node proxy's address into each Connector's status.
	opts.Role, opts.Kubeconfig, opts.ProxyURL = driver.RoleController, kubeconfig, env.proxyURL
	stop, _ = runDriver(t, opts)
	return stop
}

// newKubelet connects a kubelet stand-in to a driver; its root is a fresh directory.
func newKubelet(t testing.TB, d *runningDriver) *kubelet.Kubelet {
	t.Helper()
	k, err := kubelet.New(cp.Kube, d.socket, driverName, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// mountCount returns how many mounts sit at target.
func mountCount(t testing.TB, d *runningDriver, target string) int {
	t.Helper()
	if dirs, ok := d.mounter.(*mount.Directories); ok {
		return dirs.Mounts(target)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		// Field 5 is the mount point.
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == target {
			n++
		}
	}
	return n
}

// newNamespace creates a namespace for one test.
func newNamespace(t testing.TB) string {
	t.Helper()
	name := "t-" + rand.String(8)
	_, err := cp.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// allowConnectors lets a ServiceAccount get the named Connectors of its namespace.
func allowConnectors(t testing.TB, ns, sa string, connectors ...string) {
	t.Helper()
	allowConnectorsAs(t, ns, sa, "use-connectors-"+sa, connectors...)
}

// allowConnectorsAs is allowConnectors with the Role and RoleBinding named role.
func allowConnectorsAs(t testing.TB, ns, sa, roleName string, connectors ...string) {
	t.Helper()
	grantConnectors(t, ns, roleName, ns, sa, connectors...)
}

// shareConnector lets ServiceAccount sa of namespace consumer get Connector ns/connector.
func shareConnector(t testing.TB, ns, connector, consumer, sa string) {
	t.Helper()
	grantConnectors(t, ns, "share-"+connector+"-with-"+consumer, consumer, sa, connector)
}

// grantConnectors writes a Role and RoleBinding named roleName in ns that let ServiceAccount
// saNamespace/sa get the named Connectors of ns, and waits until RBAC says so.
func grantConnectors(t testing.TB, ns, roleName, saNamespace, sa string, connectors ...string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: roleName, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors"},
			ResourceNames: connectors, Verbs: []string{"get"}}},
	}
	if _, err := cp.Kube.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: saNamespace}},
	}
	if _, err := cp.Kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range connectors {
		waitDecisionOf(t, saNamespace, sa, ns, c, true)
	}
}

// create creates any object through the controller-runtime client.
func create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := cp.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// waitDecision waits until the API server's RBAC cache answers allowed for sa's get of the
// Connector, so that a test's next step sees the grant (or its removal) in effect.
func waitDecision(t testing.TB, ns, sa, connector string, allowed bool) {
	t.Helper()
	waitDecisionOf(t, ns, sa, ns, connector, allowed)
}

// waitDecisionOf is waitDecision for a ServiceAccount of saNamespace and a Connector of ns.
func waitDecisionOf(t testing.TB, saNamespace, sa, ns, connector string, allowed bool) {
	t.Helper()
	answers := func() bool {
		res, err := cp.Kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + saNamespace + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + saNamespace, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Group: v1alpha1.GroupVersion.Group,
					Resource: "connectors", Verb: "get", Namespace: ns, Name: connector},
			}}, metav1.CreateOptions{})
		return err == nil && res.Status.Allowed == allowed
	}
	if !kubelet.WaitUntil(10*time.Second, answers) {
		t.Fatalf("RBAC for %s/%s on Connector %s/%s never answered allowed=%v", saNamespace, sa, ns, connector, allowed)
	}
}

// basic is the base64 of user:pass.
func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// deployedKubeconfigs applies deploy/base/rbac.yaml for real and returns kubeconfigs of the
// node's and the controller's ServiceAccounts, so that a test runs each role with exactly the
// deployed privileges. The test fails if either was refused an API call.
func deployedKubeconfigs(t testing.TB) (node, controller string) {
	t.Helper()
	// Server-side, as kubectl's manager, as TestDeployAppliesServerSide and the chart's tests
	// apply it again: a client-side apply would own the admission policy's atomic
	// matchConstraints, and their apply would conflict with it.
	if _, err := cp.Kubectl(nil, "apply", "--server-side", "--force-conflicts", "-n", systemNS, "-f", filepath.Join(controlplane.RepoRoot(), "deploy", "base", "rbac.yaml")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), "is forbidden") {
			t.Error("the driver was refused an API call with the deployed RBAC; see its log")
		}
	})
	return serviceAccountKubeconfig(t, systemNS, "connectors-csi-node"), serviceAccountKubeconfig(t, systemNS, "connectors-csi-controller")
}

// serviceAccountKubeconfig writes a kubeconfig with a token of the ServiceAccount.
func serviceAccountKubeconfig(t testing.TB, ns, sa string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), sa+"-kubeconfig")
	if err := cp.ServiceAccountKubeconfig(ns, sa, path); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// driverBinary builds bin/connectors-csi for this test run, once.
func driverBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "connectors-csi-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "connectors-csi")
		cmd := exec.Command("go", "build", "-o", binary, "./cmd/connectors-csi")
		cmd.Dir = controlplane.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// startDriverProcess runs the real binary as a separate process (real tmpfs mounts).
func startDriverProcess(t testing.TB, stateDir string) *runningDriver {
	t.Helper()
	// The node role: a process cannot be given the in-process tests' resolver, and the
	// controllers' probes would look up the test Connectors' host names.
	return startDriverProcessWith(t, stateDir, "--role=node", "--node-id=node-1", "--kubeconfig="+cp.Kubeconfig)
}

// startDriverProcessWith runs the real binary with its socket and state directory, the test
// cluster's system namespace and proxy URL, no listeners, and args.
func startDriverProcessWith(t testing.TB, stateDir string, args ...string) *runningDriver {
	t.Helper()
	socketDir, err := os.MkdirTemp("", "csi-")
	if err != nil {
		t.Fatal(err)
	}
	d := &runningDriver{socket: filepath.Join(socketDir, "csi.sock"), mounter: mount.NewTmpfs()}
	cmd := exec.Command(driverBinary(t), append([]string{"--endpoint=unix://" + d.socket, "--system-namespace=" + systemNS,
		"--state-dir=" + stateDir, "--proxy-url=" + proxyURL, "--proxy-listen=", "--metrics-listen="}, args...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			_ = os.RemoveAll(socketDir)
		})
	}
	t.Cleanup(d.stop)
	if slices.Contains(args, "--role=controller") {
		return d // serves no socket
	}
	if !kubelet.WaitUntil(30*time.Second, func() bool { _, err := os.Stat(d.socket); return err == nil }) {
		d.stop()
		t.Fatalf("driver process did not serve; its output:\n%s", out.String())
	}
	return d
}
