package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/pki"
)

// serverCertTTL is the lifetime of the certificate --tls-auto issues; it is
// kept in memory and reissued when a third of it remains.
const serverCertTTL = 7 * 24 * time.Hour

// certReloadEvery bounds how often the --tls-cert files are looked at.
const certReloadEvery = time.Second

// tlsCerts returns what serves the API's certificate, or nil for plain
// HTTP: the files of --tls-cert and --tls-key, reloaded when they change,
// or with --tls-auto a certificate from the control plane's CA.
func tlsCerts(cfg Config, ca *pki.CA) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	files := cfg.TLSCertFile != "" || cfg.TLSKeyFile != ""
	switch {
	case files && cfg.TLSAuto:
		return nil, errors.New("--tls-auto and --tls-cert/--tls-key exclude each other: the control plane issues its own certificate, or serves the one given")
	case files && (cfg.TLSCertFile == "" || cfg.TLSKeyFile == ""):
		return nil, errors.New("--tls-cert and --tls-key go together: the certificate chain and its private key, PEM")
	case files:
		f := &fileCert{certPath: cfg.TLSCertFile, keyPath: cfg.TLSKeyFile, log: cfg.Logger}
		if err := f.load(); err != nil {
			return nil, err
		}
		return f.get, nil
	case cfg.TLSAuto:
		dns, ips := serverNames(cfg.Listen, cfg.TLSNames)
		a := &autoCert{ca: ca, dns: dns, ips: ips}
		if _, err := a.get(nil); err != nil {
			return nil, err
		}
		cfg.Logger.Info("serving the API over TLS with a certificate from the control plane's CA", "names", dns, "addresses", ips, "ca_hash", ca.Hash())
		return a.get, nil
	}
	return nil, nil
}

// fileCert serves a certificate from files that something outside renews
// (cert-manager, an ACME client): a handshake after they changed gets the
// new one, without a restart. A change that does not load is logged, and
// the previous certificate served on.
type fileCert struct {
	certPath, keyPath string
	log               *slog.Logger

	mu      sync.Mutex
	cur     *tls.Certificate
	stamp   [2]time.Time // modification times of what cur was read from
	checked time.Time
}

func (f *fileCert) load() error {
	stamp, err := f.stat()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		return fmt.Errorf("--tls-cert %s and --tls-key %s: %w", f.certPath, f.keyPath, err)
	}
	f.cur, f.stamp = &c, stamp
	return nil
}

func (f *fileCert) stat() ([2]time.Time, error) {
	var st [2]time.Time
	for i, p := range []string{f.certPath, f.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("TLS certificate files: %w", err)
		}
		st[i] = fi.ModTime()
	}
	return st, nil
}

func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= certReloadEvery {
		f.checked = now
		if st, err := f.stat(); err == nil && st != f.stamp {
			prev := f.cur
			if err := f.load(); err != nil {
				// Half-written (the key before the certificate): the next
				// look, a second on, tries again.
				f.cur = prev
				f.log.Warn("the TLS certificate files changed but do not load; serving the previous certificate", "err", err)
			} else {
				f.log.Info("TLS certificate reloaded", "cert", f.certPath, "expires", f.cur.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		}
	}
	return f.cur, nil
}

// autoCert is the API's certificate issued by the control plane's CA,
// reissued when a third of its lifetime remains.
type autoCert struct {
	ca  *pki.CA
	dns []string
	ips []net.IP

	mu     sync.Mutex
	cur    *tls.Certificate
	issued time.Time
}

func (a *autoCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.cur != nil && !pki.DueForRenewal(a.issued, a.cur.Leaf.NotAfter, now) {
		return a.cur, nil
	}
	c, err := a.ca.IssueServer(a.dns, a.ips, serverCertTTL, now)
	if err != nil {
		return nil, fmt.Errorf("issuing the API's TLS certificate: %w", err)
	}
	a.cur, a.issued = c, now
	return c, nil
}

// serverNames are what --tls-auto's certificate names: the --tls-name
// names, this host's name and localhost, and the addresses the API listens
// on (every interface's for a wildcard address) and loopback.
func serverNames(listen string, names []string) ([]string, []net.IP) {
	dns := append([]string{"localhost"}, names...)
	if h, err := os.Hostname(); err == nil && h != "" {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	host, _, _ := net.SplitHostPort(listen)
	switch ip := net.ParseIP(host); {
	case host != "" && ip == nil:
		dns = append(dns, host)
	case ip != nil && !ip.IsUnspecified():
		ips = append(ips, ip)
	default:
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
					ips = append(ips, n.IP)
				}
			}
		}
	}
	// Names given as addresses belong with the addresses.
	dns = slices.DeleteFunc(dns, func(n string) bool {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			return true
		}
		return false
	})
	slices.Sort(dns)
	dns = slices.Compact(dns)
	return dns, ips
}

// plainHTTPWarning is what the control plane says at every start when it
// serves the API without TLS on an address other hosts reach, or "".
func plainHTTPWarning(addr net.Addr, tlsOn, insecureOK bool) string {
	if tlsOn || insecureOK {
		return ""
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return ""
	}
	return "the API is served over plain HTTP on " + addr.String() + ": bearer tokens, session cookies and join tokens cross the network in clear; " +
		"serve it with --tls-auto or --tls-cert/--tls-key, or behind a TLS proxy (--trusted-proxy), or pass --insecure-http to accept the risk"
}
