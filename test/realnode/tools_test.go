//go:build realnode

package realnode

import (
	"testing"

	"github.com/kube-connectors/connectors-csi/test/gitserver"
	"github.com/kube-connectors/connectors-csi/test/mavenrepo"
	"github.com/kube-connectors/connectors-csi/test/registry"
	"github.com/kube-connectors/connectors-csi/test/verdaccio"
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

// startRegistryToolOn is startRegistryTool on ip, an address of the tools' namespace, port 80:
// a host of no Connector, reached over plain HTTP through the proxy's pass-through, which
// forwards plain HTTP to port 80 only (--forward-passthrough-http-ports).
func startRegistryToolOn(t *testing.T, ip string) *registry.Server {
	t.Helper()
	lis, err := ListenToolsOn(ip, "80")
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

// inTools runs a command inside the tools' network namespace (ip execs it in place).
var inTools = []string{"ip", "netns", "exec", ToolsNetns}

// toolsAddr is a free address of the tools' namespace, for a server that another program
// (nginx, Verdaccio) runs there rather than a listener of this process.
func toolsAddr(t *testing.T) string {
	t.Helper()
	lis, err := ListenTools()
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// startMavenTool starts a Maven repository (nginx WebDAV behind Basic auth, falling back to
// Debian's packaged plugins) in the tools' namespace, stopped when t ends.
func startMavenTool(t *testing.T) *mavenrepo.Server {
	t.Helper()
	repo, err := mavenrepo.StartWith(t.TempDir(), mavenrepo.Options{Path: "/repository/maven-releases", Addr: toolsAddr(t), Wrap: inTools})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	return repo
}

// startNpmTool starts a Verdaccio with one user in the tools' namespace, stopped when t ends.
func startNpmTool(t *testing.T) *verdaccio.Server {
	t.Helper()
	v, err := verdaccio.Start(t.TempDir(), 1, verdaccio.Options{Addr: toolsAddr(t), Wrap: inTools})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}
