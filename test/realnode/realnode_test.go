//go:build realnode

package realnode

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

var node *Node

// driverDigest is the digest of the driver's image (make image's builder), as dist/install.yaml
// pins it.
var driverDigest string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the real-node lane needs root (kubelet, containerd, mounts)")
		os.Exit(1)
	}
	// envtest and the client logs through controller-runtime's logger: to klog (stderr) like
	// the rest of the lane, instead of its warning that no logger was set.
	ctrl.SetLogger(klog.Background())
	code, err := runLane(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "realnode:", err)
		code = 1
	}
	os.Exit(code)
}

func runLane(m *testing.M) (int, error) {
	work, err := os.MkdirTemp("", "realnode-build-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(work)
	root := controlplane.RepoRoot()
	bin := filepath.Join(work, "connectors-csi")
	pause := filepath.Join(work, "pause")
	crane := filepath.Join(work, "crane")
	for out, pkg := range map[string]string{bin: "./cmd/connectors-csi", pause: "./test/realnode/pause",
		crane: "github.com/google/go-containerregistry/cmd/crane"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("go build %s: %v: %s", pkg, err, b)
		}
	}
	// The crane image carries crane and an image to push.
	payload := filepath.Join(work, "payload.tar")
	if err := randomImage(payload); err != nil {
		return 1, err
	}
	craneFiles := busybox()
	craneFiles["bin/crane"], craneFiles["payload.tar"] = crane, payload
	images := map[string]string{}
	for _, im := range []struct {
		ref        string
		files      func() (files, error)
		entrypoint string
	}{
		{"localhost/pause:e2e", fixed(files{"pause": pause}), "/pause"},
		{"localhost/busybox:e2e", fixed(busybox()), "/bin/sh"},
		{"localhost/crane:e2e", fixed(craneFiles), "/bin/sh"},
		{"localhost/git:e2e", gitImage, "/bin/sh"},
		{"localhost/maven:e2e", mavenImage, "/bin/sh"},
		{"localhost/node:e2e", nodeImage, "/bin/sh"},
	} {
		fs, err := im.files()
		if err != nil {
			return 1, fmt.Errorf("image %s: %w", im.ref, err)
		}
		images[im.ref] = filepath.Join(work, strings.NewReplacer("localhost/", "", ":e2e", ".tar").Replace(im.ref))
		if err := buildImage(fs, im.ref, images[im.ref], im.entrypoint); err != nil {
			return 1, fmt.Errorf("image %s: %w", im.ref, err)
		}
	}
	// The driver's image is make image's, for this machine's platform.
	images["localhost/connectors-csi:e2e"] = filepath.Join(work, "driver.tar")
	if driverDigest, err = driverImage(work, images["localhost/connectors-csi:e2e"]); err != nil {
		return 1, err
	}
	node, err = Up(context.Background(), bin, images)
	defer func() {
		if node != nil {
			node.Down()
		}
	}()
	if err != nil {
		return 1, err
	}
	// A pull by digest would also name the image by its digest; an import names it by tag only,
	// so name it as make release's install file refers to it.
	if out, err := run("ctr", "-a", node.Containerd, "-n", "k8s.io", "images", "tag", "localhost/connectors-csi:e2e",
		"localhost/connectors-csi@"+driverDigest); err != nil {
		return 1, fmt.Errorf("name the driver image by its digest: %v: %s", err, out)
	}
	if err := setupCluster(); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// setupCluster applies the CSIDriver of deploy/ and the built-in git class.
func setupCluster() error {
	ctx := context.Background()
	root := controlplane.RepoRoot()
	var drv storagev1.CSIDriver
	if err := controlplane.ReadYAML(filepath.Join(root, "deploy", "base", "csidriver.yaml"), &drv); err != nil {
		return err
	}
	// The shortest lifetime the API allows, so that kubelet rotates the token during the run
	// (at 80% of it: after 8 minutes).
	drv.Spec.TokenRequests[0].ExpirationSeconds = ptrInt64(600)
	if _, err := node.CP.Kube.StorageV1().CSIDrivers().Create(ctx, &drv, metav1.CreateOptions{}); err != nil {
		return err
	}
	var git v1alpha1.ConnectorClass
	if err := controlplane.ReadYAML(filepath.Join(root, "deploy", "classes", "git.yaml"), &git); err != nil {
		return err
	}
	return node.CP.Client.Create(ctx, &git)
}

// waitFile waits for a file the container writes into its results directory.
func waitFile(t *testing.T, path string, timeout time.Duration) string {
	t.Helper()
	var b []byte
	if !kubelet.WaitUntil(timeout, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil
	}) {
		t.Fatalf("%s never appeared\n--- driver ---\n%s\n--- kubelet ---\n%s", path, node.tail("driver"), node.tail("kubelet"))
	}
	return string(b)
}

