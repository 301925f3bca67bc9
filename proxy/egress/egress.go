// Package egress is the one way the driver reaches tools. The proxy, the Connectors API and
// the Connector status probes all dial through a Policy, which refuses, before any packet is
// sent, the destinations a tenant must never reach through a Connector: link-local addresses
// (cloud metadata at 169.254.169.254) and the cloud host services outside it, the operator's
// --refused-destinations, unspecified and multicast addresses, the driver's own
// listeners, and loopback unless allowed (SPEC §4.7). Every request the driver sends carries a
// hop marker, so that a Connector pointing back at a Connectors proxy is refused at the next
// hop instead of looping, and no client of this package follows redirects.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// HopHeader marks a request sent by a Connectors proxy. A proxy refuses a request that carries
// it (508 Loop Detected): a Connector's address must be the tool, never a Connectors proxy.
const HopHeader = "Connectors-Proxy-Hop"

// RefusedError is a destination the policy does not allow. Its message names the host and the
// kind of address, never a port scan's worth of detail.
type RefusedError struct {
	Host string
	Why  string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("destination %s is not allowed: %s", e.Host, e.Why)
}

// IsRefused reports whether err is, or wraps, a refused destination.
func IsRefused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

// DialFunc dials a network address, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// ResolveFunc resolves a host name to its addresses, as net.Resolver.LookupNetIP does.
type ResolveFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// Policy decides where the driver may connect. The zero value refuses loopback and knows no
// listeners of its own; Dial and Resolve default to the system's.
type Policy struct {
	// AllowLoopback lets Connectors and forwarded requests reach loopback addresses (tests,
	// single-node setups). Link-local, unspecified and multicast are refused regardless.
	AllowLoopback bool
	// Dial connects to an address the policy allowed (an IP, never a name); tests replace it.
	Dial DialFunc
	// Resolve looks names up; tests replace it so that no query leaves the machine.
	Resolve ResolveFunc
	// Refused are more destinations to refuse (--refused-destinations): a platform's own
	// services that Pods may reach but tenants' Connectors must not.
	Refused []netip.Prefix
	// NAT64 are the network's own NAT64 prefixes (--nat64-prefixes), besides the well-known
	// one: an address in one is checked as the IPv4 address it embeds (see NAT64Prefix).
	NAT64 []netip.Prefix

	mu   sync.RWMutex
	self []netip.AddrPort // this process's listeners
}

