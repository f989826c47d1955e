package httpguard

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the reverse proxies whose forwarding headers are believed:
// Forwarded (RFC 7239), else X-Forwarded-For, and X-Forwarded-Proto. From
// any other peer those headers are ignored, since anyone can send them.
type Proxies struct{ nets []netip.Prefix }

// ParseProxies parses --trusted-proxy values: CIDRs, or single addresses.
func ParseProxies(values []string) (*Proxies, error) {
	p := &Proxies{}
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return nil, fmt.Errorf("trusted proxy %q: give a CIDR such as 10.0.0.0/8 or an address such as 10.0.0.2", s)
				}
				pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			}
			p.nets = append(p.nets, pfx.Masked())
		}
	}
	return p, nil
}

// Trusts reports whether ip is one of the trusted proxies.
func (p *Proxies) Trusts(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, n := range p.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// Client returns the address of the client behind r and whether it spoke
// https to the first proxy. When r comes from a trusted proxy, the
// forwarding chain is walked from the nearest hop back, skipping trusted
// proxies: the first address that is not one is the client (an address a
// client wrote into the header itself is never reached that way). addr is
// host:port, with port 0 when the proxy did not say.
func (p *Proxies) Client(r *http.Request) (addr string, https bool) {
	addr, https = r.RemoteAddr, r.TLS != nil
	peer, ok := addrOf(r.RemoteAddr)
	if !ok || !p.Trusts(peer) {
		return addr, https
	}
	hops := forwarded(r.Header)
	if len(hops) == 0 {
		// A proxy that names only the scheme.
		if proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); proto != "" {
			https = strings.EqualFold(strings.TrimSpace(proto), "https")
		}
		return addr, https
	}
	i := len(hops) - 1
	for i > 0 && hops[i].ok && p.Trusts(hops[i].ip) {
		i--
	}
	h := hops[i]
	if !h.ok {
		// "unknown", an obfuscated name, garbage: nothing to count by but
		// the proxy itself.
		return addr, https
	}
	if h.proto != "" {
		https = strings.EqualFold(h.proto, "https")
	}
	return netip.AddrPortFrom(h.ip, h.port).String(), https
}

// hop is one element of a forwarding chain.
type hop struct {
	ip    netip.Addr
	port  uint16
	ok    bool // ip is an address
	proto string
}

// forwarded reads the chain from Forwarded, or else X-Forwarded-For with
// X-Forwarded-Proto, oldest hop first.
func forwarded(h http.Header) []hop {
	var hops []hop
	if vs := h.Values("Forwarded"); len(vs) > 0 {
		for _, elem := range strings.Split(strings.Join(vs, ","), ",") {
			var x hop
			for _, pair := range strings.Split(elem, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
				v = strings.Trim(v, `"`)
				switch strings.ToLower(k) {
				case "for":
					x.ip, x.port, x.ok = parseNode(v)
				case "proto":
					x.proto = v
				}
			}
			hops = append(hops, x)
		}
		return hops
	}
	vs := h.Values("X-Forwarded-For")
	if len(vs) == 0 {
		return nil
	}
	for _, s := range strings.Split(strings.Join(vs, ","), ",") {
		var x hop
		x.ip, x.port, x.ok = parseNode(strings.TrimSpace(s))
		hops = append(hops, x)
	}
	// X-Forwarded-Proto lists a scheme per hop like X-Forwarded-For, or
	// one for all (what most proxies send).
	var protos []string
	for _, s := range strings.Split(strings.Join(h.Values("X-Forwarded-Proto"), ","), ",") {
		if s = strings.TrimSpace(s); s != "" {
			protos = append(protos, s)
		}
	}
	switch {
	case len(protos) == len(hops):
		for i := range hops {
			hops[i].proto = protos[i]
		}
	case len(protos) > 0:
		for i := range hops {
			hops[i].proto = protos[0]
		}
	}
	return hops
}

// parseNode parses a forwarded node: 192.0.2.1, 192.0.2.1:443,
// [2001:db8::1], [2001:db8::1]:443 or 2001:db8::1.
func parseNode(s string) (netip.Addr, uint16, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), ap.Port(), true
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.Unmap().WithZone(""), 0, true
	}
	return netip.Addr{}, 0, false
}

// addrOf is the IP of a host:port remote address.
func addrOf(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

type httpsKey struct{}

// WithClient returns r as the handlers should see it: RemoteAddr is the
// client's address (see Client), so the failure limit and the audit log
// count the client rather than the proxy, and IsHTTPS tells whether it
// spoke https.
func (p *Proxies) WithClient(r *http.Request) *http.Request {
	addr, https := p.Client(r)
	if addr == r.RemoteAddr && https == (r.TLS != nil) {
		return r
	}
	r = r.WithContext(context.WithValue(r.Context(), httpsKey{}, https))
	r.RemoteAddr = addr
	return r
}

// IsHTTPS reports whether the client of r spoke https: to this server, or
// to a trusted proxy in front of it.
func IsHTTPS(r *http.Request) bool {
	if v, ok := r.Context().Value(httpsKey{}).(bool); ok {
		return v
	}
	return r.TLS != nil
}
