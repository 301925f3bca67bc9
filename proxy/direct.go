package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/proxy/awaitread"
)

// directTransport sends GET and HEAD requests without a body, and requests of other methods
// whose body is in memory (the fast lane's small bodies) or read from the client as it is
// sent (the fast lane's uploads: streamRequest), to tools on connections it pools itself
// (HTTP/1.1, over TLS for https tools), one request at a time per connection, writing the
// request and reading the answer on the calling goroutine. http.Transport hands
// every request to two goroutines of its connection (a writer and a reader) and back, through
// channels and selects; for small answers those hand-offs cost more than the proxying itself
// (docs/benchmarks.md). Everything else (streamed request bodies, upgrades) goes through the
// Connector's http.Transport, whose dialer, with the destination policy, and TLS settings this
// one also uses. Written here because no library offers a pooled HTTP/1.1 client without
// those goroutines.
type directTransport struct {
	maxIdlePerHost int
	idleTimeout    time.Duration
	// maxHead bounds an answer's head (its 1xx heads with it), as a client's is bounded.
	maxHead int

	mu      sync.Mutex
	idle    map[directKey][]*directConn
	sweeper *time.Timer
	// http2Only are the https tools that refused HTTP/1.1 in the TLS handshake (ALPN): their
	// requests go through http.Transport and its HTTP/2. Counted, so that takes looks them up
	// only once there is one.
	http2Only      sync.Map // directKey → struct{}
	http2OnlyCount atomic.Int32
}

// directKey is a pool: the Connector transport whose dialer and TLS settings made the
// connections, the tool's host:port, whether they speak TLS (an https tool: a request never
// goes out in clear on a connection made for https), and whose requests they carry.
type directKey struct {
	transport *http.Transport
	addr      string
	tls       bool
	owner     poolOwner
}

// poolOwner keeps one Connector's connections from another's requests, and one namespace's
// callers' from another's. A pooled connection is taken for a GET without a look at its
// socket (live), and a tool that sends more than its answer (a body after a HEAD's head, bytes
// past its Content-Length) in a segment that arrives once the connection is idle would have
// them read as the next request's answer: with pools shared by Connectors (a transport serves
// every Connector of one CA bundle), or by the tenants that share a Connector (kube-public's,
// a project's), another tenant's, and one tenant could shape the bytes (a file served so, an
// upload) that another gets as its answer. Per Connector and caller namespace, what a broken
// tool mixes stays within one tenant's use of one credential.
type poolOwner struct {
	connector types.UID
	caller    string
}

func directKeyOf(tr *http.Transport, u *url.URL, owner poolOwner) directKey {
	return directKey{transport: tr, addr: hostPort(u), tls: u.Scheme == "https", owner: owner}
}

// tool is k without its owner: a tool's ALPN answer holds for every connection to it
// (http2Only).
func (k directKey) tool() directKey {
	k.owner = poolOwner{}
	return k
}

type directConn struct {
	key       directKey
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	// live's peek at the socket, made on its first use (preparePeek).
	raw        syscall.RawConn
	peek       func(fd uintptr) bool
	peekBuf    [1]byte
	peekedIdle bool
	// writer is the write of a request whose body is still coming (streamRequest), until its
	// answer ends (endWrite).
	writer *requestWriter
	// in is br's reader, out bw's writer, and sendRequest bw's Flush, which awaitAnswer has in
	// call.
	in          *awaitread.Reader
	out         *toolWriter
	sendRequest func() error
	// head is between in and br, and bounds what an answer's head may read of the connection:
	// its N is maxHead while readHead reads one, unbounded otherwise. A tool is whoever a
	// Connector's owner points it at, and http.ReadResponse reads a head to its end however
	// long it is (http.Transport bounds it the same way, from under its reader): one tool
	// sending endless header lines, or endless 1xx heads, would grow the node's memory, or hold
	// a goroutine, without end.
	head    io.LimitedReader
	maxHead int64
}

// unbounded is head's N while no answer head is read.
const unbounded = math.MaxInt64

// directMaxIdlePerHost bounds the direct transport's pool, as http.Transport's is set for the
// Connectors' tools.
const directMaxIdlePerHost = 256

