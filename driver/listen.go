package driver

import (
	"context"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proxyKeepAlive is the TCP keep-alive of the proxy's client connections: probes after this
// long idle, then every as long, nine unanswered ending the connection (net's defaults for an
// accepted connection, kept).
const proxyKeepAlive = 15 * time.Second

// listenProxy listens on addr for the proxy's clients with TCP keep-alive set on the listening
// socket, whose options Linux copies to every socket it accepts. net.ListenConfig sets them on
// each accepted connection instead: four setsockopt calls per connection, 5% of the driver's
// CPU time when every request comes on a connection of its own (docs/benchmarks.md).
func listenProxy(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setKeepAlive}
	return lc.Listen(context.Background(), "tcp", addr)
}

// setKeepAlive enables TCP keep-alive on c as net does for a connection (SO_KEEPALIVE,
// TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT).
func setKeepAlive(_, _ string, c syscall.RawConn) error {
	secs := int(proxyKeepAlive / time.Second)
	var err error
	ctrl := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, name, value int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		} {
			if err == nil {
				err = unix.SetsockoptInt(int(fd), o.level, o.name, o.value)
			}
		}
	})
	if ctrl != nil {
		return ctrl
	}
	return err
}
