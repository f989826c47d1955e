package urlpolicy

import (
	"fmt"
	"net/netip"
	"slices"
)

var (
	// metadataAddrs are cloud metadata services outside link-local space:
	// AWS over IPv6, Google Cloud over IPv6, Alibaba Cloud, and Azure's
	// WireServer (a public address every Azure VM reaches on its host).
	metadataAddrs = []netip.Addr{
		netip.MustParseAddr("fd00:ec2::254"),
		netip.MustParseAddr("fd20:ce::254"),
		netip.MustParseAddr("100.100.100.200"),
		netip.MustParseAddr("168.63.129.16"),
	}
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")   // Linux connects 0.x to the local host
	reserved    = netip.MustParsePrefix("240.0.0.0/4") // class E, never routed
	broadcast   = netip.MustParseAddr("255.255.255.255")
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // carrier-grade NAT, private in practice
	nat64       = netip.MustParsePrefix("64:ff9b::/96")  // well-known NAT64 prefix (RFC 6052)
)

// CheckAddr checks an address a download would connect to, as if the URL
// named it directly; a nil error means it may be dialed.
func (p *Policy) CheckAddr(ip netip.Addr) error {
	if reason := p.addrReason(ip, p.hostListed(ip.String())); reason != "" {
		return &RefusedError{Subject: "address " + ip.String(), Reason: reason}
	}
	return nil
}

// addrReason says why ip is refused, or "" if it is not. listed says the
// host allow list is empty or names the host that led to ip; if not, ip
// must be in AllowCIDRs.
func (p *Policy) addrReason(ip netip.Addr, listed bool) string {
	if !ip.IsValid() {
		return "the address is not valid"
	}
	ip = ip.WithZone("")
	v4 := embedded(ip)
	show := ip.String()
	if v4 != ip {
		show += " (IPv4 " + v4.String() + ")"
	}
	for _, a := range []netip.Addr{ip, v4} {
		if what := never(a); what != "" {
			return fmt.Sprintf("%s is %s, which downloads may never reach", show, what)
		}
	}
	if containsAny(p.DenyCIDRs, ip, v4) {
		return fmt.Sprintf("%s is in the download deny list (%s)", show, serverFlag(DenyFlag))
	}
	if containsAny(p.AllowCIDRs, ip, v4) {
		return ""
	}
	switch {
	case !listed:
		return fmt.Sprintf("%s is not in the download allow list (%s); add it or use an allowed mirror", show, serverFlag(AllowFlag))
	case v4.IsLoopback() && !p.AllowLoopback:
		return fmt.Sprintf("%s is a loopback address, which downloads may reach only when the control plane runs with %s "+
			"(a mirror on the node itself) or has the address in its allow list (%s %s)",
			show, serverFlag(LoopbackFlag), serverFlag(AllowFlag), v4)
	case p.DenyPrivate && (v4.IsPrivate() || sharedSpace.Contains(v4)):
		return fmt.Sprintf("%s is a private address and private addresses are denied; add its range to the allow list (%s)", show, serverFlag(AllowFlag))
	}
	return ""
}

// embedded returns the IPv4 address an IPv4-mapped or NAT64 address
// carries, since that is where a connection to it ends up; otherwise ip.
func embedded(ip netip.Addr) netip.Addr {
	if ip.Is4In6() {
		return ip.Unmap()
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return ip
}

// never names the class of ip if no policy may allow it, or returns "".
func never(ip netip.Addr) string {
	switch {
	case ip.IsLinkLocalUnicast():
		return "a link-local/cloud-metadata address"
	case slices.Contains(metadataAddrs, ip):
		return "a cloud-metadata address"
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		return "an unspecified (this-host) address"
	case ip == broadcast:
		return "the broadcast address"
	case ip.IsMulticast():
		return "a multicast address"
	case reserved.Contains(ip):
		return "a reserved address (240.0.0.0/4)"
	}
	return ""
}

func containsAny(prefixes []netip.Prefix, ips ...netip.Addr) bool {
	for _, pre := range prefixes {
		for _, ip := range ips {
			if pre.Contains(ip) {
				return true
			}
		}
	}
	return false
}
