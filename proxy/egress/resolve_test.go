package egress

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsChildEnv marks the test binary run inside its own mount and network namespaces.
const dnsChildEnv = "EGRESS_DNS_CHILD"

// TestResolveStopsAtAFailureOfTheNameAsWritten: with the deployed Pods' resolver settings (a
// cluster's search list, ndots 1), a tool's name whose own DNS server fails (SERVFAIL) is a
// failure, not the address of the search list's next name (gitlab.corp.svc.cluster.local: a
// tenant's Service gitlab in a namespace corp), which would receive the credential; a name
// that resolves as written resolves, also when its server fails AAAA queries alone. Through Go's real resolver and a real resolv.conf, in a
// mount and network namespace of the test's own, with a DNS server on its loopback.
func TestResolveStopsAtAFailureOfTheNameAsWritten(t *testing.T) {
	if os.Getenv(dnsChildEnv) == "1" {
		resolveInTheNamespace(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs in a mount and network namespace of its own")
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "nameserver 127.0.0.1\nsearch tenant.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:1 attempts:1 timeout:1\n"
	if err := os.WriteFile(resolv, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `mount --bind "$1" /etc/resolv.conf && ip link set lo up && exec "$2" -test.run='^TestResolveStopsAtAFailureOfTheNameAsWritten$' -test.v`
	cmd := exec.Command("unshare", "--mount", "--net", "sh", "-c", script, "sh", resolv, os.Args[0])
	cmd.Env = append(os.Environ(), dnsChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in its namespaces: %v\n%s", err, out)
	}
}

// resolveInTheNamespace is the test inside its namespaces: a DNS server on 127.0.0.1:53 that
// fails gitlab.corp, answers gitlab.corp.svc.cluster.local with a Service's address, and
// tool.corp with its own. The addresses answered are loopback ones, and nothing is sent to
// them: the test resolves, it does not dial.
func resolveInTheNamespace(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go answerDNS(pc, map[string][4]byte{"gitlab.corp.svc.cluster.local.": {127, 0, 96, 99}, "tool.corp.": {127, 0, 0, 5}, "v4.corp.": {127, 0, 0, 6}},
		map[string]bool{"gitlab.corp. TypeA": true, "gitlab.corp. TypeAAAA": true, "v4.corp. TypeAAAA": true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &Policy{}
	if addrs, err := p.resolve(ctx, "gitlab.corp"); err == nil {
		t.Errorf("gitlab.corp, whose server failed, resolved to %v: the search list's next name, a tenant's Service", addrs)
	}
	if addrs, err := p.resolve(ctx, "tool.corp"); err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.0.0.5") {
		t.Errorf("tool.corp: %v %v, want 127.0.0.5", addrs, err)
	}
	if addrs, err := p.resolve(ctx, "v4.corp"); err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.0.0.6") {
		t.Errorf("v4.corp, whose server fails AAAA queries: %v %v, want 127.0.0.6", addrs, err)
	}
}

// answerDNS answers A queries for the names of a, SERVFAIL for the queries of failing ("name
// type"), NXDOMAIN for others.
func answerDNS(pc net.PacketConn, a map[string][4]byte, failing map[string]bool) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var m dnsmessage.Message
		if m.Unpack(buf[:n]) != nil || len(m.Questions) != 1 {
			continue
		}
		q := m.Questions[0]
		m.Header.Response, m.Header.RecursionAvailable = true, true
		ip, known := a[q.Name.String()]
		switch {
		case failing[q.Name.String()+" "+q.Type.String()]:
			m.Header.RCode = dnsmessage.RCodeServerFailure
		case known && q.Type == dnsmessage.TypeA:
			m.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
				Body: &dnsmessage.AResource{A: ip}}}
		case known: // no AAAA record
		default:
			m.Header.RCode = dnsmessage.RCodeNameError
		}
		if out, err := m.Pack(); err == nil {
			_, _ = pc.WriteTo(out, from)
		}
	}
}
