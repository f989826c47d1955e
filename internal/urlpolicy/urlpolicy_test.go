package urlpolicy

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// checkRefusal fails t unless err is a refusal whose message contains want.
func checkRefusal(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want a refusal containing %q", want)
	}
	var re *RefusedError
	if !errors.Is(err, ErrRefused) || !errors.As(err, &re) {
		t.Fatalf("error %q (%T) is not a *RefusedError matching ErrRefused", err, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestCheckURL(t *testing.T) {
	def := &Policy{}
	loop := &Policy{AllowLoopback: true}
	allow := &Policy{AllowHosts: []string{"mirror.example.com", "*.ubuntu.com"}}
	allowNet := &Policy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16")}}
	deny := &Policy{
		DenyHosts:  []string{"*.evil.example", "Bad.Example."},
		DenyCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
	}
	private := &Policy{DenyPrivate: true, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}}
	const never = "which downloads may never reach"
	tests := []struct {
		p    *Policy
		url  string
		want string // substring of the refusal; "" means accepted
	}{
		{def, "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img", ""},
		{def, "HTTP://Mirror.Example.COM:8080/a.iso?sig=x#frag", ""},
		{def, "http://mirror.example.com./a.iso", ""},
		{def, " http://10.0.0.5/a.iso\n", ""}, // private ranges are allowed by default
		{def, "http://100.64.1.1/a.iso", ""},
		{def, "http://[fd00::5]:8080/a.iso", ""},
		{def, "http://93.184.215.14/a.iso", ""},
		{def, "http://localhost/a.iso", ""}, // a name: its addresses are checked at dial time

		// Link-local, metadata, unspecified, multicast, broadcast: never.
		{def, "http://169.254.169.254/latest", "URL http://169.254.169.254/latest refused: 169.254.169.254 is a link-local/cloud-metadata address, " + never},
		{loop, "http://169.254.169.254/latest", never},
		{allowNet, "http://169.254.169.254/latest", never},
		{def, "http://[fe80::1]/", "fe80::1 is a link-local/cloud-metadata address"},
		{def, "http://[fe80::1%25eth0]/", "fe80::1 is a link-local"},
		{def, "http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254 (IPv4 169.254.169.254) is a link-local"},
		{def, "http://[::ffff:a9fe:a9fe]/", "(IPv4 169.254.169.254) is a link-local"},
		{def, "http://[64:ff9b::a9fe:a9fe]/", "(IPv4 169.254.169.254) is a link-local"},
		{def, "http://[fd00:ec2::254]/latest", "fd00:ec2::254 is a cloud-metadata address"},
		{def, "http://[fd20:ce::254]/", "cloud-metadata"},
		{def, "http://100.100.100.200/latest/meta-data", "100.100.100.200 is a cloud-metadata address"},
		{def, "http://168.63.129.16/machine", "cloud-metadata"},
		{def, "http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a cloud-metadata name, " + never},
		{def, "http://METADATA.google.internal./", "cloud-metadata name"},
		{def, "http://metadata/", "cloud-metadata name"},
		{def, "http://0.0.0.0:8080/", "0.0.0.0 is an unspecified (this-host) address"},
		{def, "http://0.1.2.3/", "unspecified"},
		{def, "http://[::]/", ":: is an unspecified"},
		{def, "http://224.0.0.1/", "multicast"},
		{def, "http://[ff02::1]/", "multicast"},
		{def, "http://255.255.255.255/", "broadcast"},
		{def, "http://240.0.0.1/", "reserved"},

		// Numbers that resolvers read as IPv4 addresses.
		{def, "http://2852039166/", "non-standard form"},
		{def, "http://0xA9FEA9FE/", "non-standard form"},
		{def, "http://0xa9.0xfe.0xa9.0xfe/", "non-standard form"},
		{def, "http://0251.0376.0251.0376/", "non-standard form"},
		{def, "http://169.254.43518/", "non-standard form"},
		{def, "http://169.254.169.254./", "non-standard form"},
		{def, "http://127.1/", "non-standard form"},
		{def, "http://017700000001/", "non-standard form"},
		{def, "http://1.2.3.4.5/", "non-standard form"},
		{def, "http://0x/", "non-standard form"},
		{def, "http://a.0x1f/", "non-standard form"},
		{def, "http://%31%36%39.254.169.254/", "not a valid URL"},
		{def, "http://１６９.２５４.１６９.２５４/", "not ASCII"},

		// Loopback: refused by default.
		{def, "http://127.0.0.1:8080/a.iso", "127.0.0.1 is a loopback address, which downloads may reach only when the control plane " +
			"runs with quarry server --allow-loopback-urls (a mirror on the node itself) or has the address in its allow list " +
			"(quarry server --url-allow 127.0.0.1)"},
		{def, "http://[::1]/", "::1 is a loopback address"},
		{def, "http://[::ffff:127.0.0.1]/", "loopback"},
		{loop, "http://127.0.0.1:8080/a.iso", ""},
		{loop, "http://[::1]/", ""},
		{allowNet, "http://127.0.0.2/", ""},

		// Syntax.
		{def, "ftp://mirror.example.com/a.iso", "URL ftp://mirror.example.com/a.iso refused: only http and https are supported"},
		{def, "file:///etc/passwd", "only http and https"},
		{def, "gopher://x/", "only http and https"},
		{def, "//mirror.example.com/a.iso", "only http and https"},
		{def, "mirror.example.com/a.iso", "only http and https"},
		{def, "http:mirror.example.com", "has no host"},
		{def, "http:///a.iso", "has no host"},
		{def, "http://:80/", "has no host"},
		{def, "http://user:hunter2@mirror.example.com/", "user name or password"},
		{def, "http://mirror.example.com:0/", "port 0 is not a number from 1 to 65535"},
		{def, "http://mirror.example.com:65536/", "port 65536"},
		{def, "http://mirror.example.com:/", "port after ':' is empty"},
		{def, "http://mirror.example.com:http/", "not a valid URL"},
		{def, "http://mir ror.example.com/", "not a valid URL"},
		{def, "http://mirror\\@169.254.169.254/", "not a valid URL"},
		{def, "http://exämple.com/", "xn-- (punycode)"},
		{def, "http://a..b/", "not a valid host name"},
		{def, "http://-a.example/", "starts or ends with '-'"},
		{def, "http://a!b.example/", "not allowed"},
		{def, "http://[10.0.0.1]/", "not a valid URL"},
		{def, "http://" + strings.Repeat("a", MaxURLLen), "the limit is 8192"},

		// Allow and deny lists.
		{allow, "https://mirror.example.com/a.iso", ""},
		{allow, "https://cloud-images.ubuntu.com/a.img", ""},
		{allow, "https://a.b.ubuntu.com/a.img", ""},
		{allow, "https://ubuntu.com/a.img", "host ubuntu.com is not in the download allow list"},
		{allow, "http://files.internal/a.iso", "URL http://files.internal/a.iso refused: host files.internal is not in the download allow list (quarry server --url-allow); add it or use an allowed mirror"},
		{allow, "http://10.0.0.5/a.iso", "10.0.0.5 is not in the download allow list (quarry server --url-allow)"},
		{allowNet, "http://93.184.215.14/", ""}, // CIDRs lift defaults, they do not restrict
		{allowNet, "http://mirror.example.com/", ""},
		{&Policy{AllowHosts: []string{"mirror.example.com"}, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}, "http://10.9.1.1/", ""},
		{deny, "http://a.evil.example/", "host a.evil.example is in the download deny list (quarry server --url-deny)"},
		{deny, "http://evil.example/", ""},
		{deny, "http://bad.example/", "deny list"},
		{deny, "http://10.1.2.3/", "10.1.2.3 is in the download deny list"}, // deny wins
		{deny, "http://[::ffff:10.1.2.3]/", "deny list"},
		{deny, "http://11.0.0.1/", ""},
		{private, "http://10.0.0.5/", "10.0.0.5 is a private address and private addresses are denied"},
		{private, "http://172.16.0.1/", "private"},
		{private, "http://100.64.0.1/", "private"},
		{private, "http://[fd00::5]/", "private"},
		{private, "http://192.168.7.9/", ""},
		{private, "http://93.184.215.14/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, err := tt.p.CheckURL(tt.url)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckURL(%q): %v", tt.url, err)
				}
				if u.Scheme != "http" && u.Scheme != "https" {
					t.Fatalf("CheckURL(%q) scheme %q", tt.url, u.Scheme)
				}
				return
			}
			checkRefusal(t, err, tt.want)
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}

