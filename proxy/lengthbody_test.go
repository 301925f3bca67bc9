package proxy

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEndAtLengthKeepsLargeAnswersWhole: a POST whose tool answers, after reading the whole
// body, with 1 MiB reaches the client whole through a ReverseProxy whose Rewrite calls
// endAtLength, even when the client's body is closed as soon as the answer's head is out, as
// net/http's server closes it (chunkWriter.writeHeader). Without endAtLength the Transport's
// read past the Content-Length meets that close, and the answer is cut: the test shows both,
// the ordering forced by a client body that answers such a read only once the head is out.
func TestEndAtLengthKeepsLargeAnswersWhole(t *testing.T) {
	// More than loopback sockets buffer: the answer's copy is under way when the client's
	// body is read to its end (the client reads the answer only then).
	answer := bytes.Repeat([]byte("0123456789abcdef"), (32<<20)/16)
	tool := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
	}))
	defer tool.Close()
	target := mustURL(t, tool.URL)
	for _, withEnd := range []bool{true, false} {
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				if withEnd {
					endAtLength(pr.Out)
				}
			},
			Transport: &http.Transport{},
			ErrorLog:  log.New(io.Discard, "", 0),
		}
		bodyDone := make(chan struct{})
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			headOut := make(chan struct{})
			r.Body = &closedAfterHead{r: r.Body, left: r.ContentLength, headOut: headOut, done: bodyDone}
			rp.ServeHTTP(&headWatch{ResponseWriter: w, out: headOut}, r)
		}))
		res, err := http.Post(front.URL, "application/octet-stream", strings.NewReader(strings.Repeat("u", 64<<10)))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-bodyDone:
		case <-time.After(time.Minute):
			t.Fatal("the Transport never read the client's body to its end")
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		front.Close()
		whole := err == nil && bytes.Equal(got, answer)
		if withEnd && !whole {
			t.Errorf("with endAtLength: %d of %d bytes, %v", len(got), len(answer), err)
		}
		if !withEnd && whole {
			t.Error("without endAtLength the answer came whole: the test no longer forces the close before the Transport's last read")
		}
	}
}

// closedAfterHead is a client's body of left bytes whose reads past them wait until the
// answer's head is out and then fail as net/http's body does once its server closed it; done
// is closed once the left bytes are read.
type closedAfterHead struct {
	r             io.ReadCloser
	left          int64
	headOut, done chan struct{}
}

func (b *closedAfterHead) Read(p []byte) (int, error) {
	if b.left == 0 {
		<-b.headOut
		return 0, http.ErrBodyReadAfterClose
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		close(b.done)
		if err == io.EOF {
			err = nil // as net/http's body (here), the end is found by the next read
		}
	}
	return n, err
}

func (b *closedAfterHead) Close() error { return b.r.Close() }

// headWatch closes out when the answer's head is written.
type headWatch struct {
	http.ResponseWriter
	out  chan struct{}
	done bool
}

func (w *headWatch) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if !w.done {
		w.done = true
		close(w.out)
	}
}
