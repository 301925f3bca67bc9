//go:build realnode

package realnode

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// The test tools (Git servers, the registry) live in a network namespace the lane creates,
// joined to the host by a veth pair: every non-loopback address a test talks to belongs to
// something the lane made, and the driver runs without --allow-loopback-destinations, as in a
// cluster. Pods do not reach the tools directly (the namespace has no route to the Pod network):
// only the proxy on the host does.
//
// ToolsPublicIP stands for a host on the internet (a registry of no Connector that
// pass-through reaches): an address of the documentation range TEST-NET-3, given to the
// namespace's loopback and routed from the host through the veth, so that its packets, too,
// never leave the machine.
const (
	ToolsNetns    = "connectors-e2e-tools"
	ToolsIP       = "10.89.0.1" // the tools' end of the veth, inside ToolsNetns
	ToolsHostIP   = "10.89.0.2" // the host's end: what the tools' namespace sees of the host
	ToolsPublicIP = "203.0.113.10"
	toolsPrefix   = "/30"
	toolsHostLink = "ce2e-tools"
	toolsNsLink   = "ce2e-tools-ns"
)

// createToolsNetwork creates ToolsNetns and its veth pair (Down removes both).
func createToolsNetwork() error {
	deleteToolsNetwork() // what a killed run left
	for _, args := range [][]string{
		{"ip", "netns", "add", ToolsNetns},
		{"ip", "link", "add", toolsHostLink, "type", "veth", "peer", "name", toolsNsLink},
		{"ip", "link", "set", toolsNsLink, "netns", ToolsNetns},
		{"ip", "addr", "add", ToolsHostIP + toolsPrefix, "dev", toolsHostLink},
		{"ip", "link", "set", toolsHostLink, "up"},
		{"ip", "-n", ToolsNetns, "addr", "add", ToolsIP + toolsPrefix, "dev", toolsNsLink},
		{"ip", "-n", ToolsNetns, "link", "set", toolsNsLink, "up"},
		{"ip", "-n", ToolsNetns, "link", "set", "lo", "up"},
		{"ip", "-n", ToolsNetns, "addr", "add", ToolsPublicIP + "/32", "dev", "lo"},
		{"ip", "route", "add", ToolsPublicIP + "/32", "via", ToolsIP, "dev", toolsHostLink},
	} {
		if out, err := run(args...); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// deleteToolsNetwork removes ToolsNetns; the veth pair and the route to ToolsPublicIP go
// with it.
func deleteToolsNetwork() {
	_, _ = run("ip", "netns", "delete", ToolsNetns)
	_, _ = run("ip", "link", "delete", toolsHostLink)
}

// ListenTools opens a TCP listener on ToolsIP inside ToolsNetns (ListenToolsOn another of its
// addresses). A socket keeps the network
// namespace it was created in, so the test process serves it like any other listener. Only
// the creating thread enters the namespace; it is locked for that and, should it fail to
// return to the host's namespace, left locked so that Go discards it with its goroutine.
func ListenTools() (net.Listener, error) { return ListenToolsOn(ToolsIP, "0") }

// ListenToolsOn is ListenTools on ip, an address of ToolsNetns, and port ("0": any free one).
func ListenToolsOn(ip, port string) (net.Listener, error) {
	type result struct {
		lis net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		lis, back, err := listenInNetns("/var/run/netns/"+ToolsNetns, net.JoinHostPort(ip, port))
		if back {
			runtime.UnlockOSThread()
		}
		done <- result{lis, err}
	}()
	r := <-done
	return r.lis, r.err
}

// listenInNetns listens on addr inside the network namespace at nsPath from the calling
// (locked) thread; back reports whether the thread is in its own namespace again.
func listenInNetns(nsPath, addr string) (lis net.Listener, back bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, fmt.Errorf("tools network namespace: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	lis, err = net.Listen("tcp", addr)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		if lis != nil {
			lis.Close()
		}
		return nil, false, fmt.Errorf("return from %s: %w", nsPath, err)
	}
	return lis, true, err
}
