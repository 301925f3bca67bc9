package driver

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// limitConnections caps the connections open at once on lis. Over the cap a client gets an
// immediate 503 and a closed connection. Written here because netutil.LimitListener blocks in
// Accept instead: excess clients would wait unanswered in the kernel's backlog, and the
// server's timeouts would not apply to them.
func limitConnections(lis net.Listener, max int) net.Listener {
	return &limitedListener{Listener: lis, max: int64(max)}
}

type limitedListener struct {
	net.Listener
	max  int64
	open atomic.Int64
}

const overLimit = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 53\r\n\r\nconnectors proxy: too many connections; retry later\r\n"

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &countedConn{Conn: c, open: &l.open}, nil
		}
		l.open.Add(-1)
		go refuseConn(c)
	}
}

// refuseConn answers 503 without reading the request, and closes.
func refuseConn(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte(overLimit))
	_ = c.Close()
}

// countedConn gives its place back when closed (also after a CONNECT hijacked it).
type countedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite closes the connection's sending side when it has one (TCP): a server closes it
// first when its client may still be sending a body it did not read, so that the close that
// follows is no reset that costs the client the answer (net/http's server and the fast lane
// look for this method on the connection).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn is the socket's, for the fast lane's reads that wait before they read
// (proxy/awaitread's Reader), which a wrapped connection would otherwise go without.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
