package urlpolicy

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// newOrigin starts a server on loopback that serves /ok and redirects
// /to?u=X to X.
func newOrigin(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "image bytes") })
	mux.HandleFunc("/to", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("u"), http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// dialRecorder is a base dial function that records where it is asked to
// connect and fails the test for anything but allowed.
type dialRecorder struct {
	t       *testing.T
	allowed string
	mu      sync.Mutex
	addrs   []string
}

func (r *dialRecorder) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.addrs = append(r.addrs, addr)
	r.mu.Unlock()
	if addr != r.allowed {
		r.t.Errorf("dialed %s; only %s may be dialed", addr, r.allowed)
		return nil, io.ErrUnexpectedEOF
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func TestClientRefusesRedirectToMetadata(t *testing.T) {
	srv := newOrigin(t)
	rec := &dialRecorder{t: t, allowed: srv.Listener.Addr().String()}
	c := (&Policy{AllowLoopback: true}).Client(&http.Transport{DialContext: rec.DialContext})

	for _, tt := range []struct{ target, want string }{
		{"http://169.254.169.254/latest/meta-data/", "to http://169.254.169.254/latest/meta-data/ refused: 169.254.169.254 is a link-local/cloud-metadata address, which downloads may never reach"},
		{"http://[fe80::1]/", "to http://[fe80::1]/ refused: fe80::1 is a link-local/cloud-metadata address"},
		{"http://[::ffff:169.254.169.254]/", "(IPv4 169.254.169.254) is a link-local"},
		{"http://0xA9FEA9FE/", "non-standard form"},
		{"http://metadata.google.internal/", "cloud-metadata name"},
		{"ftp://mirror.example.com/a.iso", "only http and https"},
	} {
		t.Run(tt.target, func(t *testing.T) {
			resp, err := c.Get(srv.URL + "/to?u=" + tt.target)
			if err == nil {
				resp.Body.Close()
			}
			checkRefusal(t, err, tt.want)
			checkRefusal(t, err, "redirect from "+srv.URL+"/to")
		})
	}
	resp, err := c.Get(srv.URL + "/to?u=/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("redirect within the origin: status %s", resp.Status)
	}
	if len(rec.addrs) == 0 {
		t.Fatal("the origin was never dialed; the test proves nothing")
	}
}

func TestClientChecksFirstURL(t *testing.T) {
	srv := newOrigin(t)
	rec := &dialRecorder{t: t, allowed: "nothing"}
	c := (&Policy{AllowLoopback: true}).Client(&http.Transport{DialContext: rec.DialContext})
	u := strings.Replace(srv.URL, "http://", "http://user:secret@", 1) + "/ok"
	_, err := c.Get(u)
	checkRefusal(t, err, "user name or password")
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %q shows the password", err)
	}
	if _, err := c.Get("http://169.254.169.254/"); err == nil {
		t.Fatal("metadata URL fetched")
	}
	if len(rec.addrs) > 0 {
		t.Fatalf("dialed %v", rec.addrs)
	}
}

func TestClientLoopbackName(t *testing.T) {
	srv := newOrigin(t)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	u := "http://localhost:" + strconv.Itoa(port) + "/ok"

	// Without AllowLoopback the name passes CheckURL but its address is
	// refused when it is dialed.
	resp, err := (&Policy{}).Client(nil).Get(u)
	if err == nil {
		resp.Body.Close()
	}
	checkRefusal(t, err, "host localhost resolves to ")
	checkRefusal(t, err, "is a loopback address")

	resp, err = (&Policy{AllowLoopback: true}).Client(nil).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "image bytes" {
		t.Fatalf("body %q", b)
	}
}

// strictDialer fails the test if it resolves a name through DNS or opens a
// socket to anything but allowed.
func strictDialer(t *testing.T, allowed string, resolver *net.Resolver) *net.Dialer {
	if resolver == nil {
		resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			t.Errorf("DNS query sent to %s", address)
			return nil, io.ErrUnexpectedEOF
		}}
	}
	return &net.Dialer{Resolver: resolver, Control: func(network, address string, c syscall.RawConn) error {
		if address != allowed {
			t.Errorf("socket connecting to %s; only %s may be", address, allowed)
			return io.ErrUnexpectedEOF
		}
		return nil
	}}
}

