package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestCheck(t *testing.T) {
	p := &Policy{Refused: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		NAT64: []netip.Prefix{netip.MustParsePrefix("64:ff9b:1::/48"), netip.MustParsePrefix("64:ff9b:2::/96")}}
	p.AddListener(&net.TCPAddr{IP: net.IPv4zero, Port: 3128})
	p.AddListener(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9090})
	for _, tc := range []struct {
		addr    string
		port    uint16
		refused bool
	}{
		{"169.254.169.254", 80, true},
		{"::ffff:169.254.169.254", 80, true},
		{"fe80::1", 443, true},
		{"0.0.0.0", 80, true},
		{"::", 80, true},
		{"224.0.0.251", 5353, true},
		{"ff02::1", 80, true},
		{"255.255.255.255", 80, true},
		{"127.0.0.1", 80, true}, // loopback is off by default
		{"::1", 80, true},
		{"127.0.0.1", 3128, true}, // the proxy, listening on every address
		{"10.0.0.7", 443, false},
		{"192.168.1.10", 8080, false},
		{"140.82.112.3", 443, false},
		{"2606:4700::1", 443, false},
		// Cloud metadata and host services outside link-local; NAT64 forms are the IPv4's.
		{"100.100.100.200", 80, true},
		{"fd00:ec2::254", 80, true},
		{"fd20:ce::254", 80, true},
		{"168.63.129.16", 80, true},
		{"64:ff9b::a9fe:a9fe", 80, true},
		{"64:ff9b::6464:64c8", 80, true},
		{"64:ff9b::8c52:7003", 443, false},
		// The network's own NAT64 prefixes (a /48 and a /96 of the local-use range here): the
		// IPv4 address where each puts it.
		{"64:ff9b:1:a9fe:a9:fe00::", 80, true},
		{"64:ff9b:1:8c52:70:300::", 443, false},
		{"64:ff9b:2::a9fe:a9fe", 80, true},
		{"64:ff9b:2::8c52:7003", 443, false},
		{"100.100.100.201", 80, false},
		// The operator's --refused-destinations.
		{"192.0.2.10", 80, true},
		{"192.0.3.10", 80, false},
		// A zone: netip compares fd00:ec2::254%eth0 unequal to fd00:ec2::254 and no prefix
		// contains it, while the kernel connects to it (and to ::%lo as to ::1).
		{"fd00:ec2::254%eth0", 80, true},
		{"::%lo", 3128, true},
		{"64:ff9b::a9fe:a9fe%eth0", 80, true},
		{"2606:4700::1%eth0", 443, true},
	} {
		err := p.Check("h", netip.MustParseAddr(tc.addr), tc.port)
		if refused := IsRefused(err); refused != tc.refused {
			t.Errorf("Check(%s:%d) = %v, want refused=%v", tc.addr, tc.port, err, tc.refused)
		}
	}
	p.AllowLoopback = true
	if err := p.Check("h", netip.MustParseAddr("127.0.0.2"), 80); err != nil {
		t.Errorf("loopback with AllowLoopback: %v", err)
	}
	for _, own := range []string{"127.0.0.1:9090", "127.0.0.1:3128", "127.0.0.5:3128"} {
		ap := netip.MustParseAddrPort(own)
		if err := p.Check("h", ap.Addr(), ap.Port()); !IsRefused(err) {
			t.Errorf("own listener %s allowed with AllowLoopback", own)
		}
	}
}

func TestDialContextChecksEveryResolvedAddressBeforeDialing(t *testing.T) {
	var dialed []string
	p := &Policy{
		Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			return nil, errors.New("test: not dialing")
		},
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "mixed.test": // one public address and the metadata service
				return []netip.Addr{netip.MustParseAddr("140.82.112.3"), netip.MustParseAddr("169.254.169.254")}, nil
			case "public.test":
				return []netip.Addr{netip.MustParseAddr("140.82.112.3")}, nil
			}
			return nil, errors.New("test: unknown host")
		},
	}
	if _, err := p.DialContext(context.Background(), "tcp", "mixed.test:80"); !IsRefused(err) {
		t.Fatalf("a name resolving to a link-local address: %v", err)
	}
	if _, err := p.DialContext(context.Background(), "tcp", "[::ffff:a9fe:a9fe]:80"); !IsRefused(err) {
		t.Fatalf("an IPv4-mapped metadata address: %v", err)
	}
	if len(dialed) != 0 {
		t.Fatalf("refused destinations were dialed: %v", dialed)
	}
	_, _ = p.DialContext(context.Background(), "tcp", "public.test:443")
	if len(dialed) != 1 || dialed[0] != "140.82.112.3:443" {
		t.Fatalf("dialed %v, want the resolved IP, not the name", dialed)
	}
}

