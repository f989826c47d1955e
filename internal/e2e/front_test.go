package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/server"
)

// dialRaw opens a TCP connection to the test server.
func dialRaw(t *testing.T, srv *quarrytest.Server) net.Conn {
	t.Helper()
	return dialRawFrom(t, srv, nil)
}

// dialRawFrom is dialRaw from a local address of its own (nil: any).
func dialRawFrom(t *testing.T, srv *quarrytest.Server, from net.Addr) net.Conn {
	t.Helper()
	c, err := (&net.Dialer{LocalAddr: from}).Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reads c until the server closes it and returns what it
// answered, failing the test unless that happens within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration, what string) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	out, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: connection still open after %v (read %q)", what, d, out)
	}
	return string(out)
}

// slowPost sends the headers of a 1 MB Connect call of RegisterNode with
// the given Authorization header, then a byte every interval until the
// connection fails.
func slowPost(c net.Conn, authz string, interval time.Duration) {
	fmt.Fprintf(c, "POST /quarry.v1.NodeService/RegisterNode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: 1000000\r\n%s\r\n", authz)
	go func() {
		for {
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
			time.Sleep(interval)
		}
	}()
}

// TestSlowBodies: a body that trickles in is cut off once it falls behind
// the minimum rate, and a call without valid credentials is answered from
// its headers, before any of its body.
func TestSlowBodies(t *testing.T) {
	srv := quarrytest.StartServer(t, func(c *server.Config) { c.BodyIdle, c.BodyMinRate = 500*time.Millisecond, 1024 })

	for i := range 3 {
		c := dialRaw(t, srv)
		slowPost(c, "Authorization: Bearer "+srv.AdminToken+"\r\n", 100*time.Millisecond)
		out := closedWithin(t, c, 5*time.Second, fmt.Sprintf("authenticated slow body %d", i))
		if !strings.Contains(out, "the request body came too slowly") {
			t.Errorf("authenticated slow body %d: answered %q, want it to say the body came too slowly", i, out)
		}
	}

	c := dialRaw(t, srv)
	start := time.Now()
	slowPost(c, "Authorization: Bearer qk_0123456789ab_"+strings.Repeat("0", 64)+"\r\n", time.Second)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a wrong token with a slow body: %v, want an answer at once", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "unknown or wrong token") || time.Since(start) > 2*time.Second {
		t.Errorf("a wrong token with a slow body: HTTP %d %s after %v; want 401 unauthenticated at once", resp.StatusCode, body, time.Since(start))
	}
}

// TestConnectionsPerClient: past the cap, a client's new connections are
// closed at once; closing one makes room again.
func TestConnectionsPerClient(t *testing.T) {
	srv := quarrytest.StartServer(t, func(c *server.Config) { c.MaxConnsPerClient = 4 })
	// A client address of its own: the test's other connections (the
	// readiness check's kept-alive one) are 127.0.0.1's.
	client := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	var open []net.Conn
	for range 4 {
		c := dialRawFrom(t, srv, client)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v", len(open)+1, err)
		}
		open = append(open, c)
	}
	extra := dialRawFrom(t, srv, client)
	fmt.Fprintf(extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if out := closedWithin(t, extra, 3*time.Second, "a fifth connection"); out != "" {
		t.Errorf("a fifth connection was answered: %q", out)
	}
	// Once one of its connections is closed, the client may open another.
	open[0].Close()
	quarrytest.Eventually(t, 5*time.Second, func() error {
		c := dialRawFrom(t, srv, client)
		defer c.Close()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return fmt.Errorf("after closing a connection: %v", err)
		}
		resp.Body.Close()
		return nil
	})
}

// gzipBomb is a gzipped Connect request body of n zero bytes.
func gzipBomb(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range n >> 20 {
		w.Write(zeros)
	}
	w.Close()
	return b.Bytes()
}

// TestGzipBomb: a compressed request is not inflated for a caller without
// valid credentials, and for one with them inflating stops at the limit.
func TestGzipBomb(t *testing.T) {
	srv := quarrytest.StartServer(t)
	bomb := gzipBomb(t, 256<<20)
	post := func(token string) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL+"/quarry.v1.NodeService/RegisterNode", bytes.NewReader(bomb))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := post(""); code != http.StatusUnauthorized || !strings.Contains(body, "needs a token") {
		t.Errorf("a gzip bomb without a token: HTTP %d %s, want 401 needs a token", code, body)
	}
	code, body := post(srv.AdminToken)
	if code != http.StatusTooManyRequests && code != http.StatusBadRequest || strings.Contains(body, "268435456") {
		t.Errorf("a gzip bomb with a token: HTTP %d %s, want it refused without inflating it all (no size named)", code, body)
	}
	// A compressed request of the right size still works.
	var small bytes.Buffer
	w := gzip.NewWriter(&small)
	w.Write([]byte(`{"name":"g1","managementAddress":"10.9.0.1"}`))
	w.Close()
	bomb = small.Bytes()
	if code, body := post(srv.AdminToken); code != http.StatusOK {
		t.Errorf("a small gzipped request: HTTP %d %s", code, body)
	}
}