// AddListener records one of this process's own listeners: nothing may be dialed there, so
// that a Connector cannot point the proxy at itself.
func (p *Policy) AddListener(addr net.Addr) {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.self = append(p.self, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// cloudHostServices are the cloud metadata and host services Pods can often reach outside
// link-local: Alibaba Cloud's metadata (100.100.100.200), AWS's and Google Cloud's over IPv6,
// and Azure's WireServer (168.63.129.16). They hand out the node's credentials.
var cloudHostServices = []netip.Addr{
	netip.AddrFrom4([4]byte{100, 100, 100, 200}),
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("fd20:ce::254"),
	netip.AddrFrom4([4]byte{168, 63, 129, 16}),
}

// nat64 is the well-known NAT64 prefix (RFC 6052): on a cluster with NAT64, 64:ff9b::a.b.c.d
// reaches a.b.c.d, so it is checked as a.b.c.d.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// nat64Places are where the IPv4 address sits after a NAT64 prefix of each length RFC 6052
// allows (§2.2: the bits 64 to 71, byte 8, are left out).
var nat64Places = map[int][4]int{32: {4, 5, 6, 7}, 40: {5, 6, 7, 9}, 48: {6, 7, 9, 10}, 56: {7, 9, 10, 11}, 64: {9, 10, 11, 12}, 96: {12, 13, 14, 15}}

// NAT64Prefix checks that a network's NAT64 prefix has a length RFC 6052 allows.
func NAT64Prefix(prefix netip.Prefix) error {
	if _, ok := nat64Places[prefix.Bits()]; !ok || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return fmt.Errorf("NAT64 prefix %s: must be an IPv6 prefix of 32, 40, 48, 56, 64 or 96 bits (RFC 6052)", prefix)
	}
	return nil
}

// reached is the address a connection to addr reaches: an IPv4-mapped or NAT64 address's IPv4
// address (of the well-known prefix, or of one of prefixes), else addr.
func reached(addr netip.Addr, prefixes ...netip.Prefix) netip.Addr {
	addr = addr.Unmap()
	if nat64.Contains(addr) {
		return embedded(addr, nat64)
	}
	for _, prefix := range prefixes {
		if prefix.Contains(addr) {
			return embedded(addr, prefix)
		}
	}
	return addr
}

// embedded is the IPv4 address addr embeds after prefix; a prefix of a length RFC 6052 does not
// allow (NAT64Prefix refuses it) embeds none.
func embedded(addr netip.Addr, prefix netip.Prefix) netip.Addr {
	at, ok := nat64Places[prefix.Bits()]
	if !ok {
		return addr
	}
	b := addr.As16()
	return netip.AddrFrom4([4]byte{b[at[0]], b[at[1]], b[at[2]], b[at[3]]})
}

// Check says whether the policy allows a connection to addr:port; host names the destination
// in the error. The operator's refusals and the host services are matched against the address
// as given and as the IPv4 address it reaches, so that naming a NAT64 range in
// --nat64-prefixes loses no refusal of it.
func (p *Policy) Check(host string, addr netip.Addr, port uint16) error {
	refuse := func(why string) error { return &RefusedError{Host: host, Why: why} }
	if addr.Zone() != "" {
		return refuse(zoned)
	}
	given := addr.Unmap()
	addr = reached(given, p.NAT64...)
	switch {
	case !addr.IsValid():
		return refuse("no address")
	case addr.IsUnspecified():
		return refuse("an unspecified address (it reaches this node)")
	case addr.IsLinkLocalUnicast():
		return refuse("a link-local address (such as the cloud metadata service)")
	case slices.Contains(cloudHostServices, addr) || slices.Contains(cloudHostServices, given):
		return refuse("a cloud metadata or host service")
	case p.operatorRefused(addr) || p.operatorRefused(given):
		return refuse("an address of --refused-destinations")
	case addr.IsMulticast() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return refuse("a multicast or broadcast address")
	case p.isSelf(addr, port):
		return refuse("a listener of this driver")
	case addr.IsLoopback() && !p.AllowLoopback:
		return refuse("a loopback address (--allow-loopback-destinations is off)")
	}
	return nil
}

// zoned refuses an IPv6 address with a zone (fd00:ec2::254%eth0): no tool needs one, and netip
// counts the zone as part of the address, so that it compares unequal to the host services',
// the listeners' and the unspecified address, and no prefix contains it (--refused-destinations,
// NAT64, the ranges that are not public), while the kernel ignores it for every address but a
// link-local one, and connects to :: as to ::1.
const zoned = "an IPv6 address with a zone"

// operatorRefused tells whether addr is in --refused-destinations.
func (p *Policy) operatorRefused(addr netip.Addr) bool {
	return slices.ContainsFunc(p.Refused, func(r netip.Prefix) bool { return r.Contains(addr) })
}

// isSelf reports whether addr:port is one of this process's listeners. A listener on the
// unspecified address takes its port on every address of the node.
func (p *Policy) isSelf(addr netip.Addr, port uint16) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, l := range p.self {
		if l.Port() != port {
			continue
		}
		if l.Addr() == addr || (l.Addr().IsUnspecified() && (addr.IsLoopback() || isLocalAddress(addr))) {
			return true
		}
	}
	return false
}

// isLocalAddress reports whether addr belongs to one of the node's interfaces.
func isLocalAddress(addr netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: treat it as ours, and refuse
	}
	for _, a := range addrs {
		if prefix, err := netip.ParsePrefix(a.String()); err == nil && prefix.Addr().Unmap() == addr {
			return true
		}
	}
	return false
}

// DialContext resolves address, checks every address it resolves to, and dials only allowed
// ones, by IP, so that a second lookup cannot swap in another answer (DNS rebinding). A name
// that resolves to any refused address is refused as a whole.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return p.dialChecked(ctx, network, address, nil)
}

