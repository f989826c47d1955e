package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	now := time.Now()
	ca, created, err := LoadOrCreateCA(dir, now)
	if err != nil || !created {
		t.Fatalf("first start: created=%v, %v", created, err)
	}
	for name, want := range map[string]os.FileMode{"": 0o700, caKeyFile: 0o600, caCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", filepath.Join(dir, name), fi.Mode().Perm(), want)
		}
	}
	if !ca.Certificate().IsCA || ca.Certificate().NotAfter.Before(now.Add(9*365*24*time.Hour)) {
		t.Errorf("CA certificate: IsCA %v, NotAfter %v", ca.Certificate().IsCA, ca.Certificate().NotAfter)
	}

	again, created, err := LoadOrCreateCA(dir, now)
	if err != nil || created {
		t.Fatalf("second start: created=%v, %v", created, err)
	}
	if again.Hash() != ca.Hash() {
		t.Errorf("the CA changed across starts: %s, then %s", ca.Hash(), again.Hash())
	}

	t.Run("key readable by others", func(t *testing.T) {
		if err := os.Chmod(filepath.Join(dir, caKeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(filepath.Join(dir, caKeyFile), 0o600)
		_, _, err := LoadOrCreateCA(dir, now)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("loading with a 0644 key = %v, want an error saying chmod 600", err)
		}
	})
	t.Run("key missing", func(t *testing.T) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, caCertFile), ca.PEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadOrCreateCA(d, now)
		if err == nil || !strings.Contains(err.Error(), "restore the key") {
			t.Errorf("loading without the key = %v, want advice to restore it", err)
		}
	})
	t.Run("key of another CA", func(t *testing.T) {
		d := t.TempDir()
		other, _, err := LoadOrCreateCA(d, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, caCertFile), ca.PEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateCA(d, now); err == nil || !strings.Contains(err.Error(), "does not belong") {
			t.Errorf("loading a mismatched key (CA %s) = %v", other.Hash(), err)
		}
	})
	t.Run("key left by a crash", func(t *testing.T) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, caKeyFile), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, created, err := LoadOrCreateCA(d, now); err != nil || !created {
			t.Errorf("a key without certificate: created=%v, %v; want a new CA", created, err)
		}
	})
}

func TestHash(t *testing.T) {
	ca := newTestCA(t)
	h := ca.Hash()
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Errorf("Hash = %q", h)
	}
	if err := CheckHash(h); err != nil {
		t.Errorf("CheckHash(%q) = %v", h, err)
	}
	for _, bad := range []string{"", "sha256:", "sha256:xyz", "md5:" + h[7:], h[7:], h + "00"} {
		if err := CheckHash(bad); err == nil {
			t.Errorf("CheckHash(%q) = nil, want an error", bad)
		}
	}
}

func TestSignNode(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewKey()
	csrPEM, err := CreateCSR(key, "n1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := ca.SignNode(csr, "node-abc", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if NodeID(cert) != "node-abc" || len(cert.DNSNames) != 1 || cert.DNSNames[0] != "node-abc.node.quarry" {
		t.Errorf("names: node %q, DNS %v", NodeID(cert), cert.DNSNames)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ext key usage %v, want server auth only", cert.ExtKeyUsage)
	}
	if !SameKey(cert, key) {
		t.Error("the certificate is not for the CSR's key")
	}
	if d := cert.NotAfter.Sub(now); d < time.Hour-time.Second || d > time.Hour {
		t.Errorf("NotAfter is %v after now, want 1h", d)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: NodeServerName("node-abc")}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if Serial(cert) == "" {
		t.Error("empty serial")
	}
}

