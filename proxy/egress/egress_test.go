package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestCheck(t *testing.T) {
	p := &Policy{}
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
