package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/scopes"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// labelNamespace sets (value non-empty) or removes a label of a namespace.
func labelNamespace(t *testing.T, ns, key, value string) {
	t.Helper()
	v := "null"
	if value != "" {
		v = fmt.Sprintf("%q", value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := cp.Kube.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestScopedConnectors follows Alauda's connector_scope_permissions with the deployed roles: a
// Connector in kube-public is usable from a namespace that was granted nothing (a git clone
// through the proxy with the rendered .gitconfig); one in a project's namespace
// (cpaas.io/inner-namespace=<itself>) from the project's members (cpaas.io/project) and from
// no other namespace; a namespace whose inner-namespace label names another shares nothing;
// leaving the project takes the use away.
func TestScopedConnectors(t *testing.T) {
	tool := startGitServer(t, false)
	env := startDeployedDrivers(t, nil)
	ctx := context.Background()
	git := gitClass(t)

	shared := "shared-" + rand.String(6)
	gitConnector(t, scopes.ClusterNamespace, shared, git, tool)
	project, member, outsider, impostor, impostorMember := newNamespace(t), newNamespace(t), newNamespace(t), newNamespace(t), newNamespace(t)
	labelNamespace(t, project, scopes.LabelProjectNamespace, project)
	labelNamespace(t, member, scopes.LabelProject, project)
	labelNamespace(t, impostor, scopes.LabelProjectNamespace, project) // claims the real project's name
	labelNamespace(t, impostorMember, scopes.LabelProject, impostor)
	gitConnector(t, project, "team", git, tool)
	gitConnector(t, impostor, "loot", git, tool)

	publish := func(ns, connector string) (string, error) {
		pod := podWithVolume(t, env.kubelet, ns, "p-"+rand.String(6), map[string]string{"connectors": connector, "configuration.names": "gitconfig"}, nil)
		if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
			return "", err
		}
		t.Cleanup(func() { _ = env.kubelet.Unpublish(context.Background(), pod, "connectors") })
		return env.kubelet.TargetPath(pod, "connectors"), nil
	}
	mustPublish := func(ns, connector string) string {
		t.Helper()
		var vol string
		var err error
		if !kubelet.WaitUntil(20*time.Second, func() bool { vol, err = publish(ns, connector); return err == nil }) {
			t.Fatalf("a Pod of %s could not use %s: %v", ns, connector, err)
		}
		return vol
	}
	refused := func(ns, connector string) {
		t.Helper()
		if _, err := publish(ns, connector); err == nil {
			t.Errorf("a Pod of %s used %s", ns, connector)
		}
	}

	t.Run("kube-public: every namespace", func(t *testing.T) {
		vol := mustPublish(outsider, scopes.ClusterNamespace+"/"+shared)
		env := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(vol, ".gitconfig")}
		if out, err := gitserver.Git("", env, "clone", "-q", tool.URL+"/repo.git", filepath.Join(t.TempDir(), "clone")); err != nil {
			t.Fatalf("git clone through the cluster-level Connector: %v\n%s", err, out)
		}
	})

	t.Run("a project: its members and itself, nobody else", func(t *testing.T) {
		mustPublish(member, project+"/team")
		mustPublish(project, project+"/team")
		refused(outsider, project+"/team")
		var rb rbacv1.RoleBinding
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: project, Name: scopes.BindingName}, &rb); err != nil {
			t.Fatal(err)
		}
		if len(rb.Subjects) != 2 || rb.RoleRef.Name != scopes.ConnectorUserRole {
			t.Errorf("the project's RoleBinding: %+v", rb)
		}
	})

	t.Run("a namespace claiming another project's name shares nothing", func(t *testing.T) {
		refused(impostorMember, impostor+"/loot")
		if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: impostor, Name: scopes.BindingName}, &rbacv1.RoleBinding{}); err == nil {
			t.Error("the controller bound a namespace whose inner-namespace label names another")
		}
	})

	// A member names its project by a label whose value nothing checks, and the controller
	// then looks at the namespace it names: it must not delete (nor take over) a RoleBinding of
	// its binding's name that it did not make there.
	t.Run("a RoleBinding of the name the controller did not make is left alone", func(t *testing.T) {
		victim, claimant := newNamespace(t), newNamespace(t)
		own := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: scopes.BindingName, Namespace: victim},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}}}
		create(t, own)
		labelNamespace(t, claimant, scopes.LabelProject, victim)
		key := types.NamespacedName{Namespace: victim, Name: scopes.BindingName}
		seen := `"RoleBinding not made by the scope controller is left alone`
		var got rbacv1.RoleBinding
		kubelet.WaitUntil(20*time.Second, func() bool {
			return cp.Client.Get(ctx, key, &got) != nil || strings.Contains(logs.String(), victim+"/"+scopes.BindingName)
		})
		if err := cp.Client.Get(ctx, key, &got); err != nil || got.UID != own.UID || got.RoleRef.Name != "view" || len(got.Subjects) != 1 {
			t.Fatalf("the namespace's own RoleBinding %s after the controller looked: %+v, %v", key, got, err)
		}
		if !strings.Contains(logs.String(), seen) {
			t.Errorf("the controller did not say it left %s alone", key)
		}
	})

	t.Run("leaving the project takes the use away", func(t *testing.T) {
		labelNamespace(t, member, scopes.LabelProject, "")
		if !kubelet.WaitUntil(20*time.Second, func() bool { _, err := publish(member, project+"/team"); return err != nil }) {
			t.Fatal("a namespace that left the project still uses its Connector")
		}
	})
}