func TestCheckAddr(t *testing.T) {
	tests := []struct {
		p    *Policy
		ip   string
		want string
	}{
		{&Policy{}, "169.254.169.254", "address 169.254.169.254 refused: 169.254.169.254 is a link-local/cloud-metadata address, which downloads may never reach"},
		{&Policy{}, "fe80::1%eth0", "link-local"},
		{&Policy{}, "::ffff:169.254.169.254", "link-local"},
		{&Policy{}, "64:ff9b::127.0.0.1", "loopback"},
		{&Policy{}, "64:ff9b::93.184.215.14", ""},
		{&Policy{}, "127.0.0.1", "loopback"},
		{&Policy{AllowLoopback: true}, "127.0.0.1", ""},
		{&Policy{}, "10.0.0.1", ""},
		{&Policy{}, "8.8.8.8", ""},
		{&Policy{}, "2001:db8::1", ""},
		{&Policy{AllowHosts: []string{"mirror.example.com"}}, "8.8.8.8", "not in the download allow list"},
		{&Policy{AllowHosts: []string{"8.8.8.8"}}, "8.8.8.8", ""},
		{&Policy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("fe80::/10")}}, "fe80::1", "never"},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			err := tt.p.CheckAddr(netip.MustParseAddr(tt.ip))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkRefusal(t, err, tt.want)
		})
	}
	checkRefusal(t, (&Policy{}).CheckAddr(netip.Addr{}), "not valid")
}

