package agent

import (
	"bufio"
	"errors"
	"net"
	"sync"
)

// tlsOnly returns ln whose connections end, unanswered, at their first
// byte unless it opens a TLS handshake (a record of type 22). net/http
// would otherwise tell a plain HTTP client "400 Client sent an HTTP
// request to an HTTPS server", and the agent answers strangers nothing.
//
// Past the first byte, a connection reads through a buffer of readBuffer
// bytes: crypto/tls reads about one record (16 KiB) at a time, and on an
// upload a system call per record (with the acknowledgement each may
// send) costs the agent more than the copy out of the buffer.
func tlsOnly(ln net.Listener) net.Listener { return tlsOnlyListener{ln} }

type tlsOnlyListener struct{ net.Listener }

func (l tlsOnlyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tlsOnlyConn{Conn: c}, nil
}

// errNotTLS is the handshake error the agent logs for such a client.
var errNotTLS = errors.New("the client does not speak TLS; closed without an answer")

// recordTypeHandshake is the first byte of every TLS connection.
const recordTypeHandshake = 22

// readBuffer is the read buffer of an agent's connection, allocated at
// its first read past the first byte.
const readBuffer = 256 << 10

type tlsOnlyConn struct {
	net.Conn
	once sync.Once
	err  error
	r    *bufio.Reader
}

func (c *tlsOnlyConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.Conn.Read(p)
	}
	checked := false
	var n int
	var err error
	c.once.Do(func() {
		checked = true
		n, err = c.Conn.Read(p)
		if n > 0 && p[0] != recordTypeHandshake {
			c.Conn.Close()
			c.err = errNotTLS
		}
	})
	if c.err != nil {
		return 0, c.err
	}
	if checked {
		return n, err
	}
	if c.r == nil {
		c.r = bufio.NewReaderSize(c.Conn, readBuffer)
	}
	return c.r.Read(p)
}
