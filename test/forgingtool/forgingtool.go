// Package forgingtool is a misbehaving tool for tests: after a HEAD's head it sends, on the
// same connection and once told to (the connection is then idle in the proxy's pool), a whole
// forged answer, which a client that reuses the connection would read as its next answer.
package forgingtool

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// Tool is a forging tool listening on Addr.
type Tool struct {
	Addr string
	// Forge, once closed, lets the tool send the forged answer after the HEAD it answered;
	// Forged is closed once it was sent.
	Forge, Forged chan struct{}
	conns         atomic.Int64
}

// Start starts a Tool on host (a loopback address), stopped when the test ends. It answers a
// GET (or any other request) "real".
func Start(t testing.TB, host string) *Tool {
	t.Helper()
	lis, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	tool := &Tool{Addr: lis.Addr().String(), Forge: make(chan struct{}), Forged: make(chan struct{})}
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			tool.conns.Add(1)
			go tool.serve(conn)
		}
	}()
	return tool
}

// Connections is how many connections the tool accepted.
func (tool *Tool) Connections() int64 { return tool.conns.Load() }

func (tool *Tool) serve(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		if req.Method == http.MethodHead {
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
			<-tool.Forge
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
			close(tool.Forged)
			continue
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
	}
}
