package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/util/retry"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/node/atomicdir"
	"github.com/kube-connectors/connectors-csi/test/controlplane"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

var builtinFiles = []string{".env", "http.proxy", "https.proxy", "context.token", "context.proxy.caCert",
	"ca.crt", "ca.cert", "connector.status.proxyAddress"}

// visibleFiles reads the files a container would see at target, by name.
func visibleFiles(t testing.TB, target string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(target, e.Name()))
		if err != nil {
			t.Fatalf("read %s: %v", e.Name(), err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func sortedNames(files map[string]string) []string {
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// checkPodToken asserts that the token in the volume is a Pod-bound token for the driver's
// audience, as TokenReview sees it.
func checkPodToken(t *testing.T, token, ns, pod string) {
	t.Helper()
	tr, err := cp.Kube.AuthenticationV1().TokenReviews().Create(context.Background(), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{driverName}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Status.Authenticated {
		t.Fatalf("volume token not accepted by TokenReview: %s", tr.Status.Error)
	}
	if got := tr.Status.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != pod {
		t.Fatalf("token bound to Pod %v, want %s", got, pod)
	}
	if want := "system:serviceaccount:" + ns + ":builder"; tr.Status.User.Username != want {
		t.Fatalf("token user %q, want %q", tr.Status.User.Username, want)
	}
}

func TestExampleClassesRender(t *testing.T) {
	enableMultiConnector(t)
	d := startDriver(t, t.TempDir(), nil)
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	newConnector(t, ns, "constant", constantClass(t), "https://git.example.com")
	newConnector(t, ns, "params", paramsClass(t), "https://tool.example.com",
		v1alpha1.Param{Name: "org", Value: *jsonValue("acme")})
	git := gitClass(t)
	newConnector(t, ns, "github", git, "https://github.com")
	newConnector(t, ns, "gitea", git, "http://gitea.example.com:3000/")
	allowConnectors(t, ns, "builder", "constant", "params", "github", "gitea")

	gitProxy := func(name string) string { return fmt.Sprintf("%s/namespaces/%s/connectors/%s", proxyURL, ns, name) }
	cases := []struct {
		name       string
		attrs      map[string]string
		file, want func(token string) (string, string)
		excluded   []string
	}{{
		name:  "constant gitconfig",
		attrs: map[string]string{"connectors": "constant", "configuration.names": "config"},
		want:  func(string) (string, string) { return ".gitconfig", constantGitconfig },
	}, {
		name: "connector and configuration params",
		attrs: map[string]string{"connectors": ns + "/params", "configuration.names": "settings",
			"configuration.params": `{"settings": {"depth": "1"}}`},
		want: func(string) (string, string) { return "settings.txt", "org=acme\nbranch=main\ndepth=1\n" },
	}, {
		name:     "git over two connectors, built-ins excluded",
		attrs:    map[string]string{"connectors": "github," + ns + "/gitea", "configuration.names": "gitconfig,!ca.cert,!.env"},
		excluded: []string{"ca.cert", ".env"},
		want: func(token string) (string, string) {
			return ".gitconfig", fmt.Sprintf("\n[http \"%[1]s/\"]\n\textraHeader = \"Authorization: Bearer %[3]s\"\n"+
				"[url \"%[1]s/\"]\n\tinsteadOf = https://github.com/\n"+
				"[http \"%[2]s/\"]\n\textraHeader = \"Authorization: Bearer %[3]s\"\n"+
				"[url \"%[2]s/\"]\n\tinsteadOf = http://gitea.example.com:3000/\n", gitProxy("github"), gitProxy("gitea"), token)
		},
	}}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := podWithVolume(t, k, ns, fmt.Sprintf("pod-%d", i), tc.attrs, nil)
			if err := k.Publish(ctx, pod, "connectors"); err != nil {
				t.Fatal(err)
			}
			target := k.TargetPath(pod, "connectors")
			files := visibleFiles(t, target)
			token := files["context.token"]
			checkPodToken(t, token, ns, pod.Name)
			name, want := tc.want(token)
			if files[name] != want {
				t.Errorf("%s =\n%q\nwant\n%q", name, files[name], want)
			}
			var wantNames []string
			for _, b := range builtinFiles {
				if !slices.Contains(tc.excluded, b) {
					wantNames = append(wantNames, b)
				}
			}
			wantNames = append(wantNames, name)
			slices.Sort(wantNames)
			if got := sortedNames(files); !slices.Equal(got, wantNames) {
				t.Errorf("files %v, want %v", got, wantNames)
			}
			checkBuiltins(t, files, ns, strings.Split(tc.attrs["connectors"], ","), token)
			checkModes(t, target, 0o444, -1)
			if err := k.Unpublish(ctx, pod, "connectors"); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("target still present after unpublish: %v", err)
			}
		})
	}
}