// TestPodUsesProxyWithOnlyItsToken: a real Pod gets the git Connector's volume from kubelet,
// reaches the tool through the reverse proxy with only the rendered token, and holds no
// credential; deleting the Pod unpublishes the volume.
func TestPodUsesProxyWithOnlyItsToken(t *testing.T) {
	ctx := context.Background()
	kube := node.CP.Kube
	ns := "e2e"
	tool := setupNamespace(t, ns)
	results := filepath.Join(node.Dir, "results", "reader")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := `ls -a /connectors > /results/files
env > /results/env
wget -q -O /results/refs --header "Authorization: Bearer $(cat /connectors/context.token)" \
  "$(cat /connectors/connector.status.proxyAddress)/repo.git/info/refs?service=git-upload-pack"
echo $? > /results/wget-exit
sleep 3600`
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, scriptPod(ns, "reader", results, script), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if exit := strings.TrimSpace(waitFile(t, filepath.Join(results, "wget-exit"), 120*time.Second)); exit != "0" {
		t.Fatalf("wget through the proxy exited %s\n--- driver ---\n%s", exit, node.tail("driver"))
	}
	if refs, _ := os.ReadFile(filepath.Join(results, "refs")); !strings.Contains(string(refs), "refs/heads/main") {
		t.Fatalf("the container did not get the ref advertisement: %q", refs)
	}
	listing, _ := os.ReadFile(filepath.Join(results, "files"))
	for _, f := range []string{".gitconfig", "context.token", "ca.crt", ".env"} {
		if !strings.Contains(string(listing), f) {
			t.Errorf("the container does not see %s: %s", f, listing)
		}
	}
	pid := containerPID(t, "reader", "c")
	if found := searchContainer(t, pid, tool.Password); len(found) > 0 {
		t.Errorf("the container sees the tool's password in %v", found)
	}
	// The search works: the Pod's own token is found where it belongs.
	tok, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/connectors/context.token", pid))
	if err != nil || len(tok) == 0 {
		t.Fatalf("read the token through /proc: %v", err)
	}
	if found := searchContainer(t, pid, string(tok)); len(found) == 0 {
		t.Error("the search did not even find the Pod's token in its volume")
	}
	for _, r := range tool.Requests() {
		if r.Header.Get("User-Agent") != "connectors-csi-probe" && r.Authorization != "Basic "+basicOf(tool.Username, tool.Password) {
			t.Errorf("the tool saw %q on %s", r.Authorization, r.Path)
		}
	}

	deleteAndCheckUnmounted(t, pod)
}

// deleteAndCheckUnmounted deletes a Pod and waits until kubelet has unpublished its volumes.
func deleteAndCheckUnmounted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx, kube := context.Background(), node.CP.Kube
	if err := kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		_, err := kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return err != nil
	}) {
		t.Fatalf("the Pod was not deleted\n--- kubelet ---\n%s", node.tail("kubelet"))
	}
	// kubelet tears volumes down after the Pod object is gone.
	var left []string
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		left = volumeMounts(string(pod.UID))
		return len(left) == 0
	}) {
		t.Errorf("connectors volumes still mounted after the Pod was deleted: %v", left)
	}
}

// scriptPod is a busybox Pod running script with the git Connector's volume at /connectors and
// a host directory at /results for what it reports.
func scriptPod(ns, name, results, script string) *corev1.Pod {
	return imagePod(ns, name, results, script, "localhost/busybox:e2e", "git")
}

// configurationOf is the configuration a test's volume of each Connector renders (without
// configuration.names a volume holds only the built-in files).
var configurationOf = map[string]string{"git": "gitconfig", "secure": "gitconfig", "registry": "registry-config", "npm": "npmrc"}

// imagePod is scriptPod with another image and Connector.
func imagePod(ns, name, results, script, image, connector string) *corev1.Pod {
	readOnly, hostDir, grace := true, corev1.HostPathDirectory, int64(2)
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: NodeName, ServiceAccountName: "builder", AutomountServiceAccountToken: new(bool),
			TerminationGracePeriodSeconds: &grace, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", script},
				VolumeMounts: []corev1.VolumeMount{{Name: "connectors", MountPath: "/connectors", ReadOnly: true},
					{Name: "results", MountPath: "/results"}}}},
			Volumes: []corev1.Volume{
				{Name: "connectors", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "connectors-csi", ReadOnly: &readOnly,
					VolumeAttributes: map[string]string{"connectors": connector, "configuration.names": configurationOf[connector]}}}},
				{Name: "results", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: results, Type: &hostDir}}},
			}}}
}

func basicOf(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// volumeMounts lists the tmpfs mounts of a Pod's connectors volumes in the host's mount table.
func volumeMounts(podUID string) []string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[2] == "tmpfs" && strings.Contains(f[1], podUID) && strings.Contains(f[1], "kubernetes.io~csi/connectors") {
			out = append(out, f[1])
		}
	}
	return out
}