func TestParseList(t *testing.T) {
	tests := []struct {
		in    string
		hosts []string
		cidrs []string
		err   string
	}{
		{in: ""},
		{in: " , "},
		{
			in:    "Mirror.Example.com., *.ubuntu.com,10.0.0.0/8, fd00::/8,192.0.2.7,[fd00::5],fd00::6",
			hosts: []string{"mirror.example.com", "*.ubuntu.com"},
			cidrs: []string{"10.0.0.0/8", "fd00::/8", "192.0.2.7/32", "fd00::5/128", "fd00::6/128"},
		},
		{in: "http://mirror.example.com", err: "is a URL"},
		{in: "10.0.0.0/33", err: "not a CIDR"},
		{in: "10.1.2.3/8", err: "did you mean 10.0.0.0/8?"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "*", err: "every host"},
		{in: "a.*.com", err: "wildcard may only lead"},
		{in: "mirror.example.com:8080", err: "no ports"},
		{in: "0x7f000001", err: "not a valid IP address"},
		{in: "10.0.0.256", err: "not a valid IP address"},
		{in: "bad host", err: "not allowed"},
		{in: "ok.example,-bad", err: "starts or ends"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			hosts, cidrs, err := ParseList(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseList(%q) = %v, %v, %v; want error containing %q", tt.in, hosts, cidrs, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range cidrs {
				got = append(got, c.String())
			}
			if !slices.Equal(hosts, tt.hosts) || !slices.Equal(got, tt.cidrs) {
				t.Fatalf("ParseList(%q) = %q, %q; want %q, %q", tt.in, hosts, got, tt.hosts, tt.cidrs)
			}
		})
	}
}

func TestParse(t *testing.T) {
	p, err := Parse("mirror.example.com,10.9.0.0/16", "10.9.9.0/24,*.bad.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckURL("http://mirror.example.com/a.iso"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckURL("http://10.9.1.1/a.iso"); err != nil {
		t.Fatal(err)
	}
	_, err = p.CheckURL("http://10.9.9.1/a.iso")
	checkRefusal(t, err, "deny list (quarry server --url-deny)")
	_, err = p.CheckURL("http://other.example/a.iso")
	checkRefusal(t, err, "allow list (quarry server --url-allow)")

	if _, err := Parse("*", ""); err == nil || !strings.HasPrefix(err.Error(), "--url-allow: ") {
		t.Fatalf("Parse(*) error %v; want one naming --url-allow", err)
	}
	if _, err := Parse("", "1.2.3.4/1"); err == nil || !strings.HasPrefix(err.Error(), "--url-deny: ") {
		t.Fatalf("Parse deny error %v; want one naming --url-deny", err)
	}
}

func TestCheckRedirect(t *testing.T) {
	p := &Policy{}
	req := func(s string) *http.Request {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Request{URL: u}
	}
	first := req("https://mirror.example.com/a.iso")
	if err := p.CheckRedirect(req("https://cdn.example.com/a.iso"), []*http.Request{first}); err != nil {
		t.Fatal(err)
	}
	err := p.CheckRedirect(req("http://169.254.169.254/latest"), []*http.Request{first})
	checkRefusal(t, err, "redirect from https://mirror.example.com/a.iso to http://169.254.169.254/latest refused: 169.254.169.254 is a link-local")
	err = p.CheckRedirect(req("ftp://mirror.example.com/a.iso"), []*http.Request{first})
	checkRefusal(t, err, "only http and https")

	var via []*http.Request
	for range MaxRedirects {
		via = append(via, first)
	}
	if err := p.CheckRedirect(first, via[:MaxRedirects-1]); err != nil {
		t.Fatalf("redirect %d refused: %v", MaxRedirects, err)
	}
	checkRefusal(t, p.CheckRedirect(first, via), "redirected 10 times")
}
