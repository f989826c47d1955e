package urlpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// DialFunc is the shape of http.Transport.DialContext.
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// DialContext returns a dial function for http.Transport that resolves the
// host itself with d.Resolver (net.DefaultResolver if nil), checks every
// address it resolves to, and dials only checked addresses with d. If any
// address is refused, none is dialed: a name with one forbidden record is
// either misconfigured or an attack. d may be nil.
func (p *Policy) DialContext(d *net.Dialer) DialFunc {
	if d == nil {
		d = &net.Dialer{}
	}
	return p.dial(d.Resolver, d.DialContext)
}

// dial wraps dial, which is only ever handed an IP address and port.
func (p *Policy) dial(resolver *net.Resolver, dial DialFunc) DialFunc {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		refuse := func(reason string) error {
			return &RefusedError{Subject: "connection to " + shorten(addr), Reason: reason}
		}
		family, ok := map[string]string{"tcp": "ip", "tcp4": "ip4", "tcp6": "ip6"}[network]
		if !ok {
			return nil, refuse(fmt.Sprintf("downloads use TCP, not %q", network))
		}
		host, portStr, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, refuse("it is not host:port")
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, refuse(fmt.Sprintf("port %s is not a number from 1 to 65535", portStr))
		}
		t, reason := p.judgeHost(host, false)
		if reason != "" {
			return nil, refuse(reason)
		}
		ips := []netip.Addr{t.ip}
		if !t.ip.IsValid() {
			if ips, err = resolver.LookupNetIP(ctx, family, host); err != nil {
				return nil, fmt.Errorf("connection to %s: %w", addr, err)
			}
			if len(ips) == 0 {
				return nil, fmt.Errorf("connection to %s: host %s has no addresses", addr, host)
			}
		}
		for _, ip := range ips {
			if reason := p.addrReason(ip, t.listed); reason != "" {
				if t.name != "" {
					reason = fmt.Sprintf("host %s resolves to %s: %s", t.name, ip, reason)
				}
				return nil, refuse(reason)
			}
		}
		// One address after the other, in the resolver's order: simpler than
		// racing them, and a download does not notice the difference.
		var errs []error
		for _, ip := range ips {
			c, err := dial(ctx, network, netip.AddrPortFrom(ip, uint16(port)).String())
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// CheckRedirect is an http.Client.CheckRedirect that checks each redirect
// target like the first URL and stops after MaxRedirects.
func (p *Policy) CheckRedirect(req *http.Request, via []*http.Request) error {
	subject := "redirect to " + shorten(req.URL.Redacted())
	if len(via) > 0 {
		subject = "redirect from " + shorten(via[len(via)-1].URL.Redacted()) + " to " + shorten(req.URL.Redacted())
	}
	if len(via) >= MaxRedirects {
		return &RefusedError{Subject: subject, Reason: fmt.Sprintf("the download was already redirected %d times, the limit; use the final URL directly", len(via))}
	}
	if reason := p.urlReason(req.URL); reason != "" {
		return &RefusedError{Subject: subject, Reason: reason}
	}
	return nil
}

// Client returns an HTTP client that follows the policy: each request's URL
// is checked (CheckURL), names are resolved and their addresses checked
// before dialing (DialContext), redirects are checked (CheckRedirect), and
// no proxy is used, since a proxy would resolve names where the policy
// cannot see them.
//
// base (which is cloned, and may be nil) supplies timeouts, TLS and
// connection pooling. If base.DialContext is set it makes the connections,
// and is only ever given a checked IP address; names are then resolved with
// net.DefaultResolver. Use DialContext directly for another resolver.
func (p *Policy) Client(base *http.Transport) *http.Client {
	if base == nil {
		base = &http.Transport{
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	t := base.Clone()
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	t.DialContext = p.dial(nil, dial)
	// Each of these would bypass DialContext (Dial and DialTLS are
	// deprecated but still honored).
	t.Proxy, t.DialTLSContext, t.DialTLS, t.Dial = nil, nil, nil, nil
	return &http.Client{Transport: &guard{p: p, t: t}, CheckRedirect: p.CheckRedirect}
}

// guard checks every request's URL before it reaches the transport, so the
// first URL of a download gets the same checks and messages as redirects.
type guard struct {
	p *Policy
	t *http.Transport
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if reason := g.p.urlReason(req.URL); reason != "" {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper always closes the body
		}
		return nil, &RefusedError{Subject: "URL " + shorten(req.URL.Redacted()), Reason: reason}
	}
	return g.t.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (g *guard) CloseIdleConnections() { g.t.CloseIdleConnections() }
