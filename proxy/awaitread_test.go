package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// loopbackPair is a TCP connection on loopback: ours and the peer's end.
func loopbackPair(t *testing.T) (ours, peer net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := lis.Accept()
		accepted <- c
	}()
	ours, err = net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer = <-accepted
	if peer == nil {
		t.Fatal("nothing accepted")
	}
	t.Cleanup(func() { ours.Close(); peer.Close() })
	return ours, peer
}

// echoLines answers every line the peer end reads with the line upper-cased, until it fails.
func echoLines(peer net.Conn) {
	br := bufio.NewReader(peer)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(peer, strings.ToUpper(line)); err != nil {
			return
		}
	}
}

// TestAwaitingReaderSendsFromWithinTheRead: over a real socket, each request written into a
// buffered writer and left to the next read is sent by that read, which returns its answer,
// round after round on one connection; reads not armed read as the connection does.
func TestAwaitingReaderSendsFromWithinTheRead(t *testing.T) {
	ours, peer := loopbackPair(t)
	go echoLines(peer)
	r := newAwaitingReader(ours, nil)
	if !r.awaits() {
		t.Fatal("a TCP connection does not await")
	}
	_ = ours.SetReadDeadline(time.Now().Add(time.Minute))
	bw, br := bufio.NewWriter(ours), bufio.NewReader(r)
	for _, line := range []string{"one\n", "two\n", "three\n"} {
		_, _ = bw.WriteString(line)
		r.sendThenRead(bw.Flush)
		got, err := br.ReadString('\n')
		if err != nil || got != strings.ToUpper(line) {
			t.Fatalf("answer to %q: %q, %v", line, got, err)
		}
		if r.send != nil || bw.Buffered() != 0 {
			t.Fatalf("after %q: the send is still pending", line)
		}
	}
	if _, err := io.WriteString(ours, "plain\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := br.ReadString('\n'); err != nil || got != "PLAIN\n" {
		t.Fatalf("a read not armed: %q, %v", got, err)
	}
}

// TestAwaitingReaderEnds: a peer that closed the connection before the send (its readiness
// already seen) ends the read, which does not wait for more; a read deadline already past
// still sends (the answer is not lost) and fails as a timeout; a send that fails is the
// read's error.
func TestAwaitingReaderEnds(t *testing.T) {
	t.Run("closed by the peer", func(t *testing.T) {
		ours, peer := loopbackPair(t)
		r := newAwaitingReader(ours, nil)
		_ = ours.SetReadDeadline(time.Now().Add(time.Minute))
		peer.Close()
		time.Sleep(20 * time.Millisecond) // the close reaches our socket (and the runtime) first
		r.sendThenRead(func() error { _, err := io.WriteString(ours, "late\n"); return err })
		_, err := r.Read(make([]byte, 16))
		var timeout net.Error
		if err == nil || errors.As(err, &timeout) && timeout.Timeout() {
			t.Fatalf("read after the peer closed: %v, want the connection's end", err)
		}
	})
	t.Run("deadline past", func(t *testing.T) {
		ours, peer := loopbackPair(t)
		r := newAwaitingReader(ours, nil)
		_ = ours.SetReadDeadline(aLongTimeAgo)
		r.sendThenRead(func() error { _, err := io.WriteString(ours, "answer\n"); return err })
		if _, err := r.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past its deadline: %v, want a timeout", err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(time.Minute))
		if got, err := bufio.NewReader(peer).ReadString('\n'); got != "answer\n" {
			t.Fatalf("the peer got %q, %v: the send was lost", got, err)
		}
	})
	t.Run("send fails", func(t *testing.T) {
		ours, _ := loopbackPair(t)
		r := newAwaitingReader(ours, nil)
		failed := errors.New("write failed")
		r.sendThenRead(func() error { return failed })
		if _, err := r.Read(make([]byte, 16)); !errors.Is(err, failed) {
			t.Fatalf("read: %v, want the send's error", err)
		}
	})
}

// TestWakeGuardReadsPipelinedBytes: bytes the peer sent before the send, after the runtime saw
// them come (what a client that pipelines sends), are read once the guard wakes the wait, under
// the deadline it set again; without them, a woken wait goes on waiting as net's read does
// and reads what comes later.
func TestWakeGuardReadsPipelinedBytes(t *testing.T) {
	ours, peer := loopbackPair(t)
	resumed := 0
	resume := func() error {
		resumed++
		return ours.SetReadDeadline(time.Now().Add(time.Minute))
	}
	r := newAwaitingReader(ours, newWakeGuard(ours, 10*time.Millisecond, resume))
	defer r.guard.stop()
	_ = ours.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 64)
	if _, err := io.WriteString(peer, "first\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "first\n" {
		t.Fatalf("first read: %q, %v", buf[:n], err)
	}
	if _, err := io.WriteString(peer, "pipelined\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // seen by the runtime before the read begins
	r.sendThenRead(func() error { return nil })
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "pipelined\n" {
		t.Fatalf("pipelined read: %q, %v", buf[:n], err)
	}
	if resumed == 0 {
		t.Error("the guard did not wake the wait for bytes sent before it")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = io.WriteString(peer, "later\n")
	}()
	r.sendThenRead(func() error { return nil })
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "later\n" {
		t.Fatalf("a read woken with nothing there: %q, %v", buf[:n], err)
	}
}

// TestAwaitAnswerToARequestSentInPart: a request that outgrew the tool connection's buffer went
// out in part before awaitAnswer, and a tool that answers its head at once (a 401) has that
// answer there before the read begins: awaitAnswer reads it rather than wait for more (the
// tool keeps the connection open, reading the rest). A request bw holds whole is sent from
// within the read, and its answer read.
func TestAwaitAnswerToARequestSentInPart(t *testing.T) {
	for name, size := range map[string]int{"outgrew the buffer": 32 << 10, "whole in the buffer": 100} {
		t.Run(name, func(t *testing.T) {
			ours, tool := loopbackPair(t)
			go func() {
				br := bufio.NewReader(tool)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(tool, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
				_, _ = io.Copy(io.Discard, br)
			}()
			pc := newDirectConn(directKey{}, ours)
			_, _ = fmt.Fprintf(pc.bw, "POST /x HTTP/1.1\r\nHost: tool\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("b", size))
			time.Sleep(20 * time.Millisecond) // an answer to what went out comes, and is seen, first
			_ = ours.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := pc.awaitAnswer(); err != nil {
				t.Fatalf("awaitAnswer: %v", err)
			}
			res, err := pc.readHead(&http.Request{Method: http.MethodPost})
			if err != nil || res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("answer: %v, %v", res, err)
			}
		})
	}
}
