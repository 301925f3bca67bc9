// Package awaitread reads a TCP connection after sending from within the read, so that the
// read waits for the peer's answer instead of first finding nothing (see Reader).
package awaitread

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reader reads a TCP connection as net's Read does, except after SendThenRead: its next read
// then sends what a writer holds from within the read, and waits for the socket to become
// readable before it reads. Between a request sent to a tool and its answer, and between
// an answer sent to a client and the client's next request, nothing can have come yet: net's
// Read reads at once, finds nothing (EAGAIN), parks, and reads again when woken. Those are two
// of the six read(2)s per request of the proxy's two connections, and 2–4 µs of CPU per 1 KiB
// request (docs/benchmarks.md, twenty-second session).
//
// The send is made inside the read because a read through net (internal/poll's RawRead, under
// syscall.RawConn) begins by forgetting the readiness the runtime was told of before: an answer
// that came between a send made before the read and the read's start would be forgotten, and
// the wait would last until the peer sent more. Sent from within, whatever the peer sends in
// return is noticed. What the peer sent before the send cannot be noticed that way: a tool
// sends nothing unasked (and a tool connection closed meanwhile is reset by the send, which is
// noticed), but a client may pipeline its next request before it has this answer; the client's
// side has a guard for that (Guard).
//
// Why by hand: net has no read that waits before it reads; syscall.RawConn is its hook for one.
type Reader struct {
	conn net.Conn
	// raw is the socket's; nil for a connection that is no plain socket (TLS, tests' pipes),
	// which reads and sends as it always does.
	raw syscall.RawConn
	// send, set by SendThenRead, sends what its writer holds; the next read calls it once.
	send func() error
	// guard, when not nil, wakes a wait that may be for bytes that came before it began.
	guard *wakeGuard
	// The read in progress (readSocket's arguments and results), and readSocket made once:
	// a closure made per read would be allocated per request.
	p    []byte
	n    int
	err  error
	read func(fd uintptr) bool
}

// NewReader reads conn.
func NewReader(conn net.Conn) *Reader {
	r := &Reader{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	r.read = r.readSocket
	return r
}

// Awaits tells whether SendThenRead may be used: the connection is a plain socket.
func (r *Reader) Awaits() bool { return r.raw != nil }

// SendThenRead has the next read send what send sends before it waits; only when Awaits.
// send must hold the whole message: had a part of it gone out before, the peer could have
// answered that part (a tool's 401 after the head) before the read began, unnoticed.
func (r *Reader) SendThenRead(send func() error) { r.send = send }

// SendNow sends what SendThenRead left to the next read, if anything: the next read will not
// wait for it (its bytes are there already) or there will be none.
func (r *Reader) SendNow() error {
	send := r.send
	if send == nil {
		return nil
	}
	r.send = nil
	return send()
}

// DropSend forgets what SendThenRead left unsent: its read never came.
func (r *Reader) DropSend() { r.send = nil }

// Guard has the reader's waits woken after wait, for bytes the peer may have sent before the
// wait began (a client's pipelined request, whose arrival the wait does not notice); resume
// then sets again the read deadline the wake replaced, or fails when the connection is to end.
// Only when Awaits.
func (r *Reader) Guard(wait time.Duration, resume func() error) {
	g := &wakeGuard{conn: r.conn, wait: wait, resume: resume}
	g.timer = time.AfterFunc(time.Duration(1<<63-1), g.wake)
	g.timer.Stop()
	r.guard = g
}

// StopGuard stops the guard's timer for good (the connection is done), if there is a guard.
func (r *Reader) StopGuard() {
	if r.guard != nil {
		r.guard.timer.Stop()
	}
}

// Read reads as the connection's Read does, or, after SendThenRead, sends and then waits
// before it reads (Reader).
func (r *Reader) Read(p []byte) (int, error) {
	if r.send == nil {
		return r.conn.Read(p)
	}
	if r.guard != nil {
		r.guard.arm()
	}
	r.p, r.n, r.err = p, 0, nil
	err := r.raw.Read(r.read)
	n, readErr := r.n, r.err
	r.p, r.err = nil, nil
	woke := r.guard != nil && r.guard.disarm()  // before anything returns: no wake after the wait
	if sendErr := r.SendNow(); sendErr != nil { // the read ended before its start: a deadline passed
		return 0, sendErr
	}
	if woke {
		// Woken by the guard, not by the socket (or both): read as net does, under the
		// deadline the guard's wake replaced.
		if err := r.guard.resume(); err != nil {
			return 0, err
		}
		if n > 0 || readErr != nil {
			return n, readErr
		}
		return r.conn.Read(p)
	}
	if err != nil {
		return 0, err
	}
	return n, readErr
}

// readSocket is the raw read's function: the first call sends and waits (false), later ones
// read what woke the wait; a read that finds nothing waits again.
func (r *Reader) readSocket(fd uintptr) bool {
	if r.send != nil {
		if err := r.SendNow(); err != nil {
			r.err = err
			return true
		}
		return false
	}
	for {
		n, err := unix.Read(int(fd), r.p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			r.err = &net.OpError{Op: "read", Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: os.NewSyscallError("read", err)}
		case n == 0:
			r.err = io.EOF
		default:
			r.n = n
		}
		return true
	}
}

// wakeGuard wakes a Reader's wait that has lasted wait, by a read deadline in the past, so
// that the reader reads once as net does: a client that pipelined its next request before it
// had the answer just sent may have sent it before the wait began, where the wait does not
// notice it (Reader). Such a request is then served after at most wait; every other wait is
// woken by the socket first, and the guard costs a timer's reset and stop.
type wakeGuard struct {
	conn  net.Conn
	wait  time.Duration
	timer *time.Timer
	// resume sets the read deadline the wake replaced, or fails when the connection is to end
	// (the lane closing).
	resume func() error
	// mu orders a wake against the wait's end: waiting is true from arm to disarm, and woke
	// says a wake set its deadline during it.
	mu            sync.Mutex
	waiting, woke bool
}

func (g *wakeGuard) arm() {
	g.mu.Lock()
	g.waiting = true
	g.mu.Unlock()
	g.timer.Reset(g.wait)
}

// disarm ends the wait and tells whether the guard woke it (its deadline is then to be
// resumed). A wake that fires after it finds no wait, or the next one, which it then wakes
// early: one read more, nothing lost.
func (g *wakeGuard) disarm() (woke bool) {
	g.timer.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting, woke, g.woke = false, g.woke, false
	return woke
}

func (g *wakeGuard) wake() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting {
		g.woke = true
		_ = g.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// aLongTimeAgo is a deadline in the past: setting it wakes a wait at once.
var aLongTimeAgo = time.Unix(1, 0)
