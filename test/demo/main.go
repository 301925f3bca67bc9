// Command demo runs Connectors CSI on a local control plane: kube-apiserver and etcd, the
// driver binary, an example ConnectorClass, Connector and Pod, and the Pod's volume published
// through the kubelet stand-in. It prints what happens and the files the Pod would see.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

const ns = "demo"

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root := controlplane.RepoRoot()
	step("Starting a local control plane (kube-apiserver v1.37.2 and etcd) with the Connectors CRDs")
	cp, err := controlplane.Start()
	if err != nil {
		return err
	}
	defer cp.Stop()
	fmt.Println("    API server:", cp.Config.Host)

	step("Applying the CSIDriver object and the built-in git ConnectorClass from deploy/")
	if err := applyDeploy(ctx, cp, root); err != nil {
		return err
	}

	work, err := os.MkdirTemp("", "connectors-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("Starting a Git server (git http-backend) that requires a username and password")
	git, err := gitserver.Start(filepath.Join(work, "git"), false)
	if err != nil {
		return err
	}
	defer git.Close()
	fmt.Printf("    %s/repo.git (user %q)\n", git.URL, git.Username)

	socket := filepath.Join(work, "csi.sock")
	proxyAddr, err := freeAddr()
	if err != nil {
		return err
	}
	step("Starting the driver: bin/connectors-csi --endpoint unix://%s --proxy-listen %s", socket, proxyAddr)
	stop, err := startDriver(cp, root, work, socket, proxyAddr)
	if err != nil {
		return err
	}
	defer stop()

	step("Creating a Secret with the Git server's credentials and a Connector that uses it (namespace %q)", ns)
	if err := createConnector(ctx, cp, git); err != nil {
		return err
	}
	step("Letting ServiceAccount %s/builder get the Connector (RBAC), and creating a Pod with an inline csi volume", ns)
	k, err := kubelet.New(cp.Kube, socket, "connectors-csi", filepath.Join(work, "kubelet"))
	if err != nil {
		return err
	}
	defer k.Close()
	pod, err := createPod(ctx, cp, k)
	if err != nil {
		return err
	}

	step("kubelet stand-in: TokenRequest for a Pod-bound token, then NodePublishVolume over the socket")
	if err := publishWhenAuthorized(ctx, k, pod); err != nil {
		return err
	}
	target := k.TargetPath(pod, "connectors")
	fmt.Println("    mounted at", target)
	if err := printVolume(target); err != nil {
		return err
	}

	step("git clone %s/repo.git with only the volume's .gitconfig (GIT_CONFIG_GLOBAL), through the proxy", git.URL)
	dest := filepath.Join(work, "clone")
	out, err := gitserver.Git("", []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(target, ".gitconfig")}, "clone", git.URL+"/repo.git", dest)
	if err != nil {
		return fmt.Errorf("git clone: %v\n%s", err, out)
	}
	log, err := gitserver.Git(dest, nil, "log", "--oneline")
	if err != nil {
		return err
	}
	fmt.Printf("    cloned; git log: %s", log)
	fromGit, withCredential := 0, 0
	for _, r := range git.Requests() {
		if strings.HasPrefix(r.Header.Get("User-Agent"), "git/") {
			fromGit++
			if user, pass, ok := (&http.Request{Header: r.Header}).BasicAuth(); ok && user == git.Username && pass == git.Password {
				withCredential++
			}
		}
	}
	fmt.Printf("    the Git server saw %d requests from git; %d carried the Connector's credential, injected by the proxy\n", fromGit, withCredential)

	step("NodeUnpublishVolume: the volume is unmounted and removed")
	if err := k.Unpublish(ctx, pod, "connectors"); err != nil {
		return err
	}
	if _, err := os.Stat(target); os.IsNotExist(err) {
		fmt.Println("    target removed")
	}
	step("Done. The Pod held only its own token; the Git password %q never reached the volume.", git.Password)
	return nil
}

