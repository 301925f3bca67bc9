package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// secretValue is a tool credential that must never reach a volume, a log or an error.
const secretValue = "s3cr3t-password-that-must-not-leak"

func TestBadInputs(t *testing.T) {
	enableMultiConnector(t)
	d := startDriver(t, t.TempDir(), nil)
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	createSecret(t, ns, "git-credentials", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": secretValue})
	newConnectorWithSecret(t, ns, "params", paramsClass(t), "https://tool.example.com", "basicAuth", "git-credentials")
	newConnector(t, ns, "orphan", "no-such-class", "https://tool.example.com")
	newConnector(t, ns, "broken", newClass(t, "broken", v1alpha1.Configuration{
		Name: "conf", Data: map[string]string{"bad.txt": "{{ .connector.spec.address | nosuchfunc }}"}}), "https://x.example.com")
	newConnector(t, ns, "failing", newClass(t, "failing", v1alpha1.Configuration{
		Name: "conf", Data: map[string]string{"fail.txt": `{{ fail "configuration needs a project" }}`}}), "https://x.example.com")
	newConnector(t, ns, "escape", newClass(t, "escape", v1alpha1.Configuration{
		Name: "conf", Data: map[string]string{"../../escape.txt": "x"}}), "https://x.example.com")
	newConnector(t, ns, "secret", constantClass(t), "https://y.example.com")
	// Stored without the admission webhook (as before it refused such addresses): git reads
	// everything after the ';' of a value rendered from it as a comment.
	newConnector(t, ns, "smuggler", gitClass(t), "https://;x@evil.example.com")
	// 5.2 MB from a loop, past the volume's 4Mi: stopped as it is written.
	newConnector(t, ns, "huge", newClass(t, "huge", v1alpha1.Configuration{
		Name: "conf", Data: map[string]string{"huge.txt": "{{ range until 100000 }}{{ printf \"%052d\" 0 }}{{ end }}"}}), "https://x.example.com")
	// Stored without the admission webhook: more than a node keeps.
	create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "bloated", Namespace: ns, Annotations: map[string]string{"padding": strings.Repeat("x", 70<<10)}},
		Spec: v1alpha1.ConnectorSpec{ConnectorClassName: constantClass(t), Address: "https://x.example.com"}})
	allowConnectors(t, ns, "builder", "params", "orphan", "broken", "failing", "escape", "missing", "smuggler", "huge", "bloated")

	type mutate func(r *csi.NodePublishVolumeRequest)
	setAttr := func(k, v string) mutate { return func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[k] = v } }
	cases := []struct {
		name   string
		attrs  map[string]string
		mutate mutate
		code   codes.Code
		want   []string // substrings of the message
	}{
		{"missing connectors", map[string]string{}, nil, codes.InvalidArgument, []string{"connectors", "required"}},
		{"unknown attribute", map[string]string{"connectors": "params"}, setAttr("conector.name", "x"), codes.InvalidArgument, []string{"conector.name"}},
		{"params not JSON", map[string]string{"connectors": "params", "configuration.names": "settings", "configuration.params": "{depth: 1"}, nil, codes.InvalidArgument, []string{"configuration.params", "not JSON"}},
		{"undeclared param", map[string]string{"connectors": "params", "configuration.names": "settings", "configuration.params": `{"settings": {"depth": "1", "colour": "red"}}`}, nil, codes.InvalidArgument, []string{`"colour"`, `"settings"`}},
		{"missing required param", map[string]string{"connectors": "params", "configuration.names": "settings"}, nil, codes.InvalidArgument, []string{`requires param "depth"`}},
		{"param of wrong type", map[string]string{"connectors": "params", "configuration.names": "settings", "configuration.params": `{"settings": {"depth": ["1"]}}`}, nil, codes.InvalidArgument, []string{`"depth"`, "type string"}},
		{"params for unknown configuration", map[string]string{"connectors": "params", "configuration.params": `{"setings": {}}`}, nil, codes.InvalidArgument, []string{`"setings"`}},
		{"readonly false", map[string]string{"connectors": "params"}, func(r *csi.NodePublishVolumeRequest) { r.Readonly = false }, codes.InvalidArgument, []string{"readonly"}},
		{"missing token", map[string]string{"connectors": "params"}, func(r *csi.NodePublishVolumeRequest) {
			delete(r.VolumeContext, "csi.storage.k8s.io/serviceAccount.tokens")
			delete(r.Secrets, "csi.storage.k8s.io/serviceAccount.tokens")
		}, codes.InvalidArgument, []string{"serviceAccount.tokens"}},
		{"token for another audience", map[string]string{"connectors": "params"}, func(r *csi.NodePublishVolumeRequest) {
			r.Secrets["csi.storage.k8s.io/serviceAccount.tokens"] = `{"vault": {"token": "x"}}`
		}, codes.InvalidArgument, []string{`"connectors-csi"`, "vault"}},
		// A CSIDriver without podInfoOnMount lets a Pod's spec name any Pod there: the token
		// kubelet requested is the real Pod's.
		{"attributes of another Pod", map[string]string{"connectors": "params"}, func(r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["csi.storage.k8s.io/pod.name"] = "someone-else"
			r.VolumeContext["csi.storage.k8s.io/pod.uid"] = "00000000-0000-0000-0000-000000000000"
		}, codes.InvalidArgument, []string{"not the volume's Pod " + ns + "/someone-else", "podInfoOnMount"}},
		{"bad mount group", map[string]string{"connectors": "params"}, func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.GetMount().VolumeMountGroup = "staff"
		}, codes.InvalidArgument, []string{`"staff"`}},
		{"invalid connector name", map[string]string{"connectors": "Not_A_Name"}, nil, codes.InvalidArgument, []string{"Not_A_Name"}},
		{"unknown connector", map[string]string{"connectors": "params,missing"}, nil, codes.NotFound, []string{ns + "/missing"}},
		// Not read before it is authorized: whether it exists is not told.
		{"unknown connector not granted", map[string]string{"connectors": "params,ghost"}, nil, codes.PermissionDenied, []string{ns + "/ghost", "get"}},
		{"too many connectors", map[string]string{"connectors": manyConnectors(65)}, nil, codes.InvalidArgument, []string{"65 Connectors", "at most 64"}},
		// Each logged and recorded by kubelet at every retry: the first few errors, and a
		// count (thousands, aggregated whole, once cost seconds of CPU and gigabytes per publish).
		{"thousands of undeclared params", map[string]string{"connectors": "params", "configuration.names": "settings", "configuration.params": manyParams(4000)}, nil, codes.InvalidArgument, []string{`"p0"`, "; and 3996 more errors"}},
		{"a long configuration name", map[string]string{"connectors": "params", "configuration.names": strings.Repeat("s", 10<<10)}, nil, codes.InvalidArgument, []string{`"` + strings.Repeat("s", 64) + `…"`}},
		{"a long invalid connector name", map[string]string{"connectors": strings.Repeat("N", 10<<10)}, nil, codes.InvalidArgument, []string{`"` + strings.Repeat("N", 64) + `…"`}},
		{"unknown class", map[string]string{"connectors": "orphan"}, nil, codes.NotFound, []string{`"no-such-class"`}},
		{"template parse error", map[string]string{"connectors": "broken", "configuration.names": "conf"}, nil, codes.FailedPrecondition, []string{"broken-", `"conf"`, `"bad.txt"`, "nosuchfunc"}},
		{"template execution error", map[string]string{"connectors": "failing", "configuration.names": "conf"}, nil, codes.FailedPrecondition, []string{"failing-", `"fail.txt"`, "configuration needs a project"}},
		{"unknown configuration name", map[string]string{"connectors": "params", "configuration.names": "setings"}, nil, codes.InvalidArgument, []string{`"setings"`}},
		{"path traversal in a file name", map[string]string{"connectors": "escape", "configuration.names": "conf"}, nil, codes.FailedPrecondition, []string{"../../escape.txt"}},
		{"connector not granted", map[string]string{"connectors": "params,secret"}, nil, codes.PermissionDenied, []string{ns + "/secret", "get"}},
		{"file larger than the volume", map[string]string{"connectors": "huge", "configuration.names": "conf"}, nil, codes.FailedPrecondition, []string{"huge-", `"huge.txt"`, "larger than 4194304 bytes"}},
		{"connector larger than a node keeps", map[string]string{"connectors": "bloated"}, nil, codes.FailedPrecondition, []string{ns + "/bloated", "more than the 65536 a node keeps"}},
		{"address that adds settings", map[string]string{"connectors": "smuggler", "configuration.names": "gitconfig"}, nil, codes.FailedPrecondition, []string{ns + "/smuggler", "spec.address", "holds ';'"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := podWithVolume(t, k, ns, "bad-"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")), tc.attrs, nil)
			req, err := k.PublishRequest(ctx, pod, "connectors")
			if err != nil {
				t.Fatal(err)
			}
			if tc.mutate != nil {
				tc.mutate(req)
			}
			_, err = k.Node.NodePublishVolume(ctx, req)
			st := status.Convert(err)
			if st.Code() != tc.code {
				t.Fatalf("code %v (%v), want %v", st.Code(), err, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(st.Message(), w) {
					t.Errorf("message %q does not name %q", st.Message(), w)
				}
			}
			if strings.Contains(st.Message(), secretValue) || strings.Contains(st.Message(), "eyJ") {
				t.Errorf("message leaks a secret or token: %q", st.Message())
			}
			if n := len(st.Message()); n > 4<<10 {
				t.Errorf("message of %d bytes, more than a person reads (kubelet logs and records it at every retry): %.300q", n, st.Message())
			}
			if n := mountCount(t, d, req.TargetPath); n != 0 {
				t.Errorf("%d mounts left at the target", n)
			}
			if _, err := os.Stat(req.TargetPath); !os.IsNotExist(err) {
				t.Errorf("target left behind: %v", err)
			}
		})
	}
}

