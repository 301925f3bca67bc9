package awaitread

import (
	"bufio"
	"errors"
	"io"
	"net"
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
	r := NewReader(ours)
	if !r.Awaits() {
		t.Fatal("a TCP connection does not await")
	}
	_ = ours.SetReadDeadline(time.Now().Add(time.Minute))
	bw, br := bufio.NewWriter(ours), bufio.NewReader(r)
	for _, line := range []string{"one\n", "two\n", "three\n"} {
		_, _ = bw.WriteString(line)
		r.SendThenRead(bw.Flush)
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
		r := NewReader(ours)
		_ = ours.SetReadDeadline(time.Now().Add(time.Minute))
		peer.Close()
		time.Sleep(20 * time.Millisecond) // the close reaches our socket (and the runtime) first
		r.SendThenRead(func() error { _, err := io.WriteString(ours, "late\n"); return err })
		_, err := r.Read(make([]byte, 16))
		var timeout net.Error
		if err == nil || errors.As(err, &timeout) && timeout.Timeout() {
			t.Fatalf("read after the peer closed: %v, want the connection's end", err)
		}
	})
	t.Run("deadline past", func(t *testing.T) {
		ours, peer := loopbackPair(t)
		r := NewReader(ours)
		_ = ours.SetReadDeadline(aLongTimeAgo)
		r.SendThenRead(func() error { _, err := io.WriteString(ours, "answer\n"); return err })
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
		r := NewReader(ours)
		failed := errors.New("write failed")
		r.SendThenRead(func() error { return failed })
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
	r := NewReader(ours)
	r.Guard(10*time.Millisecond, resume)
	defer r.StopGuard()
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
	r.SendThenRead(func() error { return nil })
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
	r.SendThenRead(func() error { return nil })
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "later\n" {
		t.Fatalf("a read woken with nothing there: %q, %v", buf[:n], err)
	}
}