func newDirectTransport(maxIdlePerHost int, idleTimeout time.Duration, maxHead int) *directTransport {
	return &directTransport{maxIdlePerHost: maxIdlePerHost, idleTimeout: idleTimeout, maxHead: maxHead, idle: map[directKey][]*directConn{}}
}

// takes reports whether r is one directTransport sends.
func (d *directTransport) takes(tr *http.Transport, r *http.Request) bool {
	return directSends(r) && (r.URL.Scheme == "http" || r.URL.Scheme == "https" && tr.DialTLSContext == nil) &&
		r.Header.Get("Upgrade") == "" && tr.Proxy == nil && tr.DialContext != nil && !d.speaksOnlyHTTP2(tr, r.URL)
}

// directSends tells whether r's method and body are ones directTransport sends: GET, HEAD and
// DELETE without a body (ignorableBody); POST, PUT and PATCH without one, with one of known
// length that can be written again (GetBody), or with an upload (abortableBody: of known
// length or chunked).
func directSends(r *http.Request) bool {
	none := (r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 && len(r.TransferEncoding) == 0
	switch {
	case getOrHead(r.Method) || r.Method == http.MethodDelete:
		return none
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		_, upload := r.Body.(abortableBody)
		return none || upload || r.ContentLength > 0 && r.GetBody != nil && len(r.TransferEncoding) == 0
	}
	return false
}

// abortableBody is a request body read from the client as the tool's connection is written
// (the fast lane's uploadBody): Abort ends a read of it blocked on the client, and fails every
// later one.
type abortableBody interface {
	io.ReadCloser
	Abort()
}

// getOrHead tells whether method is GET or HEAD: the requests without a body, and those sent
// again after a pooled connection failed before an answer (as http.Transport has it; another
// request may have reached the tool before the connection broke, and is sent only on a
// connection that proved open: live).
func getOrHead(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}

// errHTTP1Refused: an https tool refused HTTP/1.1 in the TLS handshake; the request, not yet
// sent, goes through http.Transport instead (see http2Only).
var errHTTP1Refused = errors.New("the tool refuses HTTP/1.1 (ALPN)")

// refusedHTTP1 tells whether a handshake failed on the tool's no_application_protocol alert:
// it speaks none of the protocols offered (HTTP/1.1). crypto/tls wraps a received alert in
// its exported AlertError only for QUIC; over TCP it is a "remote error" of an unexported
// type, known by its text.
func refusedHTTP1(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && op.Err.Error() == "tls: no application protocol"
}

func (d *directTransport) speaksOnlyHTTP2(tr *http.Transport, u *url.URL) bool {
	if d.http2OnlyCount.Load() == 0 || u.Scheme != "https" {
		return false
	}
	_, only := d.http2Only.Load(directKeyOf(tr, u, poolOwner{}))
	return only
}

// RoundTrip sends r on a pooled connection of tr's dialer, or a new one. A pooled connection
// the tool closed while it was idle fails before any answer arrives: a GET or HEAD is then
// sent once more on a new connection, as http.Transport does; another method is sent only on
// a pooled connection that proved open just before (live), and never twice. client, when not
// nil, is where the answer's body will be copied to (see directBody.stream). owner is the
// Connector whose credential r carries and its caller's namespace (poolOwner).
func (d *directTransport) RoundTrip(tr *http.Transport, r *http.Request, owner poolOwner, client io.Writer) (*http.Response, error) {
	key := directKeyOf(tr, r.URL, owner)
	retry := getOrHead(r.Method)
	for {
		pc, reused, err := d.get(r.Context(), key, !retry)
		if errors.Is(err, errHTTP1Refused) {
			if _, known := d.http2Only.LoadOrStore(key.tool(), struct{}{}); !known {
				d.http2OnlyCount.Add(1)
			}
		}
		if err != nil {
			return nil, err
		}
		res, err := pc.roundTrip(d, r, client)
		if err == nil {
			return res, nil
		}
		pc.conn.Close()
		if !retry || !reused || !errors.Is(err, errNothingRead) {
			return nil, err
		}
	}
}

// errNothingRead marks a failure before the first byte of an answer.
var errNothingRead = errors.New("the connection closed before an answer")

// toolFault is what the proxy found wrong with a tool's answer, in its own words (which quote
// nothing the tool sent): UpstreamFailure tells it to the client.
type toolFault struct{ msg string }

func (f *toolFault) Error() string { return f.msg }

// get takes an idle connection of key (idleConn), one that proves open if checked, or dials a
// new one; reused tells which.
func (d *directTransport) get(ctx context.Context, key directKey, checked bool) (pc *directConn, reused bool, err error) {
	if pc := d.openIdleConn(key, checked, time.Now()); pc != nil {
		return pc, true, nil
	}
	conn, err := key.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return newDirectConn(key, conn, d.maxHead), false, nil
}

// newDirectConn is a new connection of key's: its answers read through an awaitread.Reader, so
// that a request is sent from within the read of its answer (awaitAnswer), and their heads
// within maxHead bytes.
func newDirectConn(key directKey, conn net.Conn, maxHead int) *directConn {
	pc := &directConn{key: key, conn: conn, out: &toolWriter{Conn: conn}, in: awaitread.NewReader(conn)}
	pc.head, pc.maxHead = io.LimitedReader{R: pc.in, N: unbounded}, int64(maxHead)
	pc.bw = bufio.NewWriterSize(pc.out, 4<<10)
	pc.br = bufio.NewReaderSize(&pc.head, 4<<10)
	pc.sendRequest = pc.bw.Flush
	return pc
}

// toolWriter is a tool connection under its bufio.Writer, which hands a body larger than its
// buffer (one the fast lane read out whole) to the connection's ReadFrom: net.TCPConn's
// splices or sends a file only from a socket or a file, and for any other reader allocates a
// 32 KiB buffer per call, for every such request; this one copies through a pooled buffer.
// wrote notes that something was sent since the last awaitAnswer: a request that outgrew bw
// went out in part before it, and a tool may answer that part (a 401 after the head) before
// the read that would send the rest begins, where that read would not notice the answer
// (awaitread.Reader).
type toolWriter struct {
	net.Conn
	wrote bool
}

func (w *toolWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.Conn.Write(p)
}

func (w *toolWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	buf := bufferPool.Get().(*[]byte)
	defer bufferPool.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{w.Conn}, r, *buf)
}