func TestDialRefusesBeforeDialing(t *testing.T) {
	p := &Policy{AllowLoopback: true, DenyHosts: []string{"bad.example"}}
	dial := p.DialContext(strictDialer(t, "none", nil))
	for _, tt := range []struct{ network, addr, want string }{
		{"tcp", "169.254.169.254:80", "connection to 169.254.169.254:80 refused: 169.254.169.254 is a link-local/cloud-metadata address"},
		{"tcp", "[fe80::1%lo]:80", "link-local"},
		{"tcp", "[::ffff:169.254.169.254]:80", "link-local"},
		{"tcp", "[fd00:ec2::254]:80", "cloud-metadata"},
		{"tcp", "0.0.0.0:80", "unspecified"},
		{"tcp", "2852039166:80", "non-standard form"},
		{"tcp", "metadata.google.internal:80", "cloud-metadata name"},
		{"tcp", "bad.example:443", "deny list"},
		{"tcp", "[a:b]:80", "not an IPv6 address"},
		{"tcp", "127.0.0.1:0", "port 0"},
		{"tcp", "127.0.0.1", "not host:port"},
		{"udp", "127.0.0.1:53", "downloads use TCP"},
	} {
		t.Run(tt.addr, func(t *testing.T) {
			c, err := dial(context.Background(), tt.network, tt.addr)
			if err == nil {
				c.Close()
			}
			checkRefusal(t, err, tt.want)
		})
	}
}

// TestDialChecksEveryAddress resolves names through a DNS server on
// loopback, as a rebinding attacker's server would answer.
func TestDialChecksEveryAddress(t *testing.T) {
	srv := newOrigin(t)
	addr := srv.Listener.Addr().(*net.TCPAddr)
	if addr.IP.To4() == nil {
		t.Skip("origin is not on 127.0.0.1")
	}
	port := strconv.Itoa(addr.Port)
	lo := netip.MustParseAddr("127.0.0.1")
	res := fakeDNS(t, map[string][]netip.Addr{
		"good.test":   {lo},
		"mixed.test":  {lo, netip.MustParseAddr("169.254.169.254")},
		"mapped.test": {netip.MustParseAddr("::ffff:169.254.169.254")},
	})
	p := &Policy{AllowLoopback: true}
	dial := p.DialContext(strictDialer(t, "127.0.0.1:"+port, res))

	for _, name := range []string{"mixed.test.", "mapped.test."} {
		c, err := dial(context.Background(), "tcp", name+":"+port)
		if err == nil {
			c.Close()
		}
		checkRefusal(t, err, "resolves to ")
		checkRefusal(t, err, "link-local/cloud-metadata")
	}

	c, err := dial(context.Background(), "tcp4", "good.test.:"+port)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// The same name, refused once loopback is not allowed.
	_, err = (&Policy{}).DialContext(strictDialer(t, "none", res))(context.Background(), "tcp", "good.test.:"+port)
	checkRefusal(t, err, "host good.test resolves to 127.0.0.1: 127.0.0.1 is a loopback address")
}

// fakeDNS serves A and AAAA answers on a loopback UDP socket and returns a
// resolver that asks only it.
func fakeDNS(t *testing.T, answers map[string][]netip.Addr) *net.Resolver {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], answers); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

// dnsAnswer builds the response to query q: its question, then one record
// per matching address (RFC 1035 wire format, name compressed to the
// question).
func dnsAnswer(q []byte, answers map[string][]netip.Addr) []byte {
	if len(q) < 12 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		n := int(q[i])
		if i+1+n > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+n]))
		i += 1 + n
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	var recs [][]byte
	for _, a := range answers[strings.ToLower(strings.Join(labels, "."))] {
		if qtype == 1 && a.Is4() || qtype == 28 && a.Is6() {
			recs = append(recs, a.AsSlice())
		}
	}
	resp := []byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, byte(len(recs)), 0, 0, 0, 0}
	resp = append(resp, q[12:i+5]...)
	for _, b := range recs {
		resp = append(resp, 0xc0, 12, 0, byte(qtype), 0, 1, 0, 0, 0, 60, 0, byte(len(b)))
		resp = append(resp, b...)
	}
	return resp
}