func TestParseCSR(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	csrFor := func(key any) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	good, _ := NewKey()
	tampered := func() []byte {
		p := csrFor(good)
		b, _ := pem.Decode(p)
		b.Bytes[len(b.Bytes)-3] ^= 0xff // inside the signature
		return pem.EncodeToMemory(b)
	}()
	for _, tt := range []struct {
		name string
		pem  []byte
		want string
	}{
		{"garbage", []byte("hello"), "not a PEM CERTIFICATE REQUEST"},
		{"certificate", newTestCA(t).PEM(), "not a PEM CERTIFICATE REQUEST"},
		{"P-384", csrFor(p384), "ECDSA P-256"},
		{"Ed25519", csrFor(edKey), "ECDSA P-256"},
		{"bad signature", tampered, "signature"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCSR(tt.pem); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCSR = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDueForRenewal(t *testing.T) {
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := issued.Add(30 * time.Hour)
	for _, tt := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {19 * time.Hour, false}, {20 * time.Hour, true}, {29 * time.Hour, true}, {31 * time.Hour, true}} {
		if got := DueForRenewal(issued, notAfter, issued.Add(tt.at)); got != tt.want {
			t.Errorf("DueForRenewal at +%v = %v, want %v", tt.at, got, tt.want)
		}
	}
}

func TestClientCertRenewal(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	c := NewClientCert(ca, 3*time.Hour, func() time.Time { return now })
	first, err := c.Get()
	if err != nil {
		t.Fatal(err)
	}
	if !hasURI(first.Leaf, ControlPlaneURI) || first.Leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("control plane certificate: URIs %v, EKU %v", first.Leaf.URIs, first.Leaf.ExtKeyUsage)
	}
	now = now.Add(time.Hour + 59*time.Minute)
	if again, _ := c.Get(); again != first {
		t.Error("reissued with more than a third of the lifetime left")
	}
	now = now.Add(2 * time.Minute)
	renewed, err := c.Get()
	if err != nil || renewed == first || Serial(renewed.Leaf) == Serial(first.Leaf) {
		t.Errorf("not reissued with less than a third left: %v", err)
	}
}

func TestWriteSecret(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key.pem")
	for _, content := range []string{"one", "two"} {
		if err := WriteSecret(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := ReadSecret(p)
		if err != nil || string(b) != content {
			t.Fatalf("ReadSecret = %q, %v; want %q", b, err, content)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
}

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// nodeCert signs a fresh key for nodeID, valid from now for ttl.
func nodeCert(t *testing.T, ca *CA, nodeID string, now time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key, _ := NewKey()
	csrPEM, _ := CreateCSR(key, nodeID)
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, nodeID, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func controlPlaneCert(t *testing.T, ca *CA, now time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueControlPlane(ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs one TLS connection over a loopback socket and returns the
// error each side saw. The server writes a byte after its handshake, so a
// client certificate refused by the server (TLS 1.3 tells the client only
// after its own handshake) shows up as the client's error too.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte{1})
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	return <-done, clientErr
}

func static(c *tls.Certificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if c == nil {
			return &tls.Certificate{}, nil
		}
		return c, nil
	}
}

// TestAgentServerTLS: the control plane's certificate and nodes'
// certificates from the agent's CA get through (the agent's handler lets
// nodes reach only the peer endpoint, with a grant); no certificate,
// another CA's, and an expired one are refused.
func TestAgentServerTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	agentCert := nodeCert(t, ca, "node-a", now, time.Hour)
	server := AgentServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return agentCert, nil }, ca.Pool())
	for _, tt := range []struct {
		name   string
		client *tls.Certificate
		ok     bool
	}{
		{"control plane", controlPlaneCert(t, ca, now, time.Hour), true},
		{"no certificate", nil, false},
		{"another CA's control plane", controlPlaneCert(t, other, now, time.Hour), false},
		{"expired control plane", controlPlaneCert(t, ca, now.Add(-2*time.Hour), time.Hour), false},
		{"an agent of the same CA", nodeCert(t, ca, "node-b", now, time.Hour), true},
		{"the agent itself", agentCert, true},
		{"an agent of another CA", nodeCert(t, other, "node-b", now, time.Hour), false},
		{"an expired agent", nodeCert(t, ca, "node-b", now.Add(-2*time.Hour), time.Hour), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr := handshake(t, server, NodeClientTLS("node-a", ca.Pool(), static(tt.client)))
			if tt.ok && (serr != nil || cerr != nil) {
				t.Fatalf("refused: server %v, client %v", serr, cerr)
			}
			if !tt.ok && (serr == nil || cerr == nil) {
				t.Fatalf("accepted: server %v, client %v", serr, cerr)
			}
			t.Logf("server: %v; client: %v", serr, cerr)
		})
	}
}

// TestNodeClientTLS: the control plane accepts only the certificate of the
// node it dials, from its CA, not expired.
func TestNodeClientTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	cp := controlPlaneCert(t, ca, now, time.Hour)
	selfSigned := func() *tls.Certificate {
		o := newTestCA(t)
		return &tls.Certificate{Certificate: [][]byte{o.cert.Raw}, PrivateKey: o.key, Leaf: o.cert}
	}()
	for _, tt := range []struct {
		name  string
		agent *tls.Certificate
		check func(error) bool
	}{
		{"the node", nodeCert(t, ca, "node-a", now, time.Hour), func(err error) bool { return err == nil }},
		{"another node", nodeCert(t, ca, "node-b", now, time.Hour), func(err error) bool {
			return errors.As(err, new(x509.HostnameError))
		}},
		{"another CA", nodeCert(t, other, "node-a", now, time.Hour), func(err error) bool {
			return errors.As(err, new(x509.UnknownAuthorityError))
		}},
		// Go checks the name before the chain: a self-signed certificate
		// names no node.
		{"self-signed", selfSigned, func(err error) bool {
			return errors.As(err, new(x509.HostnameError)) || errors.As(err, new(x509.UnknownAuthorityError))
		}},
		{"expired", nodeCert(t, ca, "node-a", now.Add(-2*time.Hour), time.Hour), func(err error) bool {
			var ce x509.CertificateInvalidError
			return errors.As(err, &ce) && ce.Reason == x509.Expired
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server := AgentServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return tt.agent, nil }, ca.Pool())
			_, cerr := handshake(t, server, NodeClientTLS("node-a", ca.Pool(), static(cp)))
			if !tt.check(cerr) {
				t.Fatalf("client error %v (%T)", cerr, cerr)
			}
		})
	}

	t.Run("right DNS name, wrong URI", func(t *testing.T) {
		// A certificate whose URI names another node is refused even when
		// its DNS name matches.
		c := nodeCert(t, ca, "node-a", now, time.Hour)
		cfg := NodeClientTLS("node-a", ca.Pool(), static(cp))
		c.Leaf.URIs[0], _ = c.Leaf.URIs[0].Parse(NodeURI("node-b"))
		err := cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}})
		if !errors.As(err, new(*WrongNodeError)) {
			t.Fatalf("VerifyConnection = %v, want WrongNodeError", err)
		}
	})
}
