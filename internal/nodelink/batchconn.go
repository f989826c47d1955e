package nodelink

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// batchSize bounds what a batchConn gathers before it writes.
const batchSize = 256 << 10

// dialBatchedTLS dials addr and opens TLS on it with cfg, for an upload's
// connection: crypto/tls writes each record of up to 16 KiB with its own
// system call, which costs a 2 GiB upload more than 100,000 of them; the
// connection it returns writes what one Write encrypts in system calls of
// up to batchSize bytes instead. HTTP/1.1 only: net/http speaks HTTP/2 on
// a *tls.Conn only.
func dialBatchedTLS(ctx context.Context, d *net.Dialer, network, addr string, cfg *tls.Config, handshakeTimeout time.Duration) (net.Conn, error) {
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return batchedTLSClient(ctx, raw, cfg, handshakeTimeout)
}

// batchedTLSClient opens TLS on raw, as dialBatchedTLS does.
func batchedTLSClient(ctx context.Context, raw net.Conn, cfg *tls.Config, handshakeTimeout time.Duration) (net.Conn, error) {
	bc := &batchConn{Conn: raw}
	tc := tls.Client(bc, cfg.Clone())
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return &batchedTLS{Conn: tc, raw: bc}, nil
}

// batchedTLS is a TLS connection whose Writes reach the network in few
// system calls.
type batchedTLS struct {
	*tls.Conn
	raw *batchConn
}

func (c *batchedTLS) Write(p []byte) (int, error) {
	c.raw.setBatch(true)
	n, err := c.Conn.Write(p)
	if ferr := c.raw.setBatch(false); err == nil {
		err = ferr
	}
	return n, err
}

// batchConn is the network connection under a batchedTLS: while a Write
// of it is in progress, the records crypto/tls writes are gathered into
// writes of up to batchSize bytes; otherwise they go through as they come
// (the handshake, alerts, replies to the peer's key updates).
type batchConn struct {
	net.Conn
	mu    sync.Mutex
	batch bool
	buf   []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batch {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > batchSize {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= batchSize {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, batchSize)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// setBatch starts or ends a batch; ending it writes what was gathered.
func (c *batchConn) setBatch(on bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batch = on
	if on {
		return nil
	}
	return c.flush()
}

// flush writes what was gathered. Called with mu held.
func (c *batchConn) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}