// checkBuiltins checks the built-in files that were not excluded.
func checkBuiltins(t *testing.T, files map[string]string, ns string, connectors []string, token string) {
	t.Helper()
	var users []string
	for _, c := range connectors {
		if !strings.Contains(c, "/") {
			c = ns + "/" + c
		}
		users = append(users, strings.ReplaceAll(c, "/", "%2F"))
	}
	forward := fmt.Sprintf("http://%s:%s@connectors-proxy.connectors-system.svc.cluster.local:3128", strings.Join(users, ","), token)
	first := strings.TrimPrefix(connectors[0], ns+"/")
	want := map[string]string{
		"http.proxy":                    forward,
		"https.proxy":                   forward,
		"connector.status.proxyAddress": fmt.Sprintf("%s/namespaces/%s/connectors/%s", proxyURL, ns, first),
		".env": fmt.Sprintf("export http_proxy=%[1]s\nexport https_proxy=%[1]s\nexport no_proxy=localhost,127.0.0.1,::1\n"+
			"export HTTP_PROXY=%[1]s\nexport HTTPS_PROXY=%[1]s\nexport NO_PROXY=localhost,127.0.0.1,::1\n", forward),
	}
	for name, w := range want {
		if got, ok := files[name]; ok && got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
	for _, name := range []string{"ca.crt", "ca.cert", "context.proxy.caCert"} {
		got, ok := files[name]
		if !ok {
			continue
		}
		block, _ := pem.Decode([]byte(got))
		if block == nil {
			t.Fatalf("%s is not PEM: %q", name, got)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !cert.IsCA {
			t.Errorf("%s is not a CA certificate: %v", name, err)
		}
	}
}

// checkModes asserts the mode (and group, when gid >= 0) of every visible file.
func checkModes(t *testing.T, target string, mode os.FileMode, gid int64) {
	t.Helper()
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		fi, err := os.Stat(filepath.Join(target, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", e.Name(), fi.Mode().Perm(), mode)
		}
		if g := fi.Sys().(*syscall.Stat_t).Gid; gid >= 0 && int64(g) != gid {
			t.Errorf("%s has group %d, want %d", e.Name(), g, gid)
		}
	}
}

func TestFSGroupOwnsFiles(t *testing.T) {
	d := startDriver(t, t.TempDir(), nil)
	k := newKubelet(t, d)
	ns := newNamespace(t)
	newConnector(t, ns, "constant", constantClass(t), "https://git.example.com")
	allowConnectors(t, ns, "builder", "constant")
	gid := int64(os.Getgid())
	if isRoot() {
		gid = 4242
	}
	pod := podWithVolume(t, k, ns, "fsgroup", map[string]string{"connectors": "constant"}, &gid)
	if err := k.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	checkModes(t, k.TargetPath(pod, "connectors"), 0o440, gid)
	if err := k.Unpublish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
}

func inodes(t *testing.T, target string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for name := range visibleFiles(t, target) {
		fi, err := os.Stat(filepath.Join(target, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = fi.Sys().(*syscall.Stat_t).Ino
	}
	return out
}

func TestRepublish(t *testing.T) {
	d := startDriver(t, t.TempDir(), nil)
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	newConnector(t, ns, "github", gitClass(t), "https://github.com")
	allowConnectors(t, ns, "builder", "github")
	pod := podWithVolume(t, k, ns, "republish", map[string]string{"connectors": "github"}, nil)
	target := k.TargetPath(pod, "connectors")

	req, err := k.PublishRequest(ctx, pod, "connectors")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := k.Node.NodePublishVolume(ctx, req); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if n := mountCount(t, d, target); n != 1 {
		t.Fatalf("%d mounts at the target after 10 publishes, want 1", n)
	}
	before := inodes(t, target)
	oldFiles := visibleFiles(t, target)
	data, _ := os.Readlink(filepath.Join(target, "..data"))

	// Unchanged republish: nothing written.
	if _, err := k.Node.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(target, "..data")); again != data {
		t.Errorf("unchanged republish swapped the data directory (%s -> %s)", data, again)
	}

	// Republish with a fresh token: every file carrying it changes, nothing else.
	if err := k.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	after := inodes(t, target)
	newFiles := visibleFiles(t, target)
	oldToken, newToken := oldFiles["context.token"], newFiles["context.token"]
	if oldToken == newToken {
		t.Fatal("the stand-in's second TokenRequest returned the same token")
	}
	for name, content := range newFiles {
		carries := strings.Contains(oldFiles[name], oldToken)
		switch {
		case carries && (after[name] == before[name] || strings.Contains(content, oldToken) || !strings.Contains(content, newToken)):
			t.Errorf("%s carries the token but was not rewritten with the new one", name)
		case !carries && after[name] != before[name]:
			t.Errorf("%s does not carry the token but was rewritten", name)
		}
	}
	if n := mountCount(t, d, target); n != 1 {
		t.Fatalf("%d mounts after republish, want 1", n)
	}
	if err := k.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	if n := mountCount(t, d, target); n != 0 {
		t.Fatalf("%d mounts after unpublish, want 0", n)
	}
	// Unpublish is idempotent.
	if err := k.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatalf("second unpublish: %v", err)
	}
}

// publishedBeforeRestart publishes a volume of a Pod through a driver with state directory
// state, stops that driver, and returns the Pod, its volume's target and the first driver.
func publishedBeforeRestart(t *testing.T, state, podName string) (*corev1.Pod, string, *runningDriver, *kubelet.Kubelet) {
	t.Helper()
	first := startDriver(t, state, nil)
	k := newKubelet(t, first)
	ns := newNamespace(t)
	newConnector(t, ns, "constant", constantClass(t), "https://git.example.com")
	allowConnectors(t, ns, "builder", "constant")
	pod := podWithVolume(t, k, ns, podName, map[string]string{"connectors": "constant"}, nil)
	if err := k.Publish(context.Background(), pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	first.stop()
	return pod, k.TargetPath(pod, "connectors"), first, k
}

// restartedDriver starts the driver again on state after first stopped, with a kubelet of the
// same root as k. As root the second driver is a separate process of the real binary: the
// tmpfs stays in the kernel's mount table across it. Without root the directory mounter
// stands in for the mount table, so the second driver runs in this process and shares it.
func restartedDriver(t *testing.T, state string, first *runningDriver, k *kubelet.Kubelet) (*runningDriver, *kubelet.Kubelet) {
	t.Helper()
	second := startDriverProcess(t, state)
	if !isRoot() {
		second = startDriver(t, state, first.mounter)
	}
	k2 := newKubelet(t, second)
	k2.Root = k.Root
	return second, k2
}

func TestNewDriverUnpublishesPreviousDriversVolume(t *testing.T) {
	state := t.TempDir()
	ctx := context.Background()
	pod, target, first, k := publishedBeforeRestart(t, state, "restart")
	second, k2 := restartedDriver(t, state, first, k)
	if err := k2.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatalf("republish through the new driver: %v", err)
	}
	if n := mountCount(t, second, target); n != 1 {
		t.Fatalf("%d mounts after republish by the new driver, want 1", n)
	}
	if err := k2.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	if n := mountCount(t, second, target); n != 0 {
		t.Fatalf("%d mounts left, want 0", n)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("target left behind: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(state, "volumes")); len(entries) != 0 {
		t.Fatalf("volume records left behind: %v", entries)
	}
	if files, _ := atomicdir.Read(target); len(files) != 0 {
		t.Fatalf("files left behind: %v", files)
	}
}

// TestAnUnreadableVolumeRecordIsUnpublished: a node that lost power just after a publish may
// come back with the volume's record empty (the rename reached the disk, its data not yet).
// The new driver still unpublishes the volume when kubelet tears it down (failing would fail
// every retry, and the Pod would never end) and forgets the record.
func TestAnUnreadableVolumeRecordIsUnpublished(t *testing.T) {
	state := t.TempDir()
	ctx := context.Background()
	pod, target, first, k := publishedBeforeRestart(t, state, "power-loss")
	records, err := filepath.Glob(filepath.Join(state, "volumes", "*.json"))
	if err != nil || len(records) != 1 {
		t.Fatalf("volume records %v (%v), want one", records, err)
	}
	if err := os.Truncate(records[0], 0); err != nil {
		t.Fatal(err)
	}
	second, k2 := restartedDriver(t, state, first, k)
	if err := k2.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatalf("unpublish with the record unreadable: %v", err)
	}
	if n := mountCount(t, second, target); n != 0 {
		t.Fatalf("%d mounts left, want 0", n)
	}
	if entries, _ := os.ReadDir(filepath.Join(state, "volumes")); len(entries) != 0 {
		t.Fatalf("volume records left behind: %v", entries)
	}
}

// TestUnchangedRepublishSendsNoAPIRequest runs the node role with its deployed RBAC and counts,
// in the API server's audit log, what it sends while kubelet republishes unchanged volumes:
// nothing, also when the token is new (it is written without authorizing again), and when the
// class's template changed (rendered again: what is authorized does not depend on the class,
// and a class every volume renders would otherwise authorize them all again). A change of a
// Connector makes the next republish authorize again.
func TestUnchangedRepublishSendsNoAPIRequest(t *testing.T) {
	// Every authorization asks the API server (no cached answer), so that the count shows it.
	env := startDeployedDrivers(t, func(o *driver.Options) { o.AuthzAllowTTL = 0 })
	ctx := context.Background()
	ns := newNamespace(t)
	git := deployedClassCopy(t, "git.yaml").Name
	newConnector(t, ns, "git", git, "https://github.com")
	allowConnectors(t, ns, "builder", "git")
	// The controller labels the Connector with its class once: a change the volumes would see.
	waitCondition(t, ns, "git", v1alpha1.ConditionConnectorClassReady, metav1.ConditionTrue, "Found")
	var pods []*corev1.Pod
	for i := range 5 {
		pod := podWithVolume(t, env.kubelet, ns, fmt.Sprintf("quiet-%d", i), map[string]string{"connectors": "git", "configuration.names": "gitconfig"}, nil)
		if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kubelet.Unpublish(ctx, pod, "connectors") })
		pods = append(pods, pod)
	}
	nodeRequests := func(since time.Time) []string {
		evs, err := cp.AuditEvents(func(ev *auditv1.Event) bool {
			return ev.User.Username == controlplane.NodeUser && ev.Verb != "watch" && ev.Verb != "list" &&
				!ev.RequestReceivedTimestamp.Time.Before(since)
		})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range evs {
			out = append(out, ev.Verb+" "+ev.RequestURI)
		}
		return out
	}
	start := time.Now()
	for range 3 {
		for _, pod := range pods {
			if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil { // a new token each time
				t.Fatal(err)
			}
			if got := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]; got == "" {
				t.Fatal("the volume lost its token")
			}
		}
	}
	if sent := nodeRequests(start); len(sent) != 0 {
		t.Fatalf("15 unchanged republishes sent %d API requests: %q", len(sent), sent)
	}
	// The class's controller writes its status meanwhile: read again on a conflict.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var c v1alpha1.ConnectorClass
		if err := cp.Client.Get(ctx, types.NamespacedName{Name: git}, &c); err != nil {
			return err
		}
		c.Configuration("gitconfig").Data[".gitconfig"] += "\n# edited\n"
		return cp.Client.Update(ctx, &c)
	}); err != nil {
		t.Fatal(err)
	}
	classChanged := time.Now()
	for _, pod := range pods {
		if !kubelet.WaitUntil(10*time.Second, func() bool {
			if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
				t.Fatal(err)
			}
			return strings.Contains(visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))[".gitconfig"], "# edited")
		}) {
			t.Fatal("a changed class never reached the volume")
		}
	}
	if sent := nodeRequests(classChanged); len(sent) != 0 {
		t.Errorf("republishes after a change of the class sent %d API requests: %q", len(sent), sent)
	}
	// The status controller writes the Connector's status meanwhile: read again on a conflict.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var c v1alpha1.Connector
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "git"}, &c); err != nil {
			return err
		}
		c.Spec.Address = "https://git.example.com"
		return cp.Client.Update(ctx, &c)
	}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	if !kubelet.WaitUntil(10*time.Second, func() bool {
		if err := env.kubelet.Publish(ctx, pods[0], "connectors"); err != nil {
			t.Fatal(err)
		}
		return strings.Contains(visibleFiles(t, env.kubelet.TargetPath(pods[0], "connectors"))[".gitconfig"], "git.example.com")
	}) {
		t.Fatal("a changed Connector never reached the volume")
	}
	if sent := nodeRequests(changed); !slices.ContainsFunc(sent, func(s string) bool { return strings.Contains(s, "subjectaccessreviews") }) {
		t.Errorf("the republish after a change did not authorize again: %q", sent)
	}
}