// allowGet lets ServiceAccount builder of ns get a Connector.
func allowGet(t *testing.T, ns, connector string) {
	t.Helper()
	ctx, kube := context.Background(), node.CP.Kube
	name := "use-" + connector
	if _, err := kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"connectors.alauda.io"}, Resources: []string{"connectors"}, ResourceNames: []string{connector}, Verbs: []string{"get"}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setupNamespace creates a namespace with a git Connector for a fresh Git server, and a
// ServiceAccount builder that may get it.
func setupNamespace(t *testing.T, ns string) *gitserver.Server {
	t.Helper()
	tool := startGitTool(t, false)
	createNamespace(t, ns)
	createConnector(t, ns, "git", "git", tool.URL, tool.Username, tool.Password)
	return tool
}

// createConnector creates, in ns, a Connector of class at address with a Basic credential
// (Secret <name>-auth), and ServiceAccount builder that may get it.
func createConnector(t *testing.T, ns, name, class, address, username, password string) {
	t.Helper()
	ctx, kube := context.Background(), node.CP.Kube
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-auth"},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": username, "password": password}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := node.CP.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: class, Address: address,
			Auth: &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: name + "-auth"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "builder"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	allowGet(t, ns, name)
}

// TestRestartsKeepVolumes restarts the driver, then kubelet, under a running Pod: the
// container keeps its files and keeps reaching the tool through the proxy, no mount is added,
// and deleting the Pod afterwards unmounts cleanly.
func TestRestartsKeepVolumes(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	ns := "restarts"
	setupNamespace(t, ns)
	results := filepath.Join(node.Dir, "results", "survivor")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := `while true; do
  wget -q -O /dev/null --header "Authorization: Bearer $(cat /connectors/context.token)" \
    "$(cat /connectors/connector.status.proxyAddress)/repo.git/info/refs?service=git-upload-pack"
  rc=$?
  echo "$(date +%s) $rc" >> /results/wget
  sleep 1
done`
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, scriptPod(ns, "survivor", results, script), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// okSince waits for a successful proxied request made after a moment.
	okSince := func(after time.Time) bool {
		return kubelet.WaitUntil(90*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(results, "wget"))
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var ts int64
				var rc int
				if _, err := fmt.Sscanf(line, "%d %d", &ts, &rc); err == nil && rc == 0 && ts > after.Unix() {
					return true
				}
			}
			return false
		})
	}
	if !okSince(time.Time{}) {
		t.Fatalf("the Pod never reached the tool\n--- driver ---\n%s", node.tail("driver"))
	}
	for _, component := range []string{"driver", "kubelet"} {
		restarted := time.Now()
		if err := node.Restart(component); err != nil {
			t.Fatal(err)
		}
		if !okSince(restarted) {
			t.Fatalf("after the %s restart the Pod no longer reaches the tool\n--- %s ---\n%s", component, component, node.tail(component))
		}
		if n := len(volumeMounts(string(pod.UID))); n != 1 {
			t.Fatalf("%d mounts of the Pod's volume after the %s restart, want 1", n, component)
		}
		// A Pod started after the restart gets its volume too: kubelet still knows the driver.
		deleteAndCheckUnmounted(t, runReader(t, ns, "after-"+component))
	}
	deleteAndCheckUnmounted(t, pod)
}

// Checks for gateByApproval: the built-in one (the ApprovalTask of the PipelineRun that runs
// the Pod, through its verified owner chain), and one for a Pod outside Tekton (the
// ApprovalTask labelled with the Pod's UID, which no other Pod can have).
const (
	checkPipelineRun = `{name: approval, ref: {configMap: {name: connectors-approvals-in-pipeline}}}`
	checkPodUID      = `{name: approval, spec: {selector: {objectRef: {apiVersion: openshift-pipelines.org/v1alpha1, kind: ApprovalTask}, ` +
		`matchLabels: {example.com/pod-uid: '{{ .object.metadata.uid }}'}}}}`
)

