// Package nodeaddr normalizes node management addresses.
//
// An address is normalized exactly once, when a node is registered, and the
// normalized form (host:port, IPv6 bracketed) is what the node link dials.
package nodeaddr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the agent's default listening port.
const DefaultPort = 9090

// Normalize turns what an operator typed — a host name, an IPv4 or IPv6
// address with or without a CIDR suffix, with or without a port — into
// host:port. It never resolves names.
func Normalize(s string) (string, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return "", errors.New("management address is empty; give the agent's host or IP, optionally with :port")
	}
	if strings.Contains(in, "://") {
		return "", fmt.Errorf("management address %q is a URL; give host or host:port (for example 10.0.0.5 or 10.0.0.5:9090)", s)
	}
	host, port, err := split(in)
	if err != nil {
		return "", fmt.Errorf("management address %q: %v", s, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// split separates host and port, stripping a CIDR suffix from IP literals.
func split(in string) (host string, port int, err error) {
	// A bare IP or IP/prefix, including unbracketed IPv6.
	if h, ok := ipLiteral(in); ok {
		return h, DefaultPort, nil
	}
	if strings.HasPrefix(in, "[") {
		end := strings.Index(in, "]")
		if end < 0 {
			return "", 0, errors.New("missing ] after IPv6 address")
		}
		h, ok := ipLiteral(in[1:end])
		if !ok || !strings.Contains(h, ":") {
			return "", 0, fmt.Errorf("%q is not an IPv6 address", in[1:end])
		}
		rest := in[end+1:]
		if rest == "" {
			return h, DefaultPort, nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", 0, fmt.Errorf("unexpected %q after ]", rest)
		}
		p, err := parsePort(rest[1:])
		return h, p, err
	}
	h, p, found := strings.Cut(in, ":")
	if strings.Contains(p, ":") {
		return "", 0, errors.New("IPv6 addresses with a port must be bracketed, as in [fd00::5]:9090")
	}
	port = DefaultPort
	if found {
		if port, err = parsePort(p); err != nil {
			return "", 0, err
		}
	}
	if ip, ok := ipLiteral(h); ok {
		return ip, port, nil
	}
	if strings.Contains(h, "/") {
		return "", 0, fmt.Errorf("%q is not an IP address with a prefix length", h)
	}
	if err := checkHostname(h); err != nil {
		return "", 0, err
	}
	return strings.ToLower(h), port, nil
}

// ipLiteral reports whether s is an IP address, optionally with a /prefix,
// and returns the address alone in canonical form.
func ipLiteral(s string) (string, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return "", false
		}
		return p.Addr().String(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", false
	}
	// A zone is an interface name; brackets or '%' in it would make the
	// bracketed host:port ambiguous.
	if strings.ContainsAny(a.Zone(), "[]%/") {
		return "", false
	}
	return a.String(), true
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return p, nil
}

// checkHostname accepts RFC 1123 host names.
func checkHostname(h string) error {
	if h == "" {
		return errors.New("host is empty")
	}
	if len(h) > 253 {
		return errors.New("host name is longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a valid host name", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a valid host name: a label starts or ends with -", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a valid host name: character %q is not allowed", h, c)
			}
		}
	}
	return nil
}
