package nodelink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the network.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestBatchedTLS: request bodies sent over a batched TLS connection
// arrive whole, in far fewer network writes than TLS records (16 KiB
// each), and the connection serves the next request too (handshake and
// keep-alive go through as they come).
func TestBatchedTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	defer srv.Close()
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = "example.com" // the test certificate's; the node link's configurations name the node

	var writes, dials atomic.Int64
	tr := &http.Transport{DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		raw, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return batchedTLSClient(ctx, countingConn{Conn: raw, writes: &writes}, cfg, 5*time.Second)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	for i, size := range []int{4<<20 + 1, 10, 0} {
		body := bytes.Repeat([]byte{byte(i + 1)}, size)
		before := writes.Load()
		resp, err := hc.Post(srv.URL, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %x", size, sha256.Sum256(body)); resp.StatusCode != http.StatusOK || string(got) != want {
			t.Fatalf("request %d: %s %q; want %q", i, resp.Status, got, want)
		}
		// 4 MiB are 257 records; net/http writes the body 32 KiB at a
		// time here, two records per write, each write one batch.
		if n := writes.Load() - before; size > 1<<20 && n > int64(size)/(32<<10)+8 {
			t.Errorf("request %d: %d bytes took %d network writes", i, size, n)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for 3 requests; want 1", n)
	}
}
