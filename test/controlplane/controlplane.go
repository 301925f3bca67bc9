// Package controlplane starts a real kube-apiserver and etcd for tests through
// controller-runtime's envtest, with the project's CRDs installed.
package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// ControlPlane is a running test API server.
type ControlPlane struct {
	Env        *envtest.Environment
	Config     *rest.Config
	Kube       kubernetes.Interface
	Client     client.Client
	Kubeconfig string // an admin kubeconfig file
	Assets     string // the directory of kube-apiserver, etcd and kubectl
	// watchdog ends kube-apiserver and etcd if the test process ends without Stop (reap.go).
	watchdog *exec.Cmd
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// assets returns KUBEBUILDER_ASSETS, or provides the binaries through hack/testbin.sh (which
// builds them once per machine) when it is not set.
func assets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "testbin.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/testbin.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// Option changes the control plane's set-up before it starts.
type Option func(*envtest.Environment)

// WithServiceAccountAdmission turns on the ServiceAccount admission plugin (envtest turns it
// off), as in a cluster: a Pod without a ServiceAccount gets "default", and one that does not
// opt out gets a projected API token volume.
func WithServiceAccountAdmission() Option {
	return func(env *envtest.Environment) {
		env.ControlPlane.GetAPIServer().Configure().Set("disable-admission-plugins", "")
	}
}

// WithoutCRDs starts the API server without deploy/crds, for a test of what installs them.
func WithoutCRDs() Option {
	return func(env *envtest.Environment) { env.CRDDirectoryPaths = nil }
}

// NodeUser and ControllerUser are the users of deploy/'s ServiceAccounts, whose every request
// the audit log records.
const (
	NodeUser       = "system:serviceaccount:connectors-system:connectors-csi-node"
	ControllerUser = "system:serviceaccount:connectors-system:connectors-csi-controller"
)

// auditPolicy records who touched which Secret (metadata only: never a Secret's data), so
// that tests can prove the driver did not read a Secret it must not read, and every request of
// the roles' ServiceAccounts, so that tests can count what a node or the controller sends.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources: [{group: "", resources: [secrets]}]
  - level: Metadata
    users: ["` + NodeUser + `", "` + ControllerUser + `"]
  - level: None
`

// WithAuditLog makes the API server write an audit log of Secret requests; see AuditEvents.
func WithAuditLog() Option {
	return func(env *envtest.Environment) {
		dir, err := os.MkdirTemp("", "connectors-csi-audit-")
		if err != nil {
			panic(err)
		}
		policy := filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			panic(err)
		}
		args := env.ControlPlane.GetAPIServer().Configure()
		args.Set("audit-policy-file", policy)
		args.Set("audit-log-path", filepath.Join(dir, "audit.log"))
		args.Set("audit-log-mode", "blocking")
	}
}

// AuditEvents returns the audit log's events that match keep (WithAuditLog must be on). The
// log is written before the API server answers, so every finished request is in it.
func (cp *ControlPlane) AuditEvents(keep func(*auditv1.Event) bool) ([]auditv1.Event, error) {
	path := cp.Env.ControlPlane.GetAPIServer().Configure().Get("audit-log-path").Get(nil)
	if len(path) == 0 {
		return nil, fmt.Errorf("the control plane was started without WithAuditLog")
	}
	// The API server may be writing the last event: its line is read again once whole.
	for tries := 1; ; tries++ {
		out, err := readAuditLog(path[0], keep)
		if !errors.Is(err, io.ErrUnexpectedEOF) || tries == 20 {
			return out, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readAuditLog reads the events of the audit log at path that keep keeps.
func readAuditLog(path string, keep func(*auditv1.Event) bool) ([]auditv1.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []auditv1.Event
	dec := json.NewDecoder(f)
	for {
		var ev auditv1.Event
		if err := dec.Decode(&ev); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("audit log %s: %w", path, err)
		}
		if keep(&ev) {
			out = append(out, ev)
		}
	}
}

// Start starts kube-apiserver and etcd with the CRDs of deploy/crds installed.
func Start(opts ...Option) (*ControlPlane, error) {
	dir, err := assets()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	// Webhooks (Tekton's) are reached at their Service's endpoints: there is no Service network.
	env.ControlPlane.GetAPIServer().Configure().Set("enable-aggregator-routing", "true")
	for _, opt := range opts {
		opt(env)
	}
	before := Children(os.Getpid())
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	cp := &ControlPlane{Env: env, Config: cfg, Assets: dir}
	if cp.watchdog, err = startWatchdog(os.Getpid(), newControlPlaneChildren(before)); err != nil {
		_ = env.Stop()
		return nil, err
	}
	if err := cp.connect(); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) connect() error {
	scheme := clientgoscheme.Scheme
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	var err error
	if cp.Kube, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return err
	}
	if cp.Client, err = client.New(cp.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	user, err := cp.Env.ControlPlane.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "connectors-csi-kubeconfig-")
	if err != nil {
		return err
	}
	defer f.Close()
	cp.Kubeconfig = f.Name()
	_, err = f.Write(kc)
	return err
}

// Kubectl runs the kubectl built with the control plane against it.
func (cp *ControlPlane) Kubectl(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(cp.Assets, "kubectl"), append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ServiceAccountKubeconfig writes to path a kubeconfig that authenticates with a token of the
// ServiceAccount ns/sa, so that a process runs with exactly that account's RBAC.
func (cp *ControlPlane) ServiceAccountKubeconfig(ns, sa, path string) error {
	tr, err := cp.Kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: cp.Config.Host, CertificateAuthorityData: cp.Config.CAData}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["cluster"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: sa}
	cfg.CurrentContext = "cluster"
	return clientcmd.WriteToFile(*cfg, path)
}

// Stop stops the control plane and removes its kubeconfig.
func (cp *ControlPlane) Stop() error {
	if cp.Kubeconfig != "" {
		_ = os.Remove(cp.Kubeconfig)
	}
	err := cp.Env.Stop()
	stopWatchdog(cp.watchdog)
	return err
}

// ReadYAML decodes a YAML file of the repository (strictly: unknown fields are errors).
func ReadYAML(path string, into any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(b, into)
}
