//go:build realnode

// Package realnode runs the product the way a cluster does: a real kubelet v1.37.2 with
// containerd starts real Pods whose inline csi: volumes it asks the driver for. Everything runs
// on this machine, is recorded by PID under one state directory, and is torn down (processes,
// mounts, network namespaces, cgroups, the bridge, changed sysctls) even when a test fails.
package realnode

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// NodeName is the name the kubelet registers.
const NodeName = "e2e-node"

// Node is a running single-node cluster with the driver.
type Node struct {
	Dir         string // all state of the run
	CP          *controlplane.ControlPlane
	KubeletRoot string
	Containerd  string // socket
	ProxyURL    string // as Pods reach it
	driverBin   string
	procs       []*proc
	sysctls     map[string]string
}

type proc struct {
	name string
	env  []string
	args []string
	cmd  *exec.Cmd
}

// sysctls the kubelet changes; restored by Down.
var sysctlKeys = []string{"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes"}

func (n *Node) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "realnode: "+format+"\n", args...)
}

// start runs a process in its own session, logging to <dir>/<name>.log, its PID recorded.
func (n *Node) start(name string, env []string, args ...string) error {
	logFile, err := os.Create(filepath.Join(n.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	n.procs = append(n.procs, &proc{name: name, env: env, args: args, cmd: cmd})
	return os.WriteFile(filepath.Join(n.Dir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

// stop stops a process: SIGTERM, then SIGKILL after 20 s.
func stop(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// Stop stops a process for good.
func (n *Node) Stop(name string) {
	for i, p := range n.procs {
		if p.name == name {
			stop(p)
			n.procs = append(n.procs[:i], n.procs[i+1:]...)
			return
		}
	}
}

// Restart stops a process and starts it again with the same arguments (its log is appended).
func (n *Node) Restart(name string) error {
	for i, p := range n.procs {
		if p.name != name {
			continue
		}
		stop(p)
		n.procs = append(n.procs[:i], n.procs[i+1:]...)
		logFile, err := os.OpenFile(filepath.Join(n.Dir, name+".log"), os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		cmd := exec.Command(p.args[0], p.args[1:]...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.Env = append(os.Environ(), p.env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return err
		}
		n.procs = append(n.procs[:i], append([]*proc{{name: name, env: p.env, args: p.args, cmd: cmd}}, n.procs[i:]...)...)
		return os.WriteFile(filepath.Join(n.Dir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	}
	return fmt.Errorf("no process %s", name)
}

// tail returns the end of a process's log, for failure messages.
func (n *Node) tail(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, name+".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// Up brings up containerd, the control plane, the kubelet and the driver.
func Up(ctx context.Context, driverBin string, images map[string]string) (n *Node, err error) {
	n = &Node{Dir: "/tmp/connectors-e2e", sysctls: map[string]string{}}
	_ = os.RemoveAll(n.Dir)
	n.KubeletRoot = filepath.Join(n.Dir, "kubelet")
	n.Containerd = filepath.Join(n.Dir, "containerd", "containerd.sock")
	for _, d := range []string{"containerd", "cni/net.d", "kubelet", "kubelet-pki"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return n, err
		}
	}
	for _, k := range sysctlKeys {
		if v, err := run("sysctl", "-n", k); err == nil {
			n.sysctls[k] = strings.TrimSpace(v)
		}
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"tools network", createToolsNetwork},
		{"containerd", n.startContainerd},
		{"images", func() error { return n.importImages(images) }},
		{"control plane", n.startControlPlane},
		{"scheduler", n.startScheduler},
		{"controller manager", n.startControllerManager},
		{"kubelet", n.startKubelet},
		{"driver RBAC", n.applyDriverRBAC},
		{"controller", func() error { return n.startController(driverBin) }},
		{"driver", func() error { return n.startDriver(driverBin) }},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.fn(); err != nil {
			return n, fmt.Errorf("%s: %w", s.name, err)
		}
		n.logf("%s up in %s", s.name, time.Since(t).Round(10*time.Millisecond))
	}
	return n, nil
}

func (n *Node) startContainerd() error {
	def, err := run("containerd", "config", "default")
	if err != nil {
		return fmt.Errorf("containerd config default: %v: %s", err, def)
	}
	cfg := def
	for _, r := range [][2]string{
		{`root = "/var/lib/containerd"`, fmt.Sprintf("root = %q", filepath.Join(n.Dir, "containerd", "root"))},
		{`state = "/run/containerd"`, fmt.Sprintf("state = %q", filepath.Join(n.Dir, "containerd", "state"))},
		{`address = "/run/containerd/containerd.sock"`, fmt.Sprintf("address = %q", n.Containerd)},
		// runc cannot lower oom_score_adj here (no CAP_SYS_RESOURCE in the bounding set).
		{`restrict_oom_score_adj = false`, `restrict_oom_score_adj = true`},
		{`bin_dir = "/opt/cni/bin"`, `bin_dir = "/usr/lib/cni"`},
		{`conf_dir = "/etc/cni/net.d"`, fmt.Sprintf("conf_dir = %q", filepath.Join(n.Dir, "cni", "net.d"))},
	} {
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	cfg = replaceLine(cfg, "sandbox_image = ", `sandbox_image = "localhost/pause:e2e"`)
	if err := os.WriteFile(filepath.Join(n.Dir, "containerd", "config.toml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	cni := `{"cniVersion":"0.4.0","name":"e2e","plugins":[
 {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}},
 {"type":"loopback"}]}`
	if err := os.WriteFile(filepath.Join(n.Dir, "cni", "net.d", "10-bridge.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	if err := n.start("containerd", nil, "containerd", "--config", filepath.Join(n.Dir, "containerd", "config.toml")); err != nil {
		return err
	}
	if !kubelet.WaitUntil(30*time.Second, func() bool { _, err := run("ctr", "-a", n.Containerd, "version"); return err == nil }) {
		return fmt.Errorf("containerd did not answer:\n%s", n.tail("containerd"))
	}
	return nil
}

func replaceLine(s, prefix, line string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
			lines[i] = indent + line
		}
	}
	return strings.Join(lines, "\n")
}

func (n *Node) importImages(images map[string]string) error {
	for _, tarball := range images {
		if out, err := run("ctr", "-a", n.Containerd, "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", tarball); err != nil {
			return fmt.Errorf("import %s: %v: %s", tarball, err, out)
		}
	}
	return nil
}

func (n *Node) startControlPlane() error {
	cp, err := controlplane.Start(controlplane.WithServiceAccountAdmission())
	if err != nil {
		return err
	}
	n.CP = cp
	return nil
}

func (n *Node) startKubelet() error {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, n.Containerd)
	path := filepath.Join(n.Dir, "kubelet-config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := n.start("kubelet", nil, filepath.Join(n.CP.Assets, "kubelet"), "--config="+path, "--kubeconfig="+n.CP.Kubeconfig,
		"--root-dir="+n.KubeletRoot, "--cert-dir="+filepath.Join(n.Dir, "kubelet-pki"), "--hostname-override="+NodeName, "-v=2"); err != nil {
		return err
	}
	ready := func() bool {
		node, err := n.CP.Kube.CoreV1().Nodes().Get(context.Background(), NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range node.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				return true
			}
		}
		return false
	}
	if !kubelet.WaitUntil(90*time.Second, ready) {
		return fmt.Errorf("node not Ready:\n%s", n.tail("kubelet"))
	}
	return n.untainted()
}

// untainted waits until kube-controller-manager's node lifecycle controller has removed the
// not-ready taint kubelet registers the node with, so that kube-scheduler places Pods on it.
func (n *Node) untainted() error {
	var taints []corev1.Taint
	if !kubelet.WaitUntil(90*time.Second, func() bool {
		obj, err := n.CP.Kube.CoreV1().Nodes().Get(context.Background(), NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		taints = obj.Spec.Taints
		for _, t := range taints {
			if t.Key == corev1.TaintNodeNotReady {
				return false
			}
		}
		return true
	}) {
		return fmt.Errorf("the node keeps its taints %v:\n%s", taints, n.tail("controller-manager"))
	}
	return nil
}

// startScheduler runs kube-scheduler, for Pods that controllers (Tekton's) create unbound.
func (n *Node) startScheduler() error {
	return n.start("scheduler", nil, filepath.Join(n.CP.Assets, "kube-scheduler"), "--kubeconfig="+n.CP.Kubeconfig,
		"--leader-elect=false", "--secure-port=0", "-v=2")
}

// startControllerManager runs kube-controller-manager: the node lifecycle, ServiceAccount,
// ServiceAccount token (with the API server's signing key, as a cluster's has it), root CA
// publisher, Job, garbage collector and other controllers a cluster has.
func (n *Node) startControllerManager() error {
	ca := filepath.Join(n.Dir, "apiserver-ca.crt")
	if err := os.WriteFile(ca, n.CP.Config.CAData, 0o644); err != nil {
		return err
	}
	return n.start("controller-manager", nil, filepath.Join(n.CP.Assets, "kube-controller-manager"), "--kubeconfig="+n.CP.Kubeconfig,
		"--leader-elect=false", "--secure-port=0", "--root-ca-file="+ca,
		"--service-account-private-key-file="+filepath.Join(n.CP.Env.ControlPlane.APIServer.CertDir, "sa-signer.key"), "-v=2")
}

// StartDriver starts the driver as a node process again, after Stop("driver").
// applyDriverRBAC applies deploy/'s ServiceAccounts and RBAC and writes a kubeconfig of each
// role's ServiceAccount: the driver and the controller run with exactly the deployed rights.
func (n *Node) applyDriverRBAC() error {
	ctx := context.Background()
	if _, err := n.CP.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SystemNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := n.CP.Kubectl(nil, "apply", "-n", SystemNamespace, "-f", filepath.Join(controlplane.RepoRoot(), "deploy", "base", "rbac.yaml")); err != nil {
		return err
	}
	for _, sa := range []string{NodeServiceAccount, ControllerServiceAccount} {
		if err := n.CP.ServiceAccountKubeconfig(SystemNamespace, sa, n.kubeconfigOf(sa)); err != nil {
			return err
		}
	}
	return nil
}

// The system namespace and the ServiceAccounts of deploy/'s two roles.
const (
	SystemNamespace          = "connectors-system"
	NodeServiceAccount       = "connectors-csi-node"
	ControllerServiceAccount = "connectors-csi-controller"
)

// kubeconfigOf is where the kubeconfig of a ServiceAccount of the system namespace is.
func (n *Node) kubeconfigOf(sa string) string { return filepath.Join(n.Dir, sa+".kubeconfig") }

// startController runs the controller role as a process of the node, as Tekton's controller
// runs here (the envtest control plane has no Service network for an in-cluster client), with
// the controller's ServiceAccount and leader election on, as deploy/'s Deployment runs it.
func (n *Node) startController(bin string) error {
	return n.start("controller", nil, bin, "--role=controller", "--kubeconfig="+n.kubeconfigOf(ControllerServiceAccount),
		"--leader-elect=true", "--metrics-listen=127.0.0.1:0", "-v=2")
}

// StartController starts the controller process again (after Stop).
func (n *Node) StartController() error { return n.startController(n.driverBin) }

func (n *Node) StartDriver() error {
	return n.startDriver(n.driverBin)
}

func (n *Node) startDriver(bin string) error {
	n.driverBin = bin
	lis, err := net.Listen("tcp", ":0")
	if err != nil {
		return err
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	// Pods reach the host through the bridge's gateway address.
	n.ProxyURL = fmt.Sprintf("http://10.88.0.1:%d", port)
	socket := filepath.Join(n.KubeletRoot, "plugins", "connectors-csi", "csi.sock")
	if err := n.start("driver", []string{"NODE_NAME=" + NodeName}, bin, "--role=node", "--endpoint=unix://"+socket,
		"--kubeconfig="+n.kubeconfigOf(NodeServiceAccount), "--state-dir="+filepath.Join(n.Dir, "driver-state"),
		"--kubelet-registration-dir="+filepath.Join(n.KubeletRoot, "plugins_registry"),
		fmt.Sprintf("--proxy-listen=:%d", port), "--proxy-url="+n.ProxyURL, "--metrics-listen=127.0.0.1:0", "-v=2"); err != nil {
		return err
	}
	registered := func() bool {
		cn, err := n.CP.Kube.StorageV1().CSINodes().Get(context.Background(), NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, d := range cn.Spec.Drivers {
			if d.Name == "connectors-csi" {
				return true
			}
		}
		return false
	}
	if !kubelet.WaitUntil(60*time.Second, registered) {
		return fmt.Errorf("the driver did not register with kubelet:\n%s\n--- kubelet ---\n%s", n.tail("driver"), n.tail("kubelet"))
	}
	return nil
}

// ProxyPort is the port of the driver's proxy listener.
func (n *Node) ProxyPort() string {
	return n.ProxyURL[strings.LastIndexByte(n.ProxyURL, ':')+1:]
}

// Down tears everything down in reverse: Pods first (so volumes are unpublished while the driver
// runs), then the processes by recorded PID, then what they left in the kernel.
func (n *Node) Down() {
	if n.CP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_ = n.CP.Kube.CoreV1().Pods("").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		kubelet.WaitUntil(60*time.Second, func() bool {
			pods, err := n.CP.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0
		})
		cancel()
	}
	for i := len(n.procs) - 1; i >= 0; i-- {
		p := n.procs[i]
		if p.name == "containerd" {
			n.killContainers()
		}
		stop(p)
	}
	if n.CP != nil {
		_ = n.CP.Stop()
	}
	n.cleanKernel()
}

func (n *Node) killContainers() {
	tasks, _ := run("ctr", "-a", n.Containerd, "-n", "k8s.io", "tasks", "ls", "-q")
	for _, t := range strings.Fields(tasks) {
		_, _ = run("ctr", "-a", n.Containerd, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", t)
	}
	time.Sleep(time.Second)
	for _, t := range strings.Fields(tasks) {
		_, _ = run("ctr", "-a", n.Containerd, "-n", "k8s.io", "tasks", "delete", t)
	}
}

// cleanKernel removes mounts under the state directory, the Pods' network namespaces, the
// kubepods cgroups, the bridge and the tools' network namespace, and restores the sysctls.
func (n *Node) cleanKernel() {
	var mounts []string
	if f, err := os.Open("/proc/self/mounts"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if fields := strings.Fields(s.Text()); len(fields) > 1 && strings.HasPrefix(fields[1], n.Dir) {
				mounts = append(mounts, fields[1])
			}
		}
		f.Close()
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if entries, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "cni-") {
				p := filepath.Join("/var/run/netns", e.Name())
				_ = syscall.Unmount(p, syscall.MNT_DETACH)
				_ = os.Remove(p)
			}
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	for _, c := range cgroups {
		var dirs []string
		_ = filepath.WalkDir(c, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
	if _, err := run("ip", "link", "show", "cni0"); err == nil {
		_, _ = run("ip", "link", "delete", "cni0")
	}
	deleteToolsNetwork()
	for k, v := range n.sysctls {
		_, _ = run("sysctl", "-qw", k+"="+v)
	}
	_ = os.RemoveAll("/var/lib/cni/networks/e2e")
	_ = os.RemoveAll(n.Dir)
}