// PublicDialContext is DialContext that also refuses every address that is not public (see
// NotPublic): for traffic that no Connector vouches for.
func (p *Policy) PublicDialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return p.dialChecked(ctx, network, address, func(addr netip.Addr) string { return notPublic(reached(addr, p.NAT64...)) })
}

// notGlobal are the ranges NotPublic refuses besides loopback, RFC 1918 and unique-local
// (netip's IsPrivate), link-local, unspecified and multicast: the special-purpose ranges IANA
// marks as not globally reachable, which clusters use for their own networks (shared address
// space, "class E" 240/4 on some managed clusters, benchmarking 198.18/15) or which reach no
// public host at all. The documentation ranges are left to pass: nothing is there to reach,
// and tests stand them in for the internet. IPv4-mapped and NAT64 forms are checked as what
// they reach (reached).
var notGlobal = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (carrier-grade NAT) address"},
	{netip.MustParsePrefix("0.0.0.0/8"), `a "this network" address`},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol assignment"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local-use NAT64 address"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address"},
	{netip.MustParsePrefix("2001::/23"), "an IETF protocol assignment"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address"},
	{netip.MustParsePrefix("5f00::/16"), "a segment routing address"},
}

// NotPublic says why addr is not on the public internet, or "" when it is.
func NotPublic(addr netip.Addr) string { return notPublic(reached(addr)) }

// notPublic is NotPublic of the address a connection reaches.
func notPublic(addr netip.Addr) string {
	switch {
	case addr.Zone() != "":
		return zoned
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsPrivate():
		return "a private address"
	case addr.IsLinkLocalUnicast() || addr.IsUnspecified() || addr.IsMulticast():
		return "not a unicast public address"
	}
	for _, r := range notGlobal {
		if r.prefix.Contains(addr) {
			return r.why
		}
	}
	return ""
}

// Bounds of one dial: at most maxDialAddresses of a name's addresses are tried (every one is
// checked), within dialTimeout together, each within its share of what is left and at least
// minAddressTimeout, as net.Dialer shares its timeout. A tool's owner names the addresses: a
// name of thousands of addresses that never answer (a DNS answer over TCP holds about 4,000)
// was a dial of hours, a goroutine and a socket, and the addresses, held each.
const (
	maxDialAddresses  = 4
	dialTimeout       = 10 * time.Second
	minAddressTimeout = 2 * time.Second
)

// requestKey holds, in the context a request is sent with, that request's own context.
type requestKey struct{}

// DialsEndWith is r, sent so that a dial of the policy for it ends when r does. http.Transport
// dials on a context that r's end does not cancel (so that a late connection may serve the
// pool), and a tenant sending and dropping requests to addresses that never answer would leave
// a dial behind each time.
func DialsEndWith(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), requestKey{}, r.Context()))
}

// dialsEndWithRequests sends every request DialsEndWith.
type dialsEndWithRequests struct{ next http.RoundTripper }

func (d dialsEndWithRequests) RoundTrip(r *http.Request) (*http.Response, error) {
	return d.next.RoundTrip(DialsEndWith(r))
}

