// Package urlpolicy decides which URLs image downloads may fetch. It is the
// defence against server-side request forgery: a URL typed by a user that
// points a download at cloud metadata, at the node itself or at an internal
// service.
//
// The contract:
//
//   - Only absolute http and https URLs with a host are accepted, with no
//     user info (credentials in URLs end up in logs and job records) and a
//     port from 1 to 65535.
//   - A host is a DNS name (ASCII; internationalized names in their xn--
//     form) or an IP literal in canonical form. A host that ends in a number
//     but is not dotted-decimal IPv4 (2852039166, 0xA9FEA9FE, 0251.0.0.1,
//     169.254.43518, 127.1) is refused: C resolvers and browsers read such
//     hosts as IPv4 addresses, so they could carry a denied address past a
//     check that only recognizes dotted decimals.
//   - Some addresses may never be reached, whatever the configuration:
//     link-local (169.254.0.0/16 and fe80::/10, which hold the usual cloud
//     metadata address 169.254.169.254), the other cloud metadata addresses
//     (fd00:ec2::254, fd20:ce::254, 100.100.100.200, 168.63.129.16) and
//     metadata names (metadata.google.internal…), unspecified and "this
//     network" (0.0.0.0/8, ::), multicast, broadcast and the reserved
//     240.0.0.0/4. IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::/96)
//     IPv6 addresses are judged by the IPv4 address they carry.
//   - Loopback is refused unless AllowLoopback is set (tests) or the address
//     is in AllowCIDRs: a download must not reach services bound to the
//     machine that fetches it.
//   - Private ranges (RFC 1918, fc00::/7, 100.64.0.0/10) are allowed unless
//     DenyPrivate is set, because on-premises image mirrors usually live in
//     them and refusing them by default would push operators to turn the
//     policy off.
//   - The allow list holds hosts and CIDRs. Listing hosts makes it a
//     whitelist: a URL must then name a listed host, or be an IP literal
//     in a listed CIDR. Listed CIDRs lift the loopback and private defaults
//     for their addresses (and never the addresses no download may reach).
//     The deny list wins over the allow list.
//   - A name is judged again on every address it resolves to, when the
//     connection is made, and only a checked address is dialed
//     (DialContext): a name that resolves to one address for the check and
//     another for the fetch (DNS rebinding) gains nothing. Each redirect is
//     checked like the first URL (CheckRedirect).
//
// Every refusal is a *RefusedError, which matches ErrRefused with errors.Is
// and says what to change.
package urlpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The flags that configure a policy; messages name them so the operator
// knows what to change.
const (
	AllowFlag    = "--url-allow"
	DenyFlag     = "--url-deny"
	LoopbackFlag = "--allow-loopback-urls"
)

// serverFlag names a flag as the command that takes it: the person refused
// is often at a CLI on another machine, where the flag means nothing.
func serverFlag(flag string) string { return "quarry server " + flag }

// MaxURLLen bounds a URL. Signed mirror URLs run to a few kilobytes; more
// than this is not a download link.
const MaxURLLen = 8192

// MaxRedirects is how many redirects a download follows.
const MaxRedirects = 10

// Policy says which URLs and addresses downloads may reach. The zero value
// is the default policy described in the package comment. A Policy must not
// be changed while it is in use.
type Policy struct {
	// AllowLoopback lets downloads reach 127.0.0.0/8 and ::1. Tests set it
	// to fetch from a local server; production leaves it off.
	AllowLoopback bool
	// DenyPrivate refuses private addresses (RFC 1918, fc00::/7,
	// 100.64.0.0/10) outside AllowCIDRs, for sites whose every source is on
	// the internet.
	DenyPrivate bool
	// AllowHosts, if not empty, is the only hosts downloads may name
	// ("mirror.example.com" exactly, or "*.example.com" for any name under
	// example.com); IP-literal hosts must then be in AllowCIDRs.
	AllowHosts []string
	// AllowCIDRs are address ranges exempt from the loopback and private
	// defaults; never from the addresses no download may reach.
	// Together with AllowHosts they are the allow list (--url-allow).
	AllowCIDRs []netip.Prefix
	// DenyHosts and DenyCIDRs form the deny list (--url-deny); they win over
	// the allow list.
	DenyHosts []string
	DenyCIDRs []netip.Prefix
}

// ErrRefused classes every refusal by the policy.
var ErrRefused = errors.New("refused by the download URL policy")

// RefusedError is a refusal: what was refused and why. Both parts are meant
// for the person who asked for the download.
type RefusedError struct {
	Subject string // "URL http://…", "redirect from … to …", "connection to host:port", "address …"
	Reason  string // why, and what to do about it
}

func (e *RefusedError) Error() string { return e.Subject + " refused: " + e.Reason }

