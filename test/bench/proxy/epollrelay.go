package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The event-loop floor row: the floor relay's work (relay.go: the credential header added to
// each request head, the answer copied back) done as nginx does it, not as Go's net package
// does: one loop per CPU on a thread of its own, each with its own SO_REUSEPORT listener and a
// level-triggered epoll set, every socket non-blocking, one read(2) per readiness and no
// goroutine per connection. Go's netpoller is edge-triggered, so a goroutine reads until
// EAGAIN (a read that finds nothing per wait) and parks and wakes through the scheduler for
// every request; this row shows what a Go proxy that left net for its own loop could reach on
// the machine, beside the goroutine floor. It is a yardstick: answers are copied as they come
// (a client waits for each before its next request), request bodies are not supported.
//
// Why by hand: what this measures is the absence of a library's model (net's goroutines).

// epollRelayBuffer is the read buffer of a loop: a 1 MiB answer goes in 64 KiB reads.
const epollRelayBuffer = 64 << 10

// runEpollRelay serves the event-loop floor relay on listen until the process is killed.
func runEpollRelay(listen, upstream, credential string) error {
	up, err := sockaddr(upstream)
	if err != nil {
		return err
	}
	addr, err := sockaddr(listen)
	if err != nil {
		return err
	}
	errs := make(chan error, runtime.NumCPU())
	for range runtime.NumCPU() {
		l, err := newEpollLoop(addr, up, credential)
		if err != nil {
			return err
		}
		go func() { errs <- l.run() }()
	}
	return <-errs
}

// sockaddr parses an IPv4 host:port.
func sockaddr(hostport string) (*unix.SockaddrInet4, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host).To4()
	n, err := strconv.Atoi(port)
	if ip == nil || err != nil {
		return nil, fmt.Errorf("the event-loop relay takes an IPv4 host:port, not %q", hostport)
	}
	sa := &unix.SockaddrInet4{Port: n}
	copy(sa.Addr[:], ip)
	return sa, nil
}

// epollLoop is one thread's share of the relay: its listener, its epoll set and the pairs
// of its connections, by file descriptor.
type epollLoop struct {
	listener, epoll int
	upstream        *unix.SockaddrInet4
	credential      []byte
	pairs           map[int]*relayPair
	buf             []byte
}

// relayPair is a client connection and its own upstream connection, with what each side has
// not yet taken (written only when a write(2) was short) and the client's unfinished head.
type relayPair struct {
	client, upstream int
	head             []byte
	toUpstream       []byte
	toClient         []byte
}

func newEpollLoop(addr, upstream *unix.SockaddrInet4, credential string) (*epollLoop, error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return nil, err
	}
	if err := unix.Bind(ln, addr); err != nil {
		return nil, err
	}
	if err := unix.Listen(ln, 1024); err != nil {
		return nil, err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &epollLoop{listener: ln, epoll: ep, upstream: upstream, credential: []byte(credential),
		pairs: map[int]*relayPair{}, buf: make([]byte, epollRelayBuffer)}
	return l, l.watch(unix.EPOLL_CTL_ADD, ln, unix.EPOLLIN)
}

func (l *epollLoop) watch(op, fd int, events uint32) error {
	return unix.EpollCtl(l.epoll, op, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)})
}

// run is the loop: wait, then serve every ready socket once.
func (l *epollLoop) run() error {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(l.epoll, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == l.listener {
				l.accept()
				continue
			}
			if p := l.pairs[fd]; p != nil && !l.serve(p, fd, ev.Events) {
				l.close(p)
			}
		}
	}
}

// accept takes every waiting connection and connects each to the upstream (loopback: the
// connect completes at once, so it is made blocking and the socket then non-blocking).
func (l *epollLoop) accept() {
	for {
		c, _, err := unix.Accept4(l.listener, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		u, err := l.dial()
		if err != nil {
			_ = unix.Close(c)
			continue
		}
		p := &relayPair{client: c, upstream: u}
		l.pairs[c], l.pairs[u] = p, p
		if l.watch(unix.EPOLL_CTL_ADD, c, unix.EPOLLIN) != nil || l.watch(unix.EPOLL_CTL_ADD, u, unix.EPOLLIN) != nil {
			l.close(p)
		}
	}
}

func (l *epollLoop) dial() (int, error) {
	u, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(u, l.upstream); err != nil {
		_ = unix.Close(u)
		return -1, err
	}
	_ = unix.SetsockoptInt(u, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return u, unix.SetNonblock(u, true)
}

func (l *epollLoop) close(p *relayPair) {
	delete(l.pairs, p.client)
	delete(l.pairs, p.upstream)
	_ = unix.Close(p.client)
	_ = unix.Close(p.upstream)
}

// serve handles one readiness of fd, one of p's; false ends the pair.
func (l *epollLoop) serve(p *relayPair, fd int, events uint32) bool {
	switch {
	case events&unix.EPOLLOUT != 0 && fd == p.client:
		return l.flush(p.client, &p.toClient, p.upstream)
	case events&unix.EPOLLOUT != 0:
		return l.flush(p.upstream, &p.toUpstream, p.client)
	case fd == p.client:
		return l.fromClient(p)
	}
	return l.fromUpstream(p)
}

// fromClient reads what the client sent and sends on each whole head, the credential line
// before its blank line.
func (l *epollLoop) fromClient(p *relayPair) bool {
	n, err := unix.Read(p.client, l.buf)
	if n <= 0 {
		return errors.Is(err, unix.EAGAIN)
	}
	data := l.buf[:n]
	if len(p.head) > 0 {
		p.head = append(p.head, data...)
		data = p.head
	}
	var out []byte
	for {
		end := bytes.Index(data, []byte("\r\n\r\n"))
		if end < 0 {
			break
		}
		out = append(append(out, data[:end+2]...), l.credential...)
		data = data[end+4:]
	}
	p.head = append(p.head[:0], data...)
	if len(out) == 0 {
		return true
	}
	return l.send(p.upstream, &p.toUpstream, out, p.client)
}

// fromUpstream copies what the upstream answered to the client.
func (l *epollLoop) fromUpstream(p *relayPair) bool {
	n, err := unix.Read(p.upstream, l.buf)
	if n <= 0 {
		return errors.Is(err, unix.EAGAIN)
	}
	return l.send(p.client, &p.toClient, l.buf[:n], p.upstream)
}

// send writes data to fd; what does not fit waits in pending, fd is watched for room and the
// other side, from, is not read meanwhile (its bytes would have nowhere to go).
func (l *epollLoop) send(fd int, pending *[]byte, data []byte, from int) bool {
	n, err := unix.Write(fd, data)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return false
	}
	n = max(n, 0)
	if n == len(data) {
		return true
	}
	*pending = append((*pending)[:0], data[n:]...)
	return l.watch(unix.EPOLL_CTL_MOD, fd, unix.EPOLLIN|unix.EPOLLOUT) == nil && l.watch(unix.EPOLL_CTL_MOD, from, 0) == nil
}

// flush writes what waits for fd; once it is all out, from is read again.
func (l *epollLoop) flush(fd int, pending *[]byte, from int) bool {
	n, err := unix.Write(fd, *pending)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return false
	}
	*pending = (*pending)[max(n, 0):]
	if len(*pending) > 0 {
		return true
	}
	return l.watch(unix.EPOLL_CTL_MOD, fd, unix.EPOLLIN) == nil && l.watch(unix.EPOLL_CTL_MOD, from, unix.EPOLLIN) == nil
}
