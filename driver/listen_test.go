package driver

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProxyListenerKeepAlive: a connection the proxy's listener accepts has TCP keep-alive on
// with net's default timing, though nothing set it on the connection itself (the listener's
// options are inherited), and TCP_NODELAY as net sets it.
func TestProxyListenerKeepAlive(t *testing.T) {
	lis, err := listenProxy("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	secs := int(proxyKeepAlive.Seconds())
	want := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	if err := raw.Control(func(fd uintptr) {
		for _, w := range want {
			got, err := unix.GetsockoptInt(int(fd), w.level, w.opt)
			if err != nil || got != w.value {
				t.Errorf("%s of an accepted connection = %d (%v), want %d", w.name, got, err, w.value)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
}
