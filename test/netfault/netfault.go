// Package netfault puts a TCP forwarder between a client and a server on loopback so that a
// test can cut the connection (every open connection closed, new ones refused) and restore it,
// as a network partition or an API server outage looks to the client.
package netfault

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Forwarder forwards connections from its loopback address to a target address.
type Forwarder struct {
	target string
	addr   string

	mu    sync.Mutex
	lis   net.Listener
	conns map[net.Conn]struct{}
}

// New starts a forwarder to target on a free loopback port.
func New(target string) (*Forwarder, error) {
	f := &Forwarder{target: target, conns: map[net.Conn]struct{}{}}
	if err := f.listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	f.addr = f.lis.Addr().String()
	return f, nil
}

// Addr is the forwarder's address (host:port), stable across Cut and Restore.
func (f *Forwarder) Addr() string { return f.addr }

func (f *Forwarder) listen(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.lis = lis
	f.mu.Unlock()
	go f.accept(lis)
	return nil
}

func (f *Forwarder) accept(lis net.Listener) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go f.forward(c)
	}
}

func (f *Forwarder) forward(client net.Conn) {
	server, err := net.Dial("tcp", f.target)
	if err != nil {
		_ = client.Close()
		return
	}
	f.track(client, server)
	defer f.untrack(client, server)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
}

func (f *Forwarder) track(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
}

func (f *Forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(f.conns, c)
	}
}

// Cut closes every open connection and refuses new ones until Restore.
func (f *Forwarder) Cut() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lis == nil {
		return errors.New("already cut")
	}
	err := f.lis.Close()
	f.lis = nil
	for c := range f.conns {
		_ = c.Close()
	}
	return err
}

// Restore accepts connections again on the same address.
func (f *Forwarder) Restore() error { return f.listen(f.addr) }

// Close cuts for good.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	cut := f.lis == nil
	f.mu.Unlock()
	if cut {
		return nil
	}
	return f.Cut()
}
