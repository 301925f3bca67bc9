package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/kube-connectors/connectors-csi/proxy/awaitread"
	"github.com/kube-connectors/connectors-csi/test/bench/benchenv"
)

// The floor row: a hand-written Go relay that checks nothing, in a process of its own (this
// program started again with -relay), so that the table shows beside nginx where a Go proxy's
// cost per request bottoms out on this machine: one goroutine per client connection, one
// upstream connection of its own, head lines copied with the credential header added, the
// answer's head and Content-Length body copied back. Its reads are the proxy's
// (proxy/awaitread: each request sent from within the read of its answer, each answer from
// within the read of the next request, neither read finding nothing first), since the
// twenty-second session. It is a yardstick, not a proxy: no validation, no chunked answers, no
// pipelining, nothing a client could rely on.

var (
	relayListen   = flag.String("relay", "", "internal: serve as the floor relay on this address (the bench starts it)")
	relayUpstream = flag.String("relay-upstream", "", "internal: the floor relay's upstream host:port")
	relayLoops    = flag.Bool("relay-event-loop", false, "internal: serve as the event-loop floor relay (epollrelay.go)")
)

type relayServer struct {
	addr string
	cmd  *exec.Cmd
}

// floors are the two floor relays: a goroutine per connection (Go's net) and event loops.
type floors struct{ goroutines, eventLoop *relayServer }

// target is r's row, named name, client the Go generator's.
func (r *relayServer) target(name string, client *http.Client) target {
	return target{name: name, goClient: client, goURL: func(s string) string { return "http://" + r.addr + "/" + s },
		wrk:      func(s string) *request { return &request{connect: "http://" + r.addr, path: "/" + s} },
		baseline: "nginx (header-injecting reverse proxy)", pids: r.pids}
}

func (r *relayServer) pids() []int { return []int{r.cmd.Process.Pid} }

func (r *relayServer) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// startRelay starts the floor relay in front of up (the event-loop one when eventLoop) and
// waits until it accepts connections.
func startRelay(up *benchenv.Upstream, eventLoop bool) (*relayServer, error) {
	addr, err := benchenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0], "-relay", addr, "-relay-upstream", strings.TrimPrefix(up.URL, "http://"), "-relay-event-loop="+strconv.FormatBool(eventLoop))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relayServer{addr: addr, cmd: cmd}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return r, nil
		}
	}
	r.stop()
	return nil, fmt.Errorf("the floor relay did not listen on %s", addr)
}

// runRelay serves the floor relay until the process is killed.
func runRelay(listen, upstream string) error {
	credential := "Authorization: " + benchenv.BasicCredential() + "\r\n\r\n"
	if *relayLoops {
		return runEpollRelay(listen, upstream, credential)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relay(c, upstream, credential)
	}
}

// relay carries one client connection's requests over an upstream connection of its own.
func relay(c net.Conn, upstream, credential string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	cin, uin := awaitread.NewReader(c), awaitread.NewReader(u)
	cr, cw := bufio.NewReaderSize(cin, 8<<10), bufio.NewWriterSize(c, 8<<10)
	ur, uw := bufio.NewReaderSize(uin, 8<<10), bufio.NewWriterSize(u, 8<<10)
	for copyHead(cr, uw, credential) == nil {
		uin.SendThenRead(uw.Flush) // the head, whole in uw
		n, err := copyAnswerHead(ur, cw)
		if err != nil {
			return
		}
		if _, err := io.CopyN(cw, ur, n); err != nil {
			return
		}
		if cw.Buffered() == 0 { // nothing left to send from within the next read
			continue
		}
		cin.SendThenRead(cw.Flush)
	}
}

// copyHead copies a request head's lines, the credential header in place of the empty line.
func copyHead(r *bufio.Reader, w *bufio.Writer, credential string) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			_, err := w.WriteString(credential)
			return err
		}
		_, _ = w.Write(line)
	}
}

// copyAnswerHead copies an answer's head and returns its Content-Length.
func copyAnswerHead(r *bufio.Reader, w *bufio.Writer) (int64, error) {
	n := int64(-1)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		_, _ = w.Write(line)
		if len(line) <= 2 {
			if n < 0 {
				return 0, errors.New("the floor relay copies only answers with a Content-Length")
			}
			return n, nil
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Content-Length")) {
			if n, err = strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64); err != nil {
				return 0, err
			}
		}
	}
}
