package httpguard

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// LimitConns returns ln, which closes at once every connection past max
// from one client address (an IP, an IPv6 /64) while that many are open.
// Trusted proxies carry many clients' connections and are not limited.
// max <= 0 returns ln unchanged.
func LimitConns(ln net.Listener, max int, proxies *Proxies, log *slog.Logger) net.Listener {
	if max <= 0 {
		return ln
	}
	return &connLimiter{Listener: ln, max: max, proxies: proxies, log: log, open: map[netip.Prefix]*count{}}
}

type connLimiter struct {
	net.Listener
	max     int
	proxies *Proxies
	log     *slog.Logger

	mu   sync.Mutex
	open map[netip.Prefix]*count
}

type count struct {
	n      int
	warned time.Time // when a refusal was last logged
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, ok := addrOf(c.RemoteAddr().String())
		if !ok || l.proxies.Trusts(ip) {
			return c, nil
		}
		key := clientKey(ip)
		if l.take(key) {
			return &limitedConn{Conn: c, release: func() { l.release(key) }}, nil
		}
		c.Close()
	}
}

// take counts one more connection of key, or reports false when it has
// max open already.
func (l *connLimiter) take(key netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.open[key]
	if c == nil {
		c = &count{}
		l.open[key] = c
	}
	if c.n >= l.max {
		if now := time.Now(); now.Sub(c.warned) >= time.Minute {
			c.warned = now
			l.log.Warn("refusing connections past the limit per client address", "client", key.String(), "limit", l.max)
		}
		return false
	}
	c.n++
	return true
}

func (l *connLimiter) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.open[key]; c != nil {
		if c.n--; c.n <= 0 && time.Since(c.warned) >= time.Minute {
			delete(l.open, key)
		}
	}
}

// clientKey is what counts as one client: an IPv4 address, an IPv6 /64.
func clientKey(ip netip.Addr) netip.Prefix {
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.PrefixFrom(ip, 32)
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