// Is makes errors.Is(err, ErrRefused) hold.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Parse builds a policy from the values of the --url-allow and --url-deny
// flags (see ParseList). Loopback stays refused and private ranges allowed.
func Parse(allow, deny string) (*Policy, error) {
	p := &Policy{}
	var err error
	if p.AllowHosts, p.AllowCIDRs, err = ParseList(allow); err != nil {
		return nil, fmt.Errorf("%s: %w", AllowFlag, err)
	}
	if p.DenyHosts, p.DenyCIDRs, err = ParseList(deny); err != nil {
		return nil, fmt.Errorf("%s: %w", DenyFlag, err)
	}
	return p, nil
}

// ParseList splits a comma-separated list of hosts (mirror.example.com),
// wildcards (*.example.com), addresses (10.0.0.5, fd00::5, [fd00::5]) and
// CIDRs (10.0.0.0/8). Addresses come back as single-address prefixes; host
// names lower-cased without a trailing dot. Empty items are skipped.
func ParseList(s string) (hosts []string, cidrs []netip.Prefix, err error) {
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		host, cidr, err := parseItem(item)
		if err != nil {
			return nil, nil, err
		}
		if host != "" {
			hosts = append(hosts, host)
		} else {
			cidrs = append(cidrs, cidr)
		}
	}
	return hosts, cidrs, nil
}

func parseItem(item string) (string, netip.Prefix, error) {
	const forms = "give a host (mirror.example.com), a wildcard (*.example.com), an address (10.0.0.5) or a CIDR (10.0.0.0/8)"
	if strings.Contains(item, "://") {
		return "", netip.Prefix{}, fmt.Errorf("%q is a URL; %s", item, forms)
	}
	if strings.Contains(item, "/") {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return "", netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or fd00::/8", item)
		}
		if p != p.Masked() {
			return "", netip.Prefix{}, fmt.Errorf("%q has address bits set after the /%d prefix; did you mean %s?", item, p.Bits(), p.Masked())
		}
		return "", p, nil
	}
	bare := item
	if strings.HasPrefix(bare, "[") && strings.HasSuffix(bare, "]") {
		bare = bare[1 : len(bare)-1]
	}
	if ip, err := netip.ParseAddr(bare); err == nil {
		if ip.Zone() != "" {
			return "", netip.Prefix{}, fmt.Errorf("%q has an IPv6 zone; give the address without %%zone", item)
		}
		return "", netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	name := strings.ToLower(strings.TrimSuffix(item, "."))
	rest := strings.TrimPrefix(name, "*.")
	switch {
	case name == "*":
		return "", netip.Prefix{}, fmt.Errorf("%q would match every host; leave the list empty instead", item)
	case strings.Contains(rest, "*"):
		return "", netip.Prefix{}, fmt.Errorf("%q: a wildcard may only lead, as in *.example.com", item)
	case strings.Contains(rest, ":"):
		return "", netip.Prefix{}, fmt.Errorf("%q is not a host: the list takes no ports, and IPv6 addresses go without a port, as in fd00::5", item)
	case endsInNumber(rest):
		return "", netip.Prefix{}, fmt.Errorf("%q is not a valid IP address; write IPv4 addresses as four decimal numbers such as 192.0.2.10", item)
	}
	if reason := nameReason(rest); reason != "" {
		return "", netip.Prefix{}, fmt.Errorf("%q: %s; %s", item, reason, forms)
	}
	return name, netip.Prefix{}, nil
}

// CheckURL parses raw and checks it: syntax, host lists, and the address
// when the host is an IP literal. A name's addresses are only known when
// it is resolved, so they are checked by DialContext.
func (p *Policy) CheckURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > MaxURLLen {
		return nil, &RefusedError{
			Subject: fmt.Sprintf("URL %s", shorten(raw)),
			Reason:  fmt.Sprintf("it is %d bytes long; the limit is %d", len(raw), MaxURLLen),
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &RefusedError{Subject: fmt.Sprintf("URL %q", shorten(raw)), Reason: "it is not a valid URL: " + err.Error()}
	}
	if reason := p.urlReason(u); reason != "" {
		return nil, &RefusedError{Subject: "URL " + shorten(u.Redacted()), Reason: reason}
	}
	return u, nil
}

// urlReason says why u is refused, or "" if it is not.
func (p *Policy) urlReason(u *url.URL) string {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "only http and https are supported"
	case u.Opaque != "" || u.Host == "":
		return "it has no host; give an absolute URL such as https://mirror.example.com/image.qcow2"
	case u.User != nil:
		return "URLs may not carry a user name or password; remove the user@ part"
	case strings.HasSuffix(u.Host, ":"):
		return "the port after ':' is empty; remove the ':' or give a port from 1 to 65535"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %s is not a number from 1 to 65535", port)
		}
	}
	t, reason := p.judgeHost(u.Hostname(), strings.HasPrefix(u.Host, "["))
	if reason != "" {
		return reason
	}
	if t.ip.IsValid() {
		return p.addrReason(t.ip, t.listed)
	}
	return ""
}

