package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// manyAddresses resolves every name to n documentation addresses (public to the policy: they
// stand in for the internet, and no packet is sent to them: every dial is a hook's).
func manyAddresses(n int) ResolveFunc {
	return func(context.Context, string) ([]netip.Addr, error) {
		out := make([]netip.Addr, n)
		for i := range out {
			out[i] = netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		}
		return out, nil
	}
}

// TestADialTriesAFewAddresses: a tool's owner names the addresses; of a name's thousands, a
// dial tries at most maxDialAddresses (all of them checked first).
func TestADialTriesAFewAddresses(t *testing.T) {
	var dials atomic.Int32
	p := &Policy{Resolve: manyAddresses(4000), Dial: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("test: refused")
	}}
	if _, err := p.DialContext(context.Background(), "tcp", "many.test:80"); err == nil {
		t.Fatal("the dial succeeded")
	}
	if n := dials.Load(); n != maxDialAddresses {
		t.Errorf("a name of 4000 addresses: %d dials, want %d", n, maxDialAddresses)
	}
}

// TestADialEndsWithItsRequest: http.Transport dials on a context its request's end does not
// cancel; sent through Client (or DialsEndWith), a request's dial to an address that never
// answers ends when the request does, rather than when every address has had its time.
func TestADialEndsWithItsRequest(t *testing.T) {
	started, ended := make(chan struct{}, maxDialAddresses), make(chan error, maxDialAddresses)
	p := &Policy{Resolve: manyAddresses(4), Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		started <- struct{}{}
		<-ctx.Done() // an address that never answers
		ended <- ctx.Err()
		return nil, ctx.Err()
	}}
	client := Client(&http.Transport{Proxy: nil, DialContext: p.DialContext}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://slow.test/", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-started
		cancel() // the client goes away while the first address is being dialed
	}()
	if _, err := client.Do(req); err == nil {
		t.Fatal("the request succeeded")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the dial ended with %v, want the request's end", err)
		}
	case <-time.After(time.Minute): // a bound on a hang, not a timing
		t.Fatal("the dial went on after its request ended")
	}
}

// TestNoAddressIsDialedAfterTheRequestEnded: the dial of a request that ended (on the context
// http.Transport dials with: the request's values, not its end) tries no further address.
func TestNoAddressIsDialedAfterTheRequestEnded(t *testing.T) {
	var dials atomic.Int32
	started := make(chan struct{}, maxDialAddresses)
	p := &Policy{Resolve: manyAddresses(4), Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	if _, err := p.DialContext(endingRequest(started), "tcp", "slow.test:80"); !errors.Is(err, context.Canceled) {
		t.Errorf("the dial of an ended request: %v, want its end", err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d addresses dialed, want the one under way when the request ended", n)
	}
}

// TestADialAlternatesFamilies: of a name's addresses, the dial tries both families' first ones
// in turn, so that a node whose IPv6 leads nowhere reaches a name whose first ones are IPv6.
func TestADialAlternatesFamilies(t *testing.T) {
	six := func(i int) netip.Addr { return netip.AddrFrom16([16]byte{0x26, 0x06, 0x47, 0x00, 15: byte(i)}) }
	four := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}) }
	addrs := []netip.Addr{six(1), six(2), six(3), six(4), six(5), four(1), four(2)}
	want := []netip.Addr{six(1), four(1), six(2), four(2)}
	if got := alternateFamilies(addrs, maxDialAddresses); !slices.Equal(got, want) {
		t.Errorf("alternateFamilies = %v, want %v", got, want)
	}
	if got := alternateFamilies([]netip.Addr{four(1)}, maxDialAddresses); !slices.Equal(got, []netip.Addr{four(1)}) {
		t.Errorf("one address: %v", got)
	}
}

// TestALookupEndsWithItsRequest: the name's lookup is bound as its dials are: a tenant's name
// server that never answers holds it no longer than its request.
func TestALookupEndsWithItsRequest(t *testing.T) {
	asked := make(chan struct{})
	p := &Policy{Resolve: func(ctx context.Context, _ string) ([]netip.Addr, error) {
		close(asked)
		<-ctx.Done()
		return nil, ctx.Err()
	}, Dial: func(context.Context, string, string) (net.Conn, error) {
		t.Error("dialed an address no lookup gave")
		return nil, errors.New("test: not dialing")
	}}
	if _, err := p.DialContext(endingRequest(asked), "tcp", "slow.test:80"); !errors.Is(err, context.Canceled) {
		t.Errorf("the lookup of an ended request: %v, want its end", err)
	}
}

// endingRequest is the context http.Transport dials with (a request's values, not its end) for
// a request that ends once ended is signalled (or closed).
func endingRequest[T any](ended <-chan T) context.Context {
	request, cancel := context.WithCancel(context.Background())
	go func() {
		<-ended
		cancel()
	}()
	return context.WithValue(context.WithoutCancel(request), requestKey{}, request)
}