// gateByApproval turns on the approval flow (connectors-config, until the test ends) with the
// built-in templates and an ApprovalTask-shaped CRD, and gates the Connector in ns by an
// AccessPolicy with one check: a Pod may use it once the check's ApprovalTask is approved.
func gateByApproval(t *testing.T, ns, connector, check string) {
	t.Helper()
	enableApproval(t)
	policy := fmt.Sprintf(`apiVersion: connectors.alauda.io/v1alpha1
kind: AccessPolicy
metadata: {name: promote, namespace: %s}
spec:
  connector: {names: [%s]}
  checkGrantedPermission:
    spec:
      checks: [%s]
      roleTemplate: {ref: {configMap: {name: connectors-use-connectors-proxy-in-pod}}}
`, ns, connector, check)
	if _, err := node.CP.Kubectl([]byte(policy), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// enableApproval installs what AccessPolicies need (the ApprovalTask CRD, the role and check
// templates) and turns the approval flags on until t ends.
func enableApproval(t *testing.T) {
	t.Helper()
	root := controlplane.RepoRoot()
	if _, err := node.CP.Kubectl(nil, "apply", "-f", filepath.Join(root, "test", "e2e", "testdata", "approvaltask-crd.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.CP.Kubectl(nil, "apply", "-n", "connectors-system", "-f", filepath.Join(root, "deploy", "base", "templates.yaml")); err != nil {
		t.Fatal(err)
	}
	flags := `apiVersion: v1
kind: ConfigMap
metadata: {name: connectors-config, namespace: connectors-system}
data: {enable-connector-proxy-permissions: "true", enable-connectors-approval: "true"}
`
	if _, err := node.CP.Kubectl([]byte(flags), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = node.CP.Kubectl(nil, "delete", "configmap", "-n", "connectors-system", "connectors-config")
	})
}

// approve creates the approved ApprovalTask approve-<value> labelled label=value.
func approve(t *testing.T, ns, label, value string) {
	t.Helper()
	task := fmt.Sprintf(`apiVersion: openshift-pipelines.org/v1alpha1
kind: ApprovalTask
metadata: {name: approve-%s, namespace: %s, labels: {%s: %s}}
status: {state: approved}
`, value, ns, label, value)
	if _, err := node.CP.Kubectl([]byte(task), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// waitEvent waits for an event of an object whose message contains want, and returns it.
func waitEvent(t *testing.T, ns, object, want string) string {
	t.Helper()
	var event string
	if !kubelet.WaitUntil(90*time.Second, func() bool {
		evs, err := node.CP.Kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + object})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, want) {
				event = e.Message
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no event of %s/%s says %q\n--- driver ---\n%s", ns, object, want, node.tail("driver"))
	}
	return event
}

// TestApprovalGatedPod: a Pod whose Connector is gated by an AccessPolicy stays
// ContainerCreating with an event naming its AccessRequest, starts once the ApprovalTask (of
// the Pod's UID: the Pod runs outside Tekton) is approved, and after the Pod is deleted the
// proxy refuses its token.
func TestApprovalGatedPod(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	ns := "approval"
	setupNamespace(t, ns)
	gateByApproval(t, ns, "git", checkPodUID)
	results := filepath.Join(node.Dir, "results", "gated")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := `cp /connectors/context.token /results/token; echo started > /results/started; sleep 3600`
	spec := scriptPod(ns, "gated", results, script)
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	event := waitEvent(t, ns, "gated", "waiting for AccessRequest approval/git-gated-")
	t.Logf("event: %s", event)
	if p, _ := kube.CoreV1().Pods(ns).Get(ctx, "gated", metav1.GetOptions{}); p.Status.Phase != corev1.PodPending {
		t.Fatalf("the gated Pod is %s, want Pending (ContainerCreating)", p.Status.Phase)
	}
	if _, err := os.Stat(filepath.Join(results, "started")); err == nil {
		t.Fatal("the gated Pod's container started before the approval")
	}
	approve(t, ns, "example.com/pod-uid", string(pod.UID))
	waitFile(t, filepath.Join(results, "started"), 120*time.Second)
	token, _ := os.ReadFile(filepath.Join(results, "token"))
	proxied := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+node.ProxyPort()+"/namespaces/approval/connectors/git/repo.git/info/refs?service=git-upload-pack", nil)
		req.Header.Set("Authorization", "Bearer "+string(token))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := proxied(); code != http.StatusOK {
		t.Fatalf("the approved Pod's token gets %d from the proxy", code)
	}
	deleteAndCheckUnmounted(t, pod)
	if !kubelet.WaitUntil(30*time.Second, func() bool { c := proxied(); return c == http.StatusForbidden || c == http.StatusUnauthorized }) {
		t.Fatal("the deleted Pod's token is still let through")
	}
}

// TestPodPushesAndPullsImage: a Pod with crane pushes an image to a real registry with token
// auth and pulls it back, through the forward proxy, with only the rendered .env; the proxy
// answers the registry's token challenge with the Connector's credential.
func TestPodPushesAndPullsImage(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	reg := startRegistryTool(t)
	ns := "registry"
	setupNamespace(t, ns)
	applyClass(t, "oci.yaml")
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "registry-auth"},
		Type: v1alpha1.SecretTypeDistributionRegistryAuth, StringData: map[string]string{"username": reg.Username, "password": reg.Password}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := node.CP.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "registry", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "oci", Address: reg.URL,
			AddressExtensions: []v1alpha1.NamedAddress{{Name: "token", Value: reg.TokenURL}},
			Auth:              &v1alpha1.ConnectorAuth{Name: "registryToken", SecretRef: &v1alpha1.SecretRef{Name: "registry-auth"}}}}); err != nil {
		t.Fatal(err)
	}
	allowGet(t, ns, "registry")
	results := filepath.Join(node.Dir, "results", "pusher")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(reg.URL, "http://") + "/team/app:v1"
	script := `. /connectors/.env
crane push --insecure /payload.tar ` + ref + ` > /results/push.log 2>&1 &&
crane pull --insecure ` + ref + ` /tmp/pulled.tar >> /results/push.log 2>&1 &&
crane digest --insecure ` + ref + ` > /results/digest 2>> /results/push.log
echo $? > /results/exit
env > /results/env
sleep 3600`
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, imagePod(ns, "pusher", results, script, "localhost/crane:e2e", "registry"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if exit := strings.TrimSpace(waitFile(t, filepath.Join(results, "exit"), 120*time.Second)); exit != "0" {
		log, _ := os.ReadFile(filepath.Join(results, "push.log"))
		t.Fatalf("crane exited %s:\n%s\n--- driver ---\n%s", exit, log, node.tail("driver"))
	}
	if d, _ := os.ReadFile(filepath.Join(results, "digest")); !strings.HasPrefix(string(d), "sha256:") {
		t.Fatalf("no digest of the pushed image: %q", d)
	}
	if found := searchContainer(t, containerPID(t, "pusher", "c"), reg.Password); len(found) > 0 {
		t.Errorf("the container sees the registry password in %v", found)
	}
	var bearer int
	for _, s := range reg.Requests() {
		if s.Server == "registry" && strings.HasPrefix(s.Authorization, "Bearer ") {
			bearer++
		}
		if s.Server == "registry" && strings.HasPrefix(s.Authorization, "Basic ") {
			t.Errorf("the registry got basic credentials on %s", s.Path)
		}
	}
	if bearer == 0 {
		t.Error("the registry never saw a token: token auth was not exercised")
	}
	deleteAndCheckUnmounted(t, pod)
}