// dial connects to the tool with the transport's dialer (the destination policy), and for an
// https tool starts TLS as http.Transport would (its TLS settings, the tool's host as server
// name, its handshake timeout), offering HTTP/1.1 alone: the only protocol spoken here.
func (key directKey) dial(ctx context.Context) (net.Conn, error) {
	conn, err := key.transport.DialContext(ctx, "tcp", key.addr)
	if err != nil || !key.tls {
		return conn, err
	}
	cfg := &tls.Config{}
	if key.transport.TLSClientConfig != nil {
		cfg = key.transport.TLSClientConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(key.addr)
	}
	cfg.NextProtos = []string{"http/1.1"}
	if timeout := key.transport.TLSHandshakeTimeout; timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		if refusedHTTP1(err) {
			return nil, fmt.Errorf("%w: %v", errHTTP1Refused, err)
		}
		return nil, err
	}
	return tc, nil
}

// idleConn takes the most recently used idle connection of key, closing those idle too
// long; nil if there is none.
func (d *directTransport) idleConn(key directKey, now time.Time) *directConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	for conns := d.idle[key]; len(conns) > 0; conns = d.idle[key] {
		pc := conns[len(conns)-1]
		d.idle[key] = conns[:len(conns)-1]
		if now.Sub(pc.idleSince) < d.idleTimeout {
			return pc
		}
		pc.conn.Close()
	}
	delete(d.idle, key)
	return nil
}

// openIdleConn is idleConn, passing over (closing) those that prove closed if checked (live).
func (d *directTransport) openIdleConn(key directKey, checked bool, now time.Time) *directConn {
	for pc := d.idleConn(key, now); pc != nil; pc = d.idleConn(key, now) {
		if !checked || pc.live() {
			return pc
		}
		pc.conn.Close()
	}
	return nil
}