// TestNodeWatchesOnlyTheConnectorsItUses: a node keeps the Connectors its volumes and proxy
// requests read, not the cluster's; a change of one reaches the volume; one nobody reads for
// the idle period is dropped.
func TestNodeWatchesOnlyTheConnectorsItUses(t *testing.T) {
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.ConnectorIdle = 2 * time.Second })
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	for i := range 30 {
		newConnector(t, ns, fmt.Sprintf("unused-%d", i), git, "https://example.com")
	}
	newConnector(t, ns, "used", git, "https://github.com")
	allowConnectors(t, ns, "builder", "used")
	pod := podWithVolume(t, k, ns, "user", map[string]string{"connectors": "used"}, nil)
	if err := k.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	if n, _ := cachemetrics.Entries("connectors"); n != 1 {
		t.Fatalf("the node watches %d Connectors, want the 1 its volume uses (31 exist)", n)
	}
	if err := k.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	if !kubelet.WaitUntil(15*time.Second, func() bool { n, _ := cachemetrics.Entries("connectors"); return n == 0 }) {
		t.Fatal("a Connector nothing read for the idle period is still watched")
	}
}

// TestALargeVolumeRenewsItsToken: a volume whose token-carrying files are over half of
// --volume-size-limit renews its token (an update writes the changed files beside the old ones
// before it removes those: a tmpfs of the limit alone was full, and the token was never
// renewed); files that together take more than the limit are refused whole, naming it.
func TestALargeVolumeRenewsItsToken(t *testing.T) {
	d := startDriverWith(t, t.TempDir(), nil, func(o *driver.Options) { o.VolumeSizeLimit = "128Ki" })
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	newConnector(t, ns, "large", newClass(t, "large", v1alpha1.Configuration{Name: "conf",
		Data: map[string]string{"large.txt": `{{ .context.token }}{{ repeat 70000 "x" }}`}}), "https://x.example.com")
	newConnector(t, ns, "over", newClass(t, "over", v1alpha1.Configuration{Name: "conf", Data: map[string]string{
		"a.txt": `{{ repeat 50000 "a" }}`, "b.txt": `{{ repeat 50000 "b" }}`, "c.txt": `{{ repeat 50000 "c" }}`}}), "https://x.example.com")
	allowConnectors(t, ns, "builder", "large", "over")
	pod := podWithVolume(t, k, ns, "large", map[string]string{"connectors": "large", "configuration.names": "conf"}, nil)
	if err := k.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Unpublish(context.Background(), pod, "connectors") })
	target := k.TargetPath(pod, "connectors")
	first := visibleFiles(t, target)["large.txt"]
	if err := k.Publish(ctx, pod, "connectors"); err != nil { // a fresh token
		t.Fatalf("the renewal of a volume over half its limit: %v", err)
	}
	if again := visibleFiles(t, target)["large.txt"]; again == first || !strings.HasSuffix(again, strings.Repeat("x", 70000)) {
		t.Fatal("the renewal did not write the new token")
	}
	over := podWithVolume(t, k, ns, "over", map[string]string{"connectors": "over", "configuration.names": "conf"}, nil)
	err := k.Publish(ctx, over, "connectors")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "more than its 131072 (--volume-size-limit)") {
		t.Fatalf("files over the limit together: %v, want FailedPrecondition naming the limit", err)
	}
}