// containerPID finds the PID of a Pod's container through containerd.
func containerPID(t *testing.T, pod, container string) int {
	t.Helper()
	out, err := run("ctr", "-a", node.Containerd, "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatalf("ctr tasks ls: %v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "RUNNING" {
			continue
		}
		info, err := run("ctr", "-a", node.Containerd, "-n", "k8s.io", "containers", "info", f[0])
		if err != nil {
			continue
		}
		var c struct{ Labels map[string]string }
		if json.Unmarshal([]byte(info), &c) == nil && c.Labels["io.kubernetes.pod.name"] == pod && c.Labels["io.kubernetes.container.name"] == container {
			pid, _ := strconv.Atoi(f[1])
			return pid
		}
	}
	t.Fatalf("no running container %s of Pod %s", container, pod)
	return 0
}

// searchContainer looks for secret in everything the container sees: its environment and every
// file of its mount namespace (through /proc/<pid>/root), volumes included.
func searchContainer(t *testing.T, pid int, secret string) []string {
	t.Helper()
	var found []string
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil && bytes.Contains(env, []byte(secret)) {
		found = append(found, "environment")
	}
	// The trailing slash makes WalkDir enter the magic symlink /proc/<pid>/root.
	root := fmt.Sprintf("/proc/%d/root/", pid)
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel := "/" + strings.TrimPrefix(p, root)
		if d.IsDir() && (rel == "/proc" || rel == "/sys" || rel == "/dev") {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err != nil || info.Size() > 8<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(secret)) {
			found = append(found, rel)
		}
		return nil
	})
	return found
}