func TestSecretValuesNeverLeak(t *testing.T) {
	d := startDriver(t, t.TempDir(), nil)
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	createSecret(t, ns, "git-credentials", corev1.SecretTypeBasicAuth, map[string]string{"username": "bot", "password": secretValue})
	newConnectorWithSecret(t, ns, "github", gitClass(t), "https://github.com", "basicAuth", "git-credentials")
	allowConnectors(t, ns, "builder", "github")
	pod := podWithVolume(t, k, ns, "noleak", map[string]string{"connectors": "github"}, nil)
	for i := 0; i < 2; i++ {
		if err := k.Publish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
	}
	files := visibleFiles(t, k.TargetPath(pod, "connectors"))
	token := files["context.token"]
	for name, content := range files {
		if strings.Contains(content, secretValue) {
			t.Errorf("volume file %s holds the Connector's secret", name)
		}
	}
	log := logs.String()
	if strings.Contains(log, secretValue) {
		t.Error("driver log holds the Connector's secret")
	}
	if token == "" || strings.Contains(log, token) {
		t.Error("driver log holds the Pod's token")
	}
	if err := k.Unpublish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
}

// enableMultiConnector turns enable-multi-connector on for a test (set it before the driver
// starts: a driver reads the flags once at start, then follows changes).
func enableMultiConnector(t testing.TB) {
	t.Helper()
	setFlags(t, map[string]string{features.KeyMultiConnector: "true"})
	t.Cleanup(func() { setFlags(t, map[string]string{}) })
}