// target is a host judged on its own, before any resolution.
type target struct {
	ip     netip.Addr // set for IP literals
	name   string     // set for names: lower-cased, without a trailing dot
	listed bool       // AllowHosts is empty or names this host
}

// judgeHost parses and checks a host (without brackets or port).
// bracketed says it was written as [IPv6].
func (p *Policy) judgeHost(host string, bracketed bool) (target, string) {
	if host == "" {
		return target{}, "it has no host"
	}
	if bracketed || strings.Contains(host, ":") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			return target{}, fmt.Sprintf("host [%s] is not an IPv6 address", host)
		}
		if ip.Zone() != "" && p.addrReason(ip, true) == "" {
			// A zone picks an interface, which a download has no reason to do.
			return target{}, fmt.Sprintf("host [%s] has an IPv6 zone; give the address without %%zone", host)
		}
		return target{ip: ip, listed: p.hostListed(ip.String())}, ""
	}
	lower := strings.ToLower(host)
	if endsInNumber(lower) {
		ip, err := netip.ParseAddr(lower)
		if err != nil || !ip.Is4() || ip.String() != lower {
			return target{}, fmt.Sprintf("host %s looks like an IPv4 address in a non-standard form (decimal, octal, hex, short or with a trailing dot); write it as four decimal numbers such as 192.0.2.10", shorten(host))
		}
		return target{ip: ip, listed: p.hostListed(lower)}, ""
	}
	name := strings.TrimSuffix(lower, ".")
	if reason := nameReason(name); reason != "" {
		return target{}, reason
	}
	if metadataNames[name] {
		return target{}, fmt.Sprintf("%s is a cloud-metadata name, which downloads may never reach", name)
	}
	if matchHost(p.DenyHosts, name) {
		return target{}, fmt.Sprintf("host %s is in the download deny list (%s)", name, serverFlag(DenyFlag))
	}
	if !p.hostListed(name) {
		return target{}, fmt.Sprintf("host %s is not in the download allow list (%s); add it or use an allowed mirror", name, serverFlag(AllowFlag))
	}
	return target{name: name, listed: true}, ""
}

// metadataNames are cloud metadata services' host names. Their addresses
// are refused anyway; refusing the names gives a clearer message and spares
// a lookup.
var metadataNames = map[string]bool{
	"metadata.google.internal":   true,
	"metadata.goog":              true,
	"metadata":                   true,
	"instance-data":              true,
	"instance-data.ec2.internal": true,
}

// hostListed reports whether the host allow list lets host through.
func (p *Policy) hostListed(host string) bool {
	return len(p.AllowHosts) == 0 || matchHost(p.AllowHosts, host)
}

// matchHost reports whether name matches a pattern: exactly, or under it
// for "*.example.com" (which does not match example.com itself).
func matchHost(patterns []string, name string) bool {
	for _, pat := range patterns {
		pat = strings.ToLower(strings.TrimSuffix(pat, "."))
		if suffix, ok := strings.CutPrefix(pat, "*"); ok {
			if strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
				return true
			}
		} else if name == pat {
			return true
		}
	}
	return false
}

// endsInNumber reports whether host's last label is a decimal or 0x hex
// number. URL parsers and C resolvers read such hosts as IPv4 addresses
// (the WHATWG URL standard's "ends in a number"), and no real top-level
// domain is numeric.
func endsInNumber(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	digits, hex := last, false
	if rest, ok := strings.CutPrefix(strings.ToLower(last), "0x"); ok {
		digits, hex = rest, true
	}
	for _, c := range digits {
		if !(c >= '0' && c <= '9' || hex && c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// nameReason checks a DNS name (lower-case, without trailing dot).
func nameReason(name string) string {
	if name == "" {
		return "the host is empty"
	}
	if len(name) > 253 {
		return "the host name is longer than 253 characters"
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Sprintf("host %s is not a valid host name: labels must have 1 to 63 characters", shorten(name))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("host %s is not a valid host name: a label starts or ends with '-'", shorten(name))
		}
		for _, c := range label {
			if c >= 0x80 {
				return fmt.Sprintf("host %q is not ASCII; give an internationalized name in its xn-- (punycode) form", shorten(name))
			}
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("host %q is not a valid host name: character %q is not allowed", shorten(name), c)
			}
		}
	}
	return ""
}

// shorten keeps messages readable when a URL is huge.
func shorten(s string) string {
	const limit = 200
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
