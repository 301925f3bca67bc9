//go:build realnode

package realnode

import (
	"testing"

	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/registry"
)

// startGitTool starts a Git server in the tools' network namespace, stopped when t ends.
func startGitTool(t *testing.T, secure bool) *gitserver.Server {
	t.Helper()
	lis, err := ListenTools()
	if err != nil {
		t.Fatal(err)
	}
	tool, err := gitserver.StartOn(lis, t.TempDir(), secure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tool.Close)
	return tool
}

// startRegistryTool starts a registry in the tools' network namespace, stopped when t ends.
func startRegistryTool(t *testing.T) *registry.Server {
	t.Helper()
	return startRegistryToolOn(t, ToolsIP)
}

// startRegistryToolOn is startRegistryTool on ip, an address of the tools' namespace.
func startRegistryToolOn(t *testing.T, ip string) *registry.Server {
	t.Helper()
	lis, err := ListenToolsOn(ip)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.StartOn(t.TempDir(), lis)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return reg
}