// TestGitCloneAndPushInPod: a container with Debian's git clones and pushes with only the
// volume at $HOME (.gitconfig: the reverse proxy), and another with only .env and ca.crt
// through the forward proxy to an https server.
func TestGitCloneAndPushInPod(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	ns := "git"
	plain := setupNamespace(t, ns)
	secure := startGitTool(t, true)
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "secure-auth"},
		Type: corev1.SecretTypeBasicAuth, StringData: map[string]string{"username": secure.Username, "password": secure.Password}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "secure-ca"},
		Data: map[string][]byte{"ca.crt": secure.CA.PEM}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := node.CP.Client.Create(ctx, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: ns},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: "git", Address: secure.URL,
			Auth:            &v1alpha1.ConnectorAuth{Name: "basicAuth", SecretRef: &v1alpha1.SecretRef{Name: "secure-auth"}},
			CACertSecretRef: &v1alpha1.LocalSecretRef{Name: "secure-ca"}}}); err != nil {
		t.Fatal(err)
	}
	allowGet(t, ns, "secure")
	push := `cd /tmp && git clone -q %s/repo.git r > /results/git.log 2>&1 && cd r &&
git -c user.name=pod -c user.email=pod@example.com commit -q --allow-empty -m "from a pod" >> /results/git.log 2>&1 &&
git push -q origin HEAD:main >> /results/git.log 2>&1
echo $? > /results/exit
sleep 3600`
	cases := []struct {
		name, connector, url, env string
		server                    *gitserver.Server
	}{
		{"reverse", "git", plain.URL, "export HOME=/connectors\n", plain},
		{"forward", "secure", secure.URL, ". /connectors/.env\nexport HOME=/tmp GIT_SSL_CAINFO=/connectors/ca.crt\n", secure},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			results := filepath.Join(node.Dir, "results", "git-"+tc.name)
			if err := os.MkdirAll(results, 0o777); err != nil {
				t.Fatal(err)
			}
			script := tc.env + fmt.Sprintf(push, tc.url)
			pod, err := kube.CoreV1().Pods(ns).Create(ctx, imagePod(ns, "git-"+tc.name, results, script, "localhost/git:e2e", tc.connector), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if exit := strings.TrimSpace(waitFile(t, filepath.Join(results, "exit"), 120*time.Second)); exit != "0" {
				log, _ := os.ReadFile(filepath.Join(results, "git.log"))
				t.Fatalf("git in the Pod exited %s:\n%s\n--- driver ---\n%s", exit, log, node.tail("driver"))
			}
			var pushed bool
			for _, r := range tc.server.Requests() {
				pushed = pushed || strings.HasSuffix(r.Path, "git-receive-pack")
			}
			if !pushed {
				t.Error("no push reached the Git server")
			}
			if found := searchContainer(t, containerPID(t, "git-"+tc.name, "c"), tc.server.Password); len(found) > 0 {
				t.Errorf("the container sees the Git password in %v", found)
			}
			deleteAndCheckUnmounted(t, pod)
		})
	}
}

// TestTokenRotation: kubelet rotates the Pod's token (the CSIDriver asks for 600 s, the
// shortest allowed; kubelet renews at 80%), the driver rewrites it in the running container's
// volume on republish, and requests with the new token keep working. It takes about 8 minutes.
func TestTokenRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: token rotation takes about 8 minutes")
	}
	ctx, kube := context.Background(), node.CP.Kube
	ns := "rotation"
	setupNamespace(t, ns)
	results := filepath.Join(node.Dir, "results", "rotation")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := `cp /connectors/context.token /results/first
while true; do
  cp /connectors/context.token /results/current
  wget -q -O /dev/null --header "Authorization: Bearer $(cat /connectors/context.token)" \
    "$(cat /connectors/connector.status.proxyAddress)/repo.git/info/refs?service=git-upload-pack"
  rc=$?
  if ! cmp -s /results/first /results/current; then echo $rc >> /results/rotated; fi
  sleep 5
done`
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, scriptPod(ns, "rotation", results, script), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(11*time.Minute, func() bool {
		b, _ := os.ReadFile(filepath.Join(results, "rotated"))
		return strings.Contains(string(b), "0\n")
	}) {
		b, _ := os.ReadFile(filepath.Join(results, "rotated"))
		t.Fatalf("the token in the container never changed with a working request after it (rotated: %q)", b)
	}
	deleteAndCheckUnmounted(t, pod)
}

// releasedWorkloads are the DaemonSet and the controller Deployment of the install file make
// release renders (hack/release.sh), their image pinned to the lane's driver image by digest.
func releasedWorkloads(t *testing.T, root string) (appsv1.DaemonSet, appsv1.Deployment) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "install.yaml")
	cmd := exec.Command(filepath.Join(root, "hack", "release.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DIGEST="+driverDigest, "IMAGE_REPO=localhost/connectors-csi", "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/release.sh: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	var deployment appsv1.Deployment
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var typeMeta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &typeMeta); err != nil {
			t.Fatal(err)
		}
		switch typeMeta.Kind {
		case "DaemonSet":
			err = yaml.Unmarshal([]byte(doc), &ds)
		case "Deployment":
			err = yaml.Unmarshal([]byte(doc), &deployment)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if ds.Name == "" || deployment.Name == "" {
		t.Fatalf("%s lacks the DaemonSet or the Deployment", out)
	}
	return ds, deployment
}

// hostKubeconfig mounts, in place of the in-cluster client (the control plane has no Service
// network), a copy of a system ServiceAccount's kubeconfig at /etc/connectors/kubeconfig, readable
// by the container's user.
func hostKubeconfig(t *testing.T, spec *corev1.PodSpec, ctr *corev1.Container, sa string) {
	t.Helper()
	dir := filepath.Join(node.Dir, sa+"-kubeconfig")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	kc, err := os.ReadFile(node.kubeconfigOf(sa))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kc, 0o644); err != nil {
		t.Fatal(err)
	}
	hostDir := corev1.HostPathDirectory
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "kubeconfig", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostDir}}})
	ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: "kubeconfig", MountPath: "/etc/connectors", ReadOnly: true})
	ctr.Args = append(ctr.Args, "--kubeconfig=/etc/connectors/kubeconfig")
	spec.HostNetwork, spec.PriorityClassName = true, ""
	spec.AutomountServiceAccountToken = new(bool)
	ctr.ImagePullPolicy = corev1.PullNever // imported into containerd: there is no registry
	ctr.LivenessProbe, ctr.ReadinessProbe, ctr.Ports = nil, nil, nil
}