func applyDeploy(ctx context.Context, cp *controlplane.ControlPlane, root string) error {
	var drv storagev1.CSIDriver
	if err := controlplane.ReadYAML(filepath.Join(root, "deploy", "base", "csidriver.yaml"), &drv); err != nil {
		return err
	}
	if _, err := cp.Kube.StorageV1().CSIDrivers().Create(ctx, &drv, metav1.CreateOptions{}); err != nil {
		return err
	}
	var git v1alpha1.ConnectorClass
	if err := controlplane.ReadYAML(filepath.Join(root, "deploy", "classes", "git.yaml"), &git); err != nil {
		return err
	}
	for _, name := range []string{"connectors-system", ns} {
		if _, err := cp.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return cp.Client.Create(ctx, &git)
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

func startDriver(cp *controlplane.ControlPlane, root, work, socket, proxyAddr string) (func(), error) {
	args := []string{
		"--endpoint=unix://" + socket,
		"--node-id=demo-node",
		"--kubeconfig=" + cp.Kubeconfig,
		"--state-dir=" + filepath.Join(work, "state"),
		"--metrics-listen=127.0.0.1:0",
		"--proxy-listen=" + proxyAddr,
		"--proxy-url=http://" + proxyAddr,
		"--leader-elect=false",
		// The demo's Git server is on loopback, like everything here.
		"--allow-loopback-destinations",
	}
	if os.Geteuid() != 0 {
		fmt.Println("    not root: volumes are plain directories instead of tmpfs mounts")
		args = append(args, "--unprivileged-mounts")
	}
	logFile, err := os.Create(filepath.Join(work, "driver.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(root, "bin", "connectors-csi"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start driver (run make build first): %w", err)
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		_ = logFile.Close()
	}
	if !kubelet.WaitUntil(30*time.Second, func() bool { _, err := os.Stat(socket); return err == nil }) {
		stop()
		log, _ := os.ReadFile(logFile.Name())
		return nil, fmt.Errorf("driver socket did not appear; driver log:\n%s", log)
	}
	return stop, nil
}

func createConnector(ctx context.Context, cp *controlplane.ControlPlane, git *gitserver.Server) error {
	if _, err := cp.Kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git-credentials"},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": git.Username, "password": git.Password},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	c := &v1alpha1.Connector{
		ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{
			ConnectorClassName: "git",
			Address:            git.URL,
			Auth:               &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "git-credentials"}},
		},
	}
	return cp.Client.Create(ctx, c)
}

func createPod(ctx context.Context, cp *controlplane.ControlPlane, k *kubelet.Kubelet) (*corev1.Pod, error) {
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "use-git", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors"},
			ResourceNames: []string{"git"}, Verbs: []string{"get"}}},
	}
	if err := cp.Client.Create(ctx, role); err != nil {
		return nil, err
	}
	if err := cp.Client.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "use-git", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "use-git"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns}},
	}); err != nil {
		return nil, err
	}
	readOnly := true
	return k.CreatePod(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "git-clone", Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: "builder",
			// The proxy takes only the tokens of its node's Pods (--node-id=demo-node).
			NodeName:   "demo-node",
			Containers: []corev1.Container{{Name: "clone", Image: "alpine/git"}},
			Volumes: []corev1.Volume{{Name: "connectors", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
				Driver: "connectors-csi", ReadOnly: &readOnly,
				VolumeAttributes: map[string]string{"connectors": "git", "configuration.names": "gitconfig"},
			}}}},
		},
	})
}

// publishWhenAuthorized retries while the API server's RBAC cache catches up with the new
// RoleBinding, as kubelet would.
func publishWhenAuthorized(ctx context.Context, k *kubelet.Kubelet, pod *corev1.Pod) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = k.Publish(ctx, pod, "connectors"); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// printVolume lists the volume's files; the Pod token is shortened for reading.
func printVolume(target string) error {
	entries, err := os.ReadDir(target)
	if err != nil {
		return err
	}
	token, _ := os.ReadFile(filepath.Join(target, "context.token"))
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	fmt.Printf("    files: %s\n", strings.Join(names, " "))
	for _, name := range []string{".gitconfig", ".env", "http.proxy", "connector.status.proxyAddress"} {
		b, err := os.ReadFile(filepath.Join(target, name))
		if err != nil {
			return err
		}
		text := string(b)
		if len(token) > 0 {
			text = strings.ReplaceAll(text, string(token), "<pod-token>")
		}
		fmt.Printf("\n    --- %s ---\n    %s\n", name, strings.ReplaceAll(strings.TrimSpace(text), "\n", "\n    "))
	}
	fmt.Printf("\n    <pod-token> is a %d-byte ServiceAccount token bound to Pod %s, audience connectors-csi\n", len(token), "demo/git-clone")
	return nil
}