// dialChecked is DialContext with an extra refusal (nil: none).
func (p *Policy) dialChecked(ctx context.Context, network, address string, extra func(netip.Addr) string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("destination %s: bad port", address)
	}
	// One bound for the name's lookup and its dials: a tenant's name server that answers
	// slowly holds a lookup as long as a dial.
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if request, ok := ctx.Value(requestKey{}).(context.Context); ok {
		defer context.AfterFunc(request, cancel)()
	}
	addrs, err := p.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if err := p.Check(host, a, uint16(port)); err != nil {
			return nil, err
		}
		if extra == nil {
			continue
		}
		if why := extra(a); why != "" {
			return nil, &RefusedError{Host: host, Why: why}
		}
	}
	addrs = alternateFamilies(addrs, maxDialAddresses) // the rest of a long answer let go
	var firstErr error
	for i, a := range addrs {
		conn, err := p.dialOne(ctx, network, netip.AddrPortFrom(a.Unmap(), uint16(port)).String(), len(addrs)-i)
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// alternateFamilies is up to n of addrs, in their order (the resolver's, RFC 6724's) but
// alternating between IPv6 and IPv4 addresses, as Happy Eyeballs does: a node whose IPv6 leads
// nowhere still tries a name's IPv4 addresses when its first ones are IPv6.
func alternateFamilies(addrs []netip.Addr, n int) []netip.Addr {
	var first, second []netip.Addr
	for _, a := range addrs {
		if len(first) == 0 || a.Unmap().Is4() == first[0].Unmap().Is4() {
			first = append(first, a)
		} else {
			second = append(second, a)
		}
	}
	out := make([]netip.Addr, 0, min(n, len(addrs)))
	for i := 0; len(out) < cap(out); i++ {
		for _, family := range [][]netip.Addr{first, second} {
			if i < len(family) && len(out) < cap(out) {
				out = append(out, family[i])
			}
		}
	}
	return out
}

// dialOne dials one address, within its share of the time ctx leaves the left addresses.
func (p *Policy) dialOne(ctx context.Context, network, address string, left int) (net.Conn, error) {
	if deadline, ok := ctx.Deadline(); ok {
		share := max(time.Until(deadline)/time.Duration(left), minAddressTimeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, share)
		defer cancel()
	}
	return p.dial()(ctx, network, address)
}

// toolResolver resolves the tools' names with Go's resolver, which stops at a temporary
// failure (SERVFAIL, a timeout) of a name as written rather than go on down the cluster's
// search list: the deployed Pods ask a name with a dot as written first (ndots 1), and when
// gitlab.corp's own server failed, the next name asked, gitlab.corp.svc.cluster.local, is the
// Service gitlab of a namespace corp a tenant may own, which would receive the credential of
// every Connector at gitlab.corp (and the controller's probes'). A name that does not exist
// as written (NXDOMAIN) still goes down the list, as in-cluster names written short need.
var toolResolver = &net.Resolver{PreferGo: true, StrictErrors: true}

// lookupTool resolves a tool's name with toolResolver. Strict, one family's temporary failure
// fails the lookup of both (a DNS server that fails AAAA queries, as some do, would fail every
// name): then the IPv4 addresses alone are asked for, strictly too. Not the IPv6 ones alone:
// a server that answers A but NXDOMAIN to AAAA would send that lookup down the search list,
// to a tenant's dual-stack Service.
func lookupTool(ctx context.Context, host string) ([]netip.Addr, error) {
	addrs, err := toolResolver.LookupNetIP(ctx, "ip", host)
	if err == nil {
		return addrs, nil
	}
	if v4, err4 := toolResolver.LookupNetIP(ctx, "ip4", host); err4 == nil {
		return v4, nil
	}
	return nil, err
}

func (p *Policy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	resolve := p.Resolve
	if resolve == nil {
		resolve = lookupTool
	}
	addrs, err := resolve(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("%s has no address", host)
	}
	return addrs, err
}

var defaultDialer = &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}

func (p *Policy) dial() DialFunc {
	if p.Dial != nil {
		return p.Dial
	}
	return defaultDialer.DialContext
}

// NoRedirects is a CheckRedirect that hands every redirect back to the caller: a credential
// set on a request must never travel to where a tool's answer points.
func NoRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Client returns an HTTP client over rt that follows no redirect, gives up after timeout, and
// whose dials end with their requests (DialsEndWith).
func Client(rt http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Transport: dialsEndWithRequests{rt}, CheckRedirect: NoRedirects, Timeout: timeout}
}

// Marked wraps rt so that every request carries the hop marker. It is for requests built by
// libraries (registry and Git clients); the proxy sets the marker on its own requests.
func Marked(rt http.RoundTripper) http.RoundTripper { return marked{rt} }

type marked struct{ next http.RoundTripper }

func (m marked) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get(HopHeader) == "" {
		r = r.Clone(r.Context())
		r.Header.Set(HopHeader, "1")
	}
	return m.next.RoundTrip(r)
}