// live tells whether an idle connection is still open: the tool has neither sent anything on
// it (an idle HTTP/1.1 connection carries nothing; a TLS close_notify is something) nor
// closed it. http.Transport learns that from the reader goroutine each of its connections
// has; these have none, so the socket is peeked at without waiting (MSG_PEEK|MSG_DONTWAIT).
// A connection that is no socket (tests' pipes) counts as open.
func (pc *directConn) live() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.peek == nil {
		if socket, ok := pc.preparePeek(); !socket || !ok {
			return !socket
		}
	}
	return pc.raw.Read(pc.peek) == nil && pc.peekedIdle
}

// preparePeek makes live's peek at pc's socket, once per connection: its raw connection, and
// a function that peeks with recvfrom(2) into pc's own byte. unix.Recvfrom would allocate a
// socket address and the byte, and a closure made per call another, for every request with a
// body. socket is false for a connection that is no socket (tests' pipes); ok is false when
// the socket's raw connection is not to be had (it is closed).
func (pc *directConn) preparePeek() (socket, ok bool) {
	conn := pc.conn
	if tc, isTLS := conn.(*tls.Conn); isTLS {
		conn = tc.NetConn()
	}
	sc, isSocket := conn.(syscall.Conn)
	if !isSocket {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true, false
	}
	pc.raw = raw
	pc.peek = func(fd uintptr) bool {
		_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&pc.peekBuf[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		pc.peekedIdle = errno == unix.EAGAIN
		return true
	}
	return true, true
}

// put returns a connection whose last answer was read to its end.
func (d *directTransport) put(pc *directConn) {
	if pc.br.Buffered() > 0 { // the tool sent more than its answer: nothing after it can be trusted
		pc.conn.Close()
		return
	}
	pc.idleSince = time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.idle[pc.key]) >= d.maxIdlePerHost {
		pc.conn.Close()
		return
	}
	d.idle[pc.key] = append(d.idle[pc.key], pc)
	if d.sweeper == nil {
		d.sweeper = time.AfterFunc(d.idleTimeout, d.sweep)
	}
}

// sweep closes the connections idle for idleTimeout, and runs again while any are left.
func (d *directTransport) sweep() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, conns := range d.idle {
		kept := conns[:0]
		for _, pc := range conns {
			if time.Since(pc.idleSince) >= d.idleTimeout {
				pc.conn.Close()
			} else {
				kept = append(kept, pc)
			}
		}
		if len(kept) == 0 {
			delete(d.idle, key)
		} else {
			d.idle[key] = kept
		}
	}
	d.sweeper = nil
	if len(d.idle) > 0 {
		d.sweeper = time.AfterFunc(d.idleTimeout, d.sweep)
	}
}

