package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"
)

// uploadBody is the body of a request the fast lane takes without reading it whole first: a
// chunked one, one larger than --proxy-fast-lane-max-body-bytes, or one that does not fit in
// the connection's buffer while other connections' bodies hold the lane's share (readLarge).
// A chunked body is decoded (httputil's reader; its trailer section read and dropped, as no
// Trailer was declared: laneRequest) and the tool gets it chunked anew, as through net/http's
// server and ReverseProxy. The direct
// transport reads it from the client connection as it writes it to the tool (streamRequest),
// so a large upload (a push's pack, an artifact, an image layer) and the rest of its
// connection stay in the fast lane; before, such a request went, with every later request of
// its connection, to net/http's server.
//
// Nothing reads it before the fast lane takes the request (arm): a read before that, by an
// authExtractor or a generator evaluated over the body, fails and marks it touched, and the
// request then goes, unread, to net/http's server, where such a module gets the body. Abort
// ends a read blocked on the client, and fails every later one, once the rest of the body is
// of no use (the tool answered before it, or failed); the connection then closes after its
// answer. A client that sends none of its body for --proxy-idle-timeout is let go.
type uploadBody struct {
	c       *laneConn
	headLen int
	// mu is held by a read, so that Abort returns only once no read touches the connection or
	// its buffer; armed is set, under it, when the fast lane takes the request.
	mu      sync.Mutex
	armed   bool
	touched atomic.Bool
	aborted atomic.Bool
	// remaining is what is left of a body of known length, or -1 until a chunked one ended
	// (then 0); chunks decodes a chunked one once armed.
	remaining atomic.Int64
	chunks    io.Reader
	// continues: the client waits for a 100 (Continue) before it sends the body (sendContinue).
	continues bool
}

// errUploadNotTaken is a read of an upload's body before the fast lane took its request.
var errUploadNotTaken = errors.New("the request body is read only once the request is taken")

// errUploadAborted is a read of an upload's body after Abort.
var errUploadAborted = errors.New("the rest of the request body is not read: the request ended before it")

// startUpload gives r, whose head of headLen bytes is at the start of br, its body as an
// upload, still unread.
func (c *laneConn) startUpload(r *http.Request, headLen int) {
	u := &uploadBody{c: c, headLen: headLen, continues: expectsContinue(r)}
	u.remaining.Store(r.ContentLength) // -1 when chunked
	if u.continues {
		r.Header.Del("Expect") // the fast lane answers it (sendContinue), not the tool
	}
	c.setUpload(u)
	c.body = c.body[:0]
	r.Body, r.GetBody = u, nil
}