// TestNotPublicRefusesWhatIsNotGlobal: the ranges IANA marks as not globally reachable are
// not public, clusters' own among them (shared space, 240/4, 198.18/15), in every form.
func TestNotPublicRefusesWhatIsNotGlobal(t *testing.T) {
	for _, addr := range []string{"100.64.0.1", "0.1.2.3", "192.0.0.8", "198.18.0.1", "198.19.255.254", "240.0.0.1",
		"255.255.255.255", "::ffff:240.0.0.1", "64:ff9b::f000:1", "64:ff9b:1::a", "2001:2::1", "fec0::1", "fd00::1%eth0", "2606:4700::1111%eth0"} {
		if why := NotPublic(netip.MustParseAddr(addr)); why == "" {
			t.Errorf("NotPublic(%s): public, want refused", addr)
		}
	}
	for _, addr := range []string{"198.20.0.1", "2606:4700::1111", "1.1.1.1"} {
		if why := NotPublic(netip.MustParseAddr(addr)); why != "" {
			t.Errorf("NotPublic(%s): %s, want public", addr, why)
		}
	}
}

// TestNotPublicSeesThroughNAT64: a NAT64 address is as public as the IPv4 address it reaches.
func TestNotPublicSeesThroughNAT64(t *testing.T) {
	for addr, public := range map[string]bool{
		"64:ff9b::a00:7": false, "64:ff9b::7f00:1": false, "64:ff9b::8c52:7003": true, "140.82.112.3": true, "::ffff:10.0.0.7": false,
	} {
		if got := NotPublic(netip.MustParseAddr(addr)) == ""; got != public {
			t.Errorf("NotPublic(%s): public=%v, want %v", addr, got, public)
		}
	}
}

func TestNAT64Prefix(t *testing.T) {
	for prefix, ok := range map[string]bool{"64:ff9b:1::/48": true, "64:ff9b:1:2::/64": true, "2001:db8::/32": true, "2001:db8::/96": true,
		"64:ff9b:1::/50": false, "2001:db8::/128": false, "10.0.0.0/8": false} {
		if err := NAT64Prefix(netip.MustParsePrefix(prefix)); (err == nil) != ok {
			t.Errorf("NAT64Prefix(%s) = %v, want ok %v", prefix, err, ok)
		}
	}
}

// TestTheNetworksNAT64Prefixes: with --nat64-prefixes, pass-through judges an address in one as
// the IPv4 address it embeds (an operator's prefix is often public IPv6 space), and the
// operator's refusal of the range itself still holds.
func TestTheNetworksNAT64Prefixes(t *testing.T) {
	var dialed []string
	p := &Policy{NAT64: []netip.Prefix{netip.MustParsePrefix("2a01:4f8:1::/96")}, Refused: []netip.Prefix{netip.MustParsePrefix("2a01:4f8:1::c633:6400/120")},
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr(host)}, nil
		},
		Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			return nil, errors.New("test: not dialed")
		}}
	if _, err := p.PublicDialContext(context.Background(), "tcp", "[2a01:4f8:1::a00:1]:80"); !IsRefused(err) || len(dialed) != 0 {
		t.Errorf("pass-through to the network's NAT64 form of 10.0.0.1: %v, dialed %v; want refused before any dial", err, dialed)
	}
	if _, err := p.PublicDialContext(context.Background(), "tcp", "[2a01:4f8:1::8c52:7003]:443"); IsRefused(err) || len(dialed) != 1 {
		t.Errorf("pass-through to the network's NAT64 form of a public address: %v, dialed %v; want it dialed", err, dialed)
	}
	if err := p.Check("h", netip.MustParseAddr("2a01:4f8:1::c633:6407"), 80); !IsRefused(err) {
		t.Errorf("an address of a refused range that is also a NAT64 prefix: %v, want refused", err)
	}
}