// aLongTimeAgo is a deadline that has passed: setting it wakes a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes r and reads its answer's head. Until the body is read to its end or
// closed, the request's context ending (the client went away) breaks the connection.
func (pc *directConn) roundTrip(d *directTransport, r *http.Request, client io.Writer) (*http.Response, error) {
	stop := context.AfterFunc(r.Context(), func() { _ = pc.conn.SetDeadline(aLongTimeAgo) })
	var res *http.Response
	var err error
	if body, ok := r.Body.(abortableBody); ok {
		res, err = pc.streamRequest(r, body)
	} else {
		res, err = pc.readAnswer(r)
	}
	if err != nil {
		stop()
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	return pc.withBody(d, res, stop, !res.Close && !r.Close, client), nil
}

// withBody gives res, read on pc, its body: read to its end, the connection goes back to the
// pool if stop, which ends the watch on the round trip, says it was not broken and reusable
// says neither side asked to close it.
func (pc *directConn) withBody(d *directTransport, res *http.Response, stop func() bool, reusable bool, client io.Writer) *http.Response {
	if res.Body == http.NoBody {
		pc.release(d, stop, reusable)
		return res
	}
	body := &directBody{body: res.Body, pc: pc, d: d, stop: stop, reusable: reusable, client: client}
	if len(res.TransferEncoding) == 0 && res.ContentLength >= streamMinBytes {
		body.length = res.ContentLength
	}
	res.Body = body
	return res
}

// readAnswer writes r and reads the head of its answer.
func (pc *directConn) readAnswer(r *http.Request) (*http.Response, error) {
	if err := r.Write(pc.bw); err != nil {
		return nil, fmt.Errorf("%w: %v", errNothingRead, err)
	}
	if err := pc.awaitAnswer(); err != nil {
		return nil, err
	}
	return pc.readHead(r)
}

// awaitAnswer sends the request written into bw and waits for its answer's first byte: sent
// from within the read of the answer, which then waits before it reads (awaitread.Reader), when
// the connection is a plain socket and bw holds the whole request (none of it sent before).
func (pc *directConn) awaitAnswer() error {
	whole := !pc.out.wrote && pc.bw.Buffered() > 0
	if whole && pc.in.Awaits() && pc.br.Buffered() == 0 {
		pc.in.SendThenRead(pc.sendRequest)
	} else if err := pc.bw.Flush(); err != nil {
		return fmt.Errorf("%w: %v", errNothingRead, err)
	}
	_, err := pc.br.Peek(1)
	pc.out.wrote = false // the request is out: what is written next is the next one's
	if err != nil {
		pc.in.DropSend() // not sent if br failed without reading (an error it kept)
		return fmt.Errorf("%w: %v", errNothingRead, err)
	}
	return nil
}

// readHead reads the head of the answer to r, skipping informational (1xx) ones.
func (pc *directConn) readHead(r *http.Request) (*http.Response, error) {
	pc.head.N = pc.maxHead
	defer func() { pc.head.N = unbounded }()
	for {
		res, err := http.ReadResponse(pc.br, r)
		if err != nil && pc.head.N <= 0 { // whatever the parser made of the cut
			return nil, &toolFault{fmt.Sprintf("the tool's answer head is larger than %d bytes (--proxy-max-header-bytes)", pc.maxHead)}
		}
		if err != nil {
			return nil, err
		}
		switch {
		case res.StatusCode == http.StatusSwitchingProtocols:
			return nil, &toolFault{"the tool switched protocols on a request that asked for no upgrade"}
		case res.StatusCode >= 100 && res.StatusCode < 200:
			continue
		}
		return res, nil
	}
}

// release ends a round trip whose answer was read to its end: the connection goes back to
// the pool if the context did not break it meanwhile, neither side asked to close it and the
// whole request went out.
func (pc *directConn) release(d *directTransport, stop func() bool, reusable bool) {
	written := pc.endWrite()
	if stop() && reusable && written {
		d.put(pc)
		return
	}
	pc.conn.Close()
}

// writeWait is how long endWrite waits for a write to end by itself: a tool answers a whole
// request once it has read it, often before the writer has seen its last write return
// (http.Transport waits as long before it pools such a connection).
const writeWait = 50 * time.Millisecond

// requestWriter writes a request whose body the client is still sending (streamRequest).
type requestWriter struct {
	body abortableBody
	// readErr is the body's failure (the client's), err the write's, set before done closes.
	readErr, err error
	done         chan struct{}
}

func (w *requestWriter) Read(p []byte) (int, error) {
	n, err := w.body.Read(p)
	if err != nil && err != io.EOF {
		w.readErr = err
	}
	return n, err
}

func (w *requestWriter) Close() error { return w.body.Close() }

// uploadWriters write the requests streamRequest sends. net/http writes a chunked body a piece
// at a time (its copy's 32 KiB at most), each as a chunk flushed at once: through the
// connection's 4 KiB writer, a chunk's size line and the start of its data fill the buffer and
// go out, the rest of the data goes out on its own and its CRLF with the next size line, three
// writes per piece; through one that holds a whole chunk, one.
var uploadWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10+64) }}

// streamRequest writes r, whose body the client is still sending, on a goroutine of its own
// while it reads the head of the answer on this one: a tool may answer before the body's end
// (a 401, a 413) and stop reading it, and that answer is the client's, as http.Transport,
// which writes and reads on two goroutines of its own, would give it. The write ends with the
// answer (endWrite). A body the client breaks off breaks the tool's connection: the tool does
// not answer a request it did not get whole.
func (pc *directConn) streamRequest(r *http.Request, body abortableBody) (*http.Response, error) {
	w := &requestWriter{body: body, done: make(chan struct{})}
	pc.writer = w
	sent := *r
	sent.Body = w
	go func() {
		defer close(w.done)
		bw := uploadWriters.Get().(*bufio.Writer)
		bw.Reset(pc.out)
		defer func() { bw.Reset(nil); uploadWriters.Put(bw) }()
		if w.err = sent.Write(bw); w.err == nil {
			w.err = bw.Flush()
		}
		if w.readErr != nil {
			_ = pc.conn.SetDeadline(aLongTimeAgo)
		}
	}()
	res, err := pc.readHead(r)
	if err != nil {
		pc.endWrite()
	}
	return res, err
}