func (u *uploadBody) Read(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.armed {
		u.touched.Store(true)
		return 0, errUploadNotTaken
	}
	left := u.remaining.Load()
	if left == 0 {
		return 0, io.EOF
	}
	c := u.c
	// Before the check: Abort's deadline comes after. A read of buffered bytes of known length
	// does not block; one of chunks may, for the rest of a chunk's size line or the trailer.
	if c.br.Buffered() == 0 || left < 0 {
		c.setReadDeadline(c.lane.idleTimeout)
	}
	if u.aborted.Load() {
		return 0, errUploadAborted
	}
	if left < 0 {
		return u.readChunks(p)
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.br.Read(p)
	if left = u.remaining.Add(-int64(n)); left > 0 && err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// readChunks reads a chunked body: its end is the last chunk and the trailer section after it.
func (u *uploadBody) readChunks(p []byte) (int, error) {
	n, err := u.chunks.Read(p)
	if err == io.EOF {
		if err = skipTrailer(u.c.br); err == nil {
			u.remaining.Store(0)
			err = io.EOF
		}
	}
	return n, err
}

// maxTrailerBytes bounds the trailer section of a chunked upload, as the fast lane's buffer
// bounds heads.
const maxTrailerBytes = laneBufferSize

var errTrailerTooLarge = errors.New("the chunked body's trailer section is too large")

// skipTrailer reads the trailer section that ends a chunked body, through its empty line (a
// bare LF ends it too, as net/http's server reads trailers with textproto).
func skipTrailer(br *bufio.Reader) error {
	for read := 0; ; {
		line, err := br.ReadSlice('\n')
		if read += len(line); read > maxTrailerBytes || err == bufio.ErrBufferFull {
			return errTrailerTooLarge
		}
		if err != nil {
			return io.ErrUnexpectedEOF
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			return nil
		}
	}
}

// Close leaves the client connection as it is: the fast lane decides what becomes of it.
func (u *uploadBody) Close() error { return nil }

// Abort fails every later read, and ends one blocked on the client; once it returns, no read
// touches the connection.
func (u *uploadBody) Abort() {
	u.aborted.Store(true)
	_ = u.c.conn.SetReadDeadline(aLongTimeAgo)
	u.mu.Lock()
	defer u.mu.Unlock()
}

// arm takes the upload's request off the connection: its head out of br, its body to be read.
func (u *uploadBody) arm() {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, _ = u.c.br.Discard(u.headLen)
	if u.remaining.Load() < 0 {
		u.chunks = httputil.NewChunkedReader(u.c.br) // reads no further than the body's end
	}
	u.armed = true
}

// sendContinue answers the 100-continue expectation of the current request's upload, if it
// has one, once the request is taken: the client then sends its body, which the direct
// transport writes to the tool as it comes. The fast lane answers it itself, as nginx does,
// rather than have the tool's 100 relayed: the tool's answer is read while the body is
// written (streamRequest), so one it gives before the body's end still reaches the client. A
// refused request gets its final answer alone, and its connection closes after it.
func (c *laneConn) sendContinue() bool {
	if u := c.upload; u == nil || !u.continues {
		return true
	}
	_, _ = c.cw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return c.cw.Flush() == nil
}

// complete tells whether the whole body was read.
func (u *uploadBody) complete() bool { return u.remaining.Load() == 0 }

// setUpload makes u the current request's upload (nil: none).
func (c *laneConn) setUpload(u *uploadBody) {
	if c.upload != u {
		c.upload = u
		c.watchedUpload.Store(u)
	}
}

// uploading tells whether the connection's current request is an upload whose body is still
// being read: its client's bytes are the body's, not the watcher's (watch).
func (c *laneConn) uploading() bool {
	u := c.watchedUpload.Load()
	return u != nil && !u.complete() && !u.aborted.Load()
}

// uploadTaken is false when the fast lane must leave the current request to net/http's
// server although it could route it: an upload whose body something read before it was taken
// (touched), or one along a route whose caller's token an authExtractor found (the general
// path refuses a body that holds that token, which an upload's is not read for: checkExtracted).
func (c *laneConn) uploadTaken(rt *route) bool {
	u := c.upload
	return u == nil || !u.touched.Load() && (rt == nil || rt.callerToken == "")
}

// endUpload ends the current request's upload, if any, once its answer is out: an upload not
// read to its end is aborted, and false says the connection cannot go on (the rest of the
// body is still coming).
func (c *laneConn) endUpload() bool {
	u := c.upload
	if u == nil {
		return true
	}
	if !u.complete() {
		u.Abort()
		return false
	}
	u.mu.Lock() // the last read is done with the connection
	defer u.mu.Unlock()
	return true
}

// uploadLinger is how long a connection closed with an upload's body still coming reads and
// drops what the client sends after its answer.
const uploadLinger = 500 * time.Millisecond

// closeUnread closes the client connection, which may still be sending an upload's body: as
// net/http's server does (closeWriteAndWait), its end is closed first and what the client
// still sends is read and dropped for a moment, so that its unread bytes do not turn the close
// into a reset that may cost the client the answer it has not read yet.
func (c *laneConn) closeUnread() {
	if u := c.upload; u != nil && !u.complete() {
		if cw, ok := c.conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.conn.SetReadDeadline(time.Now().Add(uploadLinger))
			_, _ = io.Copy(io.Discard, c.conn)
		}
	}
	_ = c.conn.Close()
}
