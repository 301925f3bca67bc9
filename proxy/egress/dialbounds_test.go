package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
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
	request, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	dialCtx := context.WithValue(context.WithoutCancel(request), requestKey{}, request)
	if _, err := p.DialContext(dialCtx, "tcp", "slow.test:80"); !errors.Is(err, context.Canceled) {
		t.Errorf("the dial of an ended request: %v, want its end", err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d addresses dialed, want the one under way when the request ended", n)
	}
}