// endWrite ends the write of streamRequest, if any: once it is done, waiting for it a moment
// (writeWait); else the tool's connection is closed and the client's body aborted, which end
// it. true when the whole request went out.
func (pc *directConn) endWrite() bool {
	w := pc.writer
	if w == nil {
		return true
	}
	pc.writer = nil
	select {
	case <-w.done:
		return w.err == nil
	default:
	}
	wait := time.NewTimer(writeWait)
	defer wait.Stop()
	select {
	case <-w.done:
		return w.err == nil
	case <-wait.C:
	}
	pc.conn.Close()
	w.body.Abort()
	<-w.done
	return false
}

// streamBodyTo has res's body, when it is a directBody not yet read, streamed to client (nil:
// read as any body) as its first Read is made.
func streamBodyTo(res *http.Response, client io.Writer) {
	if b, ok := res.Body.(*directBody); ok && !b.started {
		b.client = client
	}
}

// streamMinBytes is the smallest body directBody streams to the client: a smaller one goes
// through the client's buffered writer with its head, in one write when they fit.
const streamMinBytes = 64 << 10

// directBody is an answer's body on a directConn: read to its end, it returns the connection
// to the pool; closed before that, it closes the connection (the rest is never read: it may
// be a large download the client gave up on).
type directBody struct {
	body     io.ReadCloser
	pc       *directConn
	d        *directTransport
	stop     func() bool
	reusable bool
	done     bool
	// client and length: a body of known length (at least streamMinBytes) that goes to
	// client as it is (see stream); length is 0 otherwise.
	client  io.Writer
	length  int64
	started bool
}

func (b *directBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if !b.started {
		b.started = true
		if b.client != nil && b.length > 0 {
			return 0, b.stream()
		}
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.done = true
		b.pc.release(b.d, b.stop, b.reusable)
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	b.stop()
	b.pc.conn.Close()
	b.pc.endWrite()
	_ = b.body.Close()
	return nil
}

// stream copies the whole body to the client itself, instead of handing it out through Read,
// and then reports the end of the body: straight from the tool's connection to the client's
// through one pooled buffer (copyThrough), where ReverseProxy's copy would pass each piece
// through the answer's body reader, its own loop and the response writer's buffers. The head
// of the answer is already out (ReverseProxy wrote it before copying); what the head's read
// buffered of the body goes first.
func (b *directBody) stream() error {
	if err := b.pc.streamTo(b.client, b.length); err != nil {
		b.Close()
		return err
	}
	b.done = true
	b.pc.release(b.d, b.stop, b.reusable)
	return io.EOF
}

// streamTo copies the next length bytes the tool sent to client: what the head's read
// buffered first, then the rest from the connection itself.
func (pc *directConn) streamTo(client io.Writer, length int64) error {
	remaining := length
	if k := min(int64(pc.br.Buffered()), remaining); k > 0 {
		head, _ := pc.br.Peek(int(k))
		n, err := client.Write(head)
		_, _ = pc.br.Discard(n)
		remaining -= int64(n)
		if err != nil {
			return err
		}
	}
	n, err := copyThrough(client, io.LimitReader(pc.conn, remaining))
	if err == nil && n < remaining {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// copyThrough copies body, read from a tool's connection, to client through one pooled
// 32 KiB buffer: never client's ReadFrom, which for a plain tool connection and a TCP client
// would end in splice(2), and else in a generic copy that allocates its own buffer. Spliced,
// an answer reaches the client's socket as the tool's own pages, and the client's reads of
// them cost it well over twice the kernel time of bytes the proxy wrote: with wrk reading
// 1 MiB answers, 400–500 µs of wrk's CPU per answer against 165–210, where the proxy's copy
// adds about 100 (docs/benchmarks.md). The client is a Pod on the proxy's node, so its CPU is
// the node's too.
func copyThrough(client io.Writer, body io.Reader) (int64, error) {
	buf := bufferPool.Get().(*[]byte)
	defer bufferPool.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{client}, body, *buf)
}
