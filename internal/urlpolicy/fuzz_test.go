package urlpolicy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// FuzzCheckURL checks that whatever the default policy accepts is an
// http(s) URL without user info whose host is a name that cannot be read as
// a number, or an IP literal a download may reach; and that accepting
// is stable when the URL is printed and checked again.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://mirror.example.com/a.iso",
		"http://169.254.169.254/latest",
		"http://[::ffff:a9fe:a9fe]/",
		"http://0xA9FEA9FE/",
		"http://2852039166/",
		"http://user@host/",
		"http://[fe80::1%25eth0]:8080/",
		"http://host:65535/",
	} {
		f.Add(s)
	}
	var p Policy
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := p.CheckURL(raw)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("CheckURL(%q) error %q is not ErrRefused", raw, err)
			}
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("CheckURL(%q) accepted scheme %q", raw, u.Scheme)
		}
		if u.User != nil {
			t.Fatalf("CheckURL(%q) accepted user info", raw)
		}
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); err == nil {
			for _, a := range []netip.Addr{ip.WithZone(""), ip.Unmap()} {
				if a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() ||
					a == netip.MustParseAddr("fd00:ec2::254") || a == netip.MustParseAddr("100.100.100.200") {
					t.Fatalf("CheckURL(%q) accepted address %s", raw, a)
				}
			}
		} else if numeric(host) {
			t.Fatalf("CheckURL(%q) accepted host %q, which resolvers may read as an IPv4 address", raw, host)
		}
		if _, err := p.CheckURL(u.String()); err != nil {
			t.Fatalf("CheckURL(%q) accepted, but not its printed form %q: %v", raw, u.String(), err)
		}
	})
}

// numeric reports whether host's last label is made of digits or 0x hex,
// written independently of endsInNumber.
func numeric(host string) bool {
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	last := strings.ToLower(labels[len(labels)-1])
	if last == "" {
		return false
	}
	if strings.HasPrefix(last, "0x") {
		return strings.Trim(last[2:], "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}
