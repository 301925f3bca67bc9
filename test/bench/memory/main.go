// Command memory measures the driver's resident memory (SPEC §10: ≤ 64 MiB with 200 mounted
// volumes and 1000 Connectors cached): it runs the real binary against a local control plane,
// creates the Connectors, publishes the volumes through the kubelet stand-in, and reads the
// process's VmRSS. All traffic stays on this machine.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

var (
	connectors  = flag.Int("connectors", 1000, "Connectors to create")
	volumes     = flag.Int("volumes", 200, "volumes to publish")
	evictBinary = flag.Bool("evict-binary", true, "drop bin/connectors-csi from the page cache before starting it (its pages then come from disk, as for every build alike)")
)

func main() {
	flag.Parse()
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root := controlplane.RepoRoot()
	cp, err := controlplane.Start()
	if err != nil {
		return err
	}
	defer cp.Stop()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "base", "csidriver.yaml"))
	if err != nil {
		return err
	}
	var drv storagev1.CSIDriver
	if err := yaml.Unmarshal(b, &drv); err != nil {
		return err
	}
	if _, err := cp.Kube.StorageV1().CSIDrivers().Create(ctx, &drv, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, ns := range []string{"connectors-system", "bench"} {
		if _, err := cp.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	b, err = os.ReadFile(filepath.Join(root, "deploy", "classes", "git.yaml"))
	if err != nil {
		return err
	}
	var class v1alpha1.ConnectorClass
	if err := yaml.Unmarshal(b, &class); err != nil {
		return err
	}
	if err := cp.Client.Create(ctx, &class); err != nil {
		return err
	}
	for i := 0; i < *connectors; i++ {
		if err := cp.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%04d", i), Namespace: "bench"},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "git", Address: fmt.Sprintf("https://git%04d.example.com", i)}}); err != nil {
			return err
		}
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "bench-get"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"connectors.alauda.io"}, Resources: []string{"connectors"}, Verbs: []string{"get"}}}}); err != nil {
		return err
	}
	if err := cp.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-get"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "bench-get"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: "bench"}}}); err != nil {
		return err
	}

	work, err := os.MkdirTemp("", "bench-memory-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	socket := filepath.Join(work, "csi.sock")
	args := []string{"--endpoint=unix://" + socket, "--node-id=bench", "--kubeconfig=" + cp.Kubeconfig,
		"--state-dir=" + filepath.Join(work, "state"), "--metrics-listen=127.0.0.1:19099", "--metrics-auth=none", "--proxy-listen=127.0.0.1:0", "--leader-elect=false"}
	if os.Geteuid() != 0 {
		args = append(args, "--unprivileged-mounts")
	}
	// BENCH_ROLE=node measures the DaemonSet's process alone (the default runs both roles).
	if role := os.Getenv("BENCH_ROLE"); role != "" {
		args = append(args, "--role="+role)
	}
	if *evictBinary {
		if err := evictFromPageCache(filepath.Join(root, "bin", "connectors-csi")); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(root, "bin", "connectors-csi"), args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start bin/connectors-csi (make build first): %w", err)
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	if !kubelet.WaitUntil(30*time.Second, func() bool { _, err := os.Stat(socket); return err == nil }) {
		return fmt.Errorf("driver did not start")
	}
	// Idle is after the caches synced (ready) and the start-up pages were given back
	// (--release-startup-pages, once ready).
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		res, err := http.Get("http://127.0.0.1:19099/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}) {
		return fmt.Errorf("driver never became ready")
	}
	time.Sleep(2 * time.Second)
	k, err := kubelet.New(cp.Kube, socket, "connectors-csi", filepath.Join(work, "kubelet"))
	if err != nil {
		return err
	}
	defer k.Close()
	idle := rss(cmd.Process.Pid)
	readOnly := true
	var pods []*corev1.Pod
	for i := 0; i < *volumes; i++ {
		pod, err := k.CreatePod(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%03d", i), Namespace: "bench"},
			Spec: corev1.PodSpec{ServiceAccountName: "builder", Containers: []corev1.Container{{Name: "c", Image: "x"}},
				Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
					Driver: "connectors-csi", ReadOnly: &readOnly,
					VolumeAttributes: map[string]string{"connectors": fmt.Sprintf("c%04d", i%*connectors)}}}}}}})
		if err != nil {
			return err
		}
		var perr error
		if !kubelet.WaitUntil(20*time.Second, func() bool { perr = k.Publish(ctx, pod, "v"); return perr == nil }) {
			return fmt.Errorf("publish %s: %w", pod.Name, perr)
		}
		pods = append(pods, pod)
	}
	loaded := rss(cmd.Process.Pid)
	if os.Getenv("BENCH_DUMP_METRICS") != "" {
		out, _ := exec.Command("curl", "-s", "http://127.0.0.1:19099/metrics").Output()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "go_memstats_") && !strings.Contains(l, "#") {
				fmt.Println(l)
			}
		}
	}
	if fi, err := os.Stat(cmd.Path); err == nil {
		fmt.Printf("Binary %s: %.1f MiB (stripped: make build).\n\n", cmd.Path, float64(fi.Size())/(1<<20))
	}
	fmt.Printf("| state | RSS | anonymous | file-backed |\n|---|---|---|---|\n")
	fmt.Printf("| %d Connectors cached, driver idle | %s |\n| + %d volumes published | %s |\n", *connectors, idle, *volumes, loaded)
	for _, pod := range pods {
		_, _ = k.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: kubelet.VolumeID(pod, "v"), TargetPath: k.TargetPath(pod, "v")})
	}
	return nil
}

// usage is a process's resident memory: all of it, and the anonymous (private) part; the rest
// is the binary's file pages, shared with the page cache.
type usage struct{ total, anon float64 }

func (u usage) String() string {
	return fmt.Sprintf("%.1f MiB | %.1f MiB | %.1f MiB", u.total, u.anon, u.total-u.anon)
}

// rss reads a process's memory from /proc.
func rss(pid int) usage {
	return usage{total: statusMiB(pid, "VmRSS:"), anon: statusMiB(pid, "RssAnon:")}
}

// statusMiB reads one kB field of /proc/<pid>/status in MiB.
func statusMiB(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			return kb / 1024
		}
	}
	return -1
}

// evictFromPageCache drops file's pages from the page cache (written out first), so that the
// process started from it reads them from disk. How many of an executable's pages a process
// maps on each fault depends on how they sit in the page cache: as a writer (the linker, an
// image unpack) left them, 3-9 MiB more of them than as read from disk after 200 publishes,
// varying from one build to the next (docs/benchmarks.md). Read from disk, the figure is the
// same for every build.
func evictFromPageCache(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