// withoutArgs drops the arguments with these flag prefixes.
func withoutArgs(args []string, prefixes ...string) []string {
	var kept []string
	for _, a := range args {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(a, p) }) {
			kept = append(kept, a)
		}
	}
	return kept
}

// TestDriverAsDaemonSetPod runs the driver the way a release installs it — the DaemonSet and
// the controller Deployment of make release's install file with make image's image (this
// platform's, imported into containerd), whose Pods kube-controller-manager makes. The node
// Pod: privileged, as root though the image's default user is not, kubelet's pods directory
// mounted Bidirectional, registering itself with kubelet. The controller Pod: non-root, a
// read-only root filesystem, no capability. A Pod uses the node's volume and proxy, and its
// Connector's status comes from the controller Pod. They replace the host processes while
// they run.
func TestDriverAsDaemonSetPod(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	root := controlplane.RepoRoot()
	ds, deployment := releasedWorkloads(t, root)
	node.Stop("driver")
	node.Stop("controller")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	metricsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec.DeepCopy()
	driverCtr := &spec.Containers[0]
	if want := "localhost/connectors-csi@" + driverDigest; driverCtr.Image != want || deployment.Spec.Template.Spec.Containers[0].Image != want {
		t.Fatalf("the released DaemonSet runs %q and the Deployment %q, want make image's %s", driverCtr.Image, deployment.Spec.Template.Spec.Containers[0].Image, want)
	}
	// The same paths as the host, so the targets kubelet names are the driver's too.
	kroot := node.KubeletRoot
	driverCtr.Args = append(withoutArgs(driverCtr.Args, "--kubelet-plugin-endpoint=", "--proxy-listen=", "--metrics-listen="),
		"--kubelet-plugin-endpoint="+filepath.Join(kroot, "plugins", "connectors-csi", "csi.sock"),
		fmt.Sprintf("--proxy-listen=:%d", port), fmt.Sprintf("--proxy-url=http://10.88.0.1:%d", port), fmt.Sprintf("--metrics-listen=127.0.0.1:%d", metricsPort))
	for i := range driverCtr.VolumeMounts {
		if driverCtr.VolumeMounts[i].Name == "pods-dir" {
			driverCtr.VolumeMounts[i].MountPath = filepath.Join(kroot, "pods")
		}
	}
	hostPaths := map[string]string{
		"plugin-dir": filepath.Join(kroot, "plugins", "connectors-csi"), "state-dir": filepath.Join(kroot, "plugins", "connectors-csi", "state"),
		"registration-dir": filepath.Join(kroot, "plugins_registry"), "pods-dir": filepath.Join(kroot, "pods"),
	}
	for i := range spec.Volumes {
		if p, ok := hostPaths[spec.Volumes[i].Name]; ok {
			spec.Volumes[i].HostPath.Path = p
		}
	}
	hostKubeconfig(t, spec, driverCtr, NodeServiceAccount)
	ds.Spec.Template.Spec = *spec

	// The controller: one replica (one node), no webhook (the lane registers none: the
	// webhook is tested against envtest), metrics on loopback (host network).
	ctlSpec := deployment.Spec.Template.Spec.DeepCopy()
	ctlCtr := &ctlSpec.Containers[0]
	ctlCtr.Args = append(withoutArgs(ctlCtr.Args, "--webhook-listen=", "--metrics-listen="), "--metrics-listen=127.0.0.1:0", "-v=2")
	hostKubeconfig(t, ctlSpec, ctlCtr, ControllerServiceAccount)
	deployment.Spec.Template.Spec = *ctlSpec
	deployment.Spec.Replicas = ptrInt32(1)
	if _, err := kube.AppsV1().Deployments(deployment.Namespace).Create(ctx, &deployment, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.AppsV1().DaemonSets(ds.Namespace).Create(ctx, &ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podsOf := func(ns string, selector *metav1.LabelSelector) func() []corev1.Pod {
		return func() []corev1.Pod {
			pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(selector)})
			if err != nil {
				return nil
			}
			return pods.Items
		}
	}
	driverPods, controllerPods := podsOf(ds.Namespace, ds.Spec.Selector), podsOf(deployment.Namespace, deployment.Spec.Selector)
	// Back to the host processes for the tests that follow.
	t.Cleanup(func() {
		_ = kube.AppsV1().Deployments(deployment.Namespace).Delete(ctx, deployment.Name, metav1.DeleteOptions{})
		_ = kube.AppsV1().DaemonSets(ds.Namespace).Delete(ctx, ds.Name, metav1.DeleteOptions{})
		kubelet.WaitUntil(60*time.Second, func() bool { return len(driverPods()) == 0 && len(controllerPods()) == 0 })
		if err := node.StartDriver(); err != nil {
			t.Errorf("restart the host-process driver: %v", err)
		}
		if err := node.StartController(); err != nil {
			t.Errorf("restart the host-process controller: %v", err)
		}
	})
	if !kubelet.WaitUntil(90*time.Second, func() bool {
		pods := driverPods()
		return len(pods) == 1 && pods[0].Spec.NodeName == NodeName && pods[0].Status.Phase == corev1.PodRunning
	}) {
		t.Fatalf("the DaemonSet's driver Pod is not running on the node: %d Pods\n--- kubelet ---\n%s\n--- controller manager ---\n%s",
			len(driverPods()), node.tail("kubelet"), node.tail("controller-manager"))
	}

	if !kubelet.WaitUntil(90*time.Second, func() bool {
		pods := controllerPods()
		return len(pods) == 1 && pods[0].Status.Phase == corev1.PodRunning
	}) {
		t.Fatalf("the Deployment's controller Pod is not running: %d Pods\n--- kubelet ---\n%s", len(controllerPods()), node.tail("kubelet"))
	}

	// kubelet resolved the release's GOMEMLIMIT (the container's memory limit, Downward API) and
	// the Go runtime took it, less what the node's volumes may hold (their tmpfs pages count
	// against the same limit): the DaemonSet's 256Mi less --node-volumes-max-bytes' 64Mi.
	limit := ds.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().Value()
	want := fmt.Sprintf("go_gc_gomemlimit_bytes %g", float64(limit-64<<20))
	// Read as deploy/monitoring's PodMonitor reads them: over TLS, with the token the cluster's
	// token controller put in metrics-reader.yaml's Secret (one without exp).
	reader := metricsReaderToken(t)
	var metrics string
	if !kubelet.WaitUntil(30*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort), nil)
		req.Header.Set("Authorization", "Bearer "+reader)
		res, err := selfSignedClient.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		metrics = res.Status + "\n" + string(b)
		return strings.Contains(metrics, want)
	}) || limit <= 0 {
		t.Errorf("the node Pod's metrics lack %q (limit %d):\n%.300s", want, limit, metrics)
	}
	if res, err := selfSignedClient.Get(fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort)); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Errorf("the node Pod's /metrics without a token: %v %v, want 401", res, err)
	} else {
		res.Body.Close()
	}

	ns := "daemonset"
	setupNamespace(t, ns)
	// Only the controller Pod runs the status controller now: Ready comes from it.
	if !kubelet.WaitUntil(60*time.Second, func() bool {
		var c v1alpha1.Connector
		return node.CP.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "git"}, &c) == nil &&
			meta.IsStatusConditionTrue(c.Status.Conditions, v1alpha1.ConditionReady)
	}) {
		t.Fatalf("the Connector never became Ready under the controller Pod\n--- kubelet ---\n%s", node.tail("kubelet"))
	}
	pod := runReader(t, ns, "ds-reader")
	// Unpublish while the driver still runs, then the driver.
	deleteAndCheckUnmounted(t, pod)
}

// runReader starts a busybox Pod that fetches the Git server's ref advertisement through the
// proxy with only its token, and fails the test unless it gets it.
func runReader(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	results := filepath.Join(node.Dir, "results", name)
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	script := `wget -q -O /results/refs --header "Authorization: Bearer $(cat /connectors/context.token)" \
  "$(cat /connectors/connector.status.proxyAddress)/repo.git/info/refs?service=git-upload-pack"
echo $? > /results/wget-exit
sleep 3600`
	pod, err := node.CP.Kube.CoreV1().Pods(ns).Create(context.Background(), scriptPod(ns, name, results, script), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if exit := strings.TrimSpace(waitFile(t, filepath.Join(results, "wget-exit"), 120*time.Second)); exit != "0" {
		t.Fatalf("Pod %s: wget through the proxy exited %s", name, exit)
	}
	if refs, _ := os.ReadFile(filepath.Join(results, "refs")); !strings.Contains(string(refs), "refs/heads/main") {
		t.Fatalf("Pod %s got no ref advertisement: %q", name, refs)
	}
	return pod
}

func freePort() (int, error) {
	lis, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port, nil
}

func ptrInt64(v int64) *int64 { return &v }

func ptrInt32(v int32) *int32 { return &v }
