package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// uploadConn is a fast-lane connection over a pipe whose client end has sent head and the
// first part of body, and the upload of a request with the whole body's length.
func uploadConn(t *testing.T, head, body string, sent int) (*laneConn, *uploadBody, net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	go func() { _, _ = io.WriteString(client, head+body[:sent]) }()
	c := &laneConn{lane: &FastLane{idleTimeout: time.Minute}, conn: server}
	c.br = bufio.NewReaderSize(c, laneBufferSize)
	if _, err := c.br.Peek(len(head)); err != nil {
		t.Fatal(err)
	}
	r := &http.Request{Method: http.MethodPost, ContentLength: int64(len(body))}
	c.startUpload(r, len(head))
	if r.Body != c.upload || r.GetBody != nil {
		t.Fatal("the request's body is not the upload, or can be had again")
	}
	return c, c.upload, client
}

// An upload is not read before the fast lane takes its request: such a read fails, marks it,
// and leaves the request whole in the connection's buffer for net/http's server.
func TestUploadReadOnlyOnceTaken(t *testing.T) {
	head := "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 9000\r\n\r\n"
	body := strings.Repeat("u", 9000)
	c, u, _ := uploadConn(t, head, body, 100)
	if n, err := u.Read(make([]byte, 10)); n != 0 || !errors.Is(err, errUploadNotTaken) {
		t.Fatalf("a read before the request is taken: %d bytes, %v", n, err)
	}
	if !u.touched.Load() || c.uploadTaken(nil) {
		t.Error("the early read is not marked, or the fast lane would still take the request")
	}
	if got, _ := c.br.Peek(c.br.Buffered()); !strings.HasPrefix(string(got), head) {
		t.Errorf("the buffer no longer starts with the head: %q", got)
	}
}

// Taken, an upload's body is read from the buffer and then the connection, exactly its length.
func TestUploadReadsItsLength(t *testing.T) {
	head := "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 9000\r\n\r\n"
	body := strings.Repeat("0123456789", 900)
	c, u, client := uploadConn(t, head, body, 1000)
	if !c.uploadTaken(&route{}) || c.uploadTaken(&route{callerToken: "found"}) {
		t.Error("an untouched upload is not taken, or one whose caller's token an extractor found is")
	}
	u.arm()
	go func() { _, _ = io.WriteString(client, body[1000:]+"GET /next HTTP/1.1\r\n") }()
	got, err := io.ReadAll(u)
	if err != nil || string(got) != body || !u.complete() {
		t.Fatalf("read %d bytes (%v), complete %v; want the %d sent", len(got), err, u.complete(), len(body))
	}
	if next, err := c.br.Peek(len("GET /next")); err != nil || string(next) != "GET /next" {
		t.Errorf("after the body: %q %v, want the next request", next, err)
	}
	if !c.endUpload() {
		t.Error("a whole upload ends its connection")
	}
}

// Abort ends a read blocked on a client that stopped sending, and fails every later one; a
// client that leaves mid-body fails the read.
func TestUploadAbortAndClientLeaving(t *testing.T) {
	head := "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 9000\r\n\r\n"
	body := strings.Repeat("a", 9000)
	c, u, _ := uploadConn(t, head, body, 0)
	u.arm()
	failed := make(chan error, 1)
	go func() {
		_, err := u.Read(make([]byte, 100))
		failed <- err
	}()
	time.Sleep(20 * time.Millisecond) // the read waits on the client
	u.Abort()
	select {
	case err := <-failed:
		if err == nil {
			t.Error("the blocked read succeeded")
		}
	case <-time.After(time.Minute):
		t.Fatal("Abort did not end the blocked read")
	}
	if _, err := u.Read(make([]byte, 100)); !errors.Is(err, errUploadAborted) {
		t.Errorf("a read after Abort: %v", err)
	}
	if c.endUpload() || c.uploading() {
		t.Error("an aborted upload lets its connection go on, or counts as still read")
	}

	_, u, client := uploadConn(t, head, body, 500)
	u.arm()
	go func() { time.Sleep(20 * time.Millisecond); client.Close() }()
	if got, err := io.ReadAll(u); err != io.ErrUnexpectedEOF || len(got) != 500 {
		t.Errorf("a client that left after 500 bytes: %d bytes, %v; want 500 and an unexpected EOF", len(got), err)
	}
}

// A chunked upload is decoded to its last chunk and its trailer section, no further; a
// trailer section over maxTrailerBytes fails it.
func TestUploadReadsChunks(t *testing.T) {
	head := "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name, trailer string
		whole         bool
	}{
		{"no trailer", "\r\n", true},
		{"a trailer", "X-Sum: 1\r\nX-Other: 2\r\n\r\n", true},
		{"a trailer ended by a bare LF", "X-Sum: 1\n\n", true},
		{"a trailer too large", "X-Big: " + strings.Repeat("b", 300) + "\r\n" + strings.Repeat("X-Many: 1\r\n", 400) + "\r\n", false},
	} {
		body := "5\r\nhello\r\n1f40\r\n" + strings.Repeat("c", 8000) + "\r\n0\r\n" + tc.trailer + "GET /next HTTP/1.1\r\n"
		c, u, _ := uploadConn(t, head, body, len(body))
		u.remaining.Store(-1) // uploadConn's request has a length; this one is chunked
		u.arm()
		got, err := io.ReadAll(u)
		if !tc.whole {
			if err == nil || u.complete() {
				t.Errorf("%s: read to an end (%v)", tc.name, err)
			}
			continue
		}
		if err != nil || string(got) != "hello"+strings.Repeat("c", 8000) || !u.complete() {
			t.Errorf("%s: %d bytes, %v, complete %v", tc.name, len(got), err, u.complete())
		}
		if next, err := c.br.Peek(len("GET /next")); err != nil || string(next) != "GET /next" {
			t.Errorf("%s: after the body %q %v, want the next request", tc.name, next, err)
		}
	}
}

// Only one Expect: 100-continue on a request with a body is an upload that waits for the fast
// lane's 100; any other expectation goes to net/http's server (which answers it 417).
func TestExpectsContinue(t *testing.T) {
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n", true},
		{"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", false},
		{"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", false},
		{"POST /x HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\n", false},
		{"GET /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", false},
	} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.head)))
		if err != nil {
			t.Fatal(err)
		}
		if got := expectsContinue(r); got != tc.want {
			t.Errorf("%q: expectsContinue %v, want %v", tc.head, got, tc.want)
		}
		if got := laneRequest(r); got != tc.want {
			t.Errorf("%q: laneRequest %v, want %v", tc.head, got, tc.want)
		}
	}
}