// TestMultiConnectorVolumesNeedTheFlag: with enable-multi-connector off (its default) a volume
// that names two Connectors is refused with InvalidArgument naming the flag, and nothing is
// mounted; once the flag is on, the same volume publishes.
func TestMultiConnectorVolumesNeedTheFlag(t *testing.T) {
	setFlags(t, map[string]string{})
	d := startDriver(t, t.TempDir(), nil)
	k := newKubelet(t, d)
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	newConnector(t, ns, "one", git, "https://127.0.0.1:9")
	newConnector(t, ns, "two", git, "https://127.0.0.1:9")
	allowConnectors(t, ns, "builder", "one", "two")
	pod := podWithVolume(t, k, ns, "both", map[string]string{"connectors": "one,two", "configuration.names": "gitconfig"}, nil)
	req, err := k.PublishRequest(ctx, pod, "connectors")
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Node.NodePublishVolume(ctx, req)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), features.KeyMultiConnector) {
		t.Fatalf("publish with the flag off: %v, want InvalidArgument naming %s", err, features.KeyMultiConnector)
	}
	if n := mountCount(t, d, req.TargetPath); n != 0 {
		t.Errorf("%d mounts at the target of a refused volume", n)
	}
	enableMultiConnector(t)
	t.Cleanup(func() {
		_, _ = k.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
	if !kubelet.WaitUntil(20*time.Second, func() bool { _, err := k.Node.NodePublishVolume(ctx, req); return err == nil }) {
		_, err := k.Node.NodePublishVolume(ctx, req)
		t.Fatalf("publish with the flag on: %v", err)
	}
	if files := visibleFiles(t, req.TargetPath); !strings.Contains(files[".gitconfig"], "/connectors/one") || !strings.Contains(files[".gitconfig"], "/connectors/two") {
		t.Errorf(".gitconfig does not name both Connectors:\n%s", files[".gitconfig"])
	}
}

// manyConnectors is a connectors attribute naming n Connectors.
// manyParams is configuration.params giving the settings configuration n params p0 … p<n-1>.
func manyParams(n int) string {
	params := make([]string, n)
	for i := range params {
		params[i] = fmt.Sprintf(`"p%d":"x"`, i)
	}
	return `{"settings":{` + strings.Join(params, ",") + `}}`
}

func manyConnectors(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i)
	}
	return strings.Join(names, ",")
}
