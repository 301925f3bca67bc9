package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestLargeUploadsWithLargeAnswers: POSTs of 1 MiB, each answered with 1 MiB, over keep-alive
// connections through the reverse proxy, the whole request written at once as wrk writes it:
// every answer arrives whole, on the same connection (the bench's upload rows with 1 MiB
// answers once lost about one answer in 300: the tool connection closed under the copy).
func TestLargeUploadsWithLargeAnswers(t *testing.T) {
	answer := bytes.Repeat([]byte("abcdefghijklmnop"), (1<<20)/16)
	tool := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
	}))
	t.Cleanup(tool.Close)
	env := startProxyDriver(t, nil)
	ns, _, files := basicTool(t, env, tool.URL, "upload-secret")
	host := strings.TrimPrefix(env.proxyURL, "http://")
	body := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	request := append([]byte("POST /namespaces/"+ns+"/connectors/tool/upload HTTP/1.1\r\nHost: "+host+
		"\r\nAuthorization: Bearer "+files["context.token"]+"\r\nContent-Length: "+fmt.Sprint(len(body))+"\r\n\r\n"), body...)

	const clients, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", host)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			for i := range each {
				if _, err := conn.Write(request); err != nil {
					errs <- fmt.Errorf("request %d: write: %v", i, err)
					return
				}
				res, err := http.ReadResponse(br, &http.Request{Method: "POST"})
				if err != nil {
					errs <- fmt.Errorf("request %d: answer: %v", i, err)
					return
				}
				got, err := io.ReadAll(res.Body)
				if err != nil || res.StatusCode != 200 || !bytes.Equal(got, answer) {
					errs <- fmt.Errorf("request %d: %d, %d of %d bytes, %v", i, res.StatusCode, len(got), len(answer), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
