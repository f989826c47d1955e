package e2e

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/server"
)

// browser is an HTTP client that trusts roots, over HTTP/2 when h2.
func browser(roots *x509.CertPool, h2 bool) *http.Client {
	p := new(http.Protocols)
	p.SetHTTP1(!h2)
	p.SetHTTP2(h2)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, Protocols: p}}
}

// TestTLSAuto: with --tls-auto the API is served over TLS with a
// certificate from the control plane's CA, which the CLI (QUARRY_CA_FILE),
// agents (--ca-hash), browsers and gRPC clients that trust that CA verify,
// over HTTP/1.1 and HTTP/2; a client trusting another CA is refused.
func TestTLSAuto(t *testing.T) {
	s := quarrytest.StartServer(t, func(c *server.Config) { c.TLSAuto = true })
	ctx := t.Context()
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("URL %s, want https", s.URL)
	}
	if _, err := s.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{})); err != nil {
		t.Fatalf("ListNodes over TLS: %v", err)
	}
	for _, h2 := range []bool{false, true} {
		resp, err := browser(s.CA.Pool(), h2).Get(s.URL + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz (h2 %v): %v", h2, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			t.Errorf("GET /healthz (h2 %v): %s over %s", h2, resp.Status, resp.Proto)
		}
	}
	grpc := quarryv1connect.NewNodeServiceClient(browser(s.CA.Pool(), true), s.URL, connect.WithGRPC())
	req := connect.NewRequest(&quarryv1.ListNodesRequest{})
	req.Header().Set("Authorization", "Bearer "+s.AdminToken)
	if _, err := grpc.ListNodes(ctx, req); err != nil {
		t.Errorf("gRPC over TLS: %v", err)
	}
	if _, err := browser(otherCA(t).Pool(), false).Get(s.URL + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client trusting another CA: %v, want a certificate error", err)
	}

	// The CLI: with the CA in QUARRY_CA_FILE it works, and the join line it
	// prints names the https URL; with another CA it refuses to talk.
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, s.CA.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("QUARRY_CA_FILE", caFile)
	useToken(s.URL, s.AdminToken)
	mustQuarry(t, s.URL, "node", "ls")
	if out := mustQuarry(t, s.URL, "token", "create", "--join", "--node", "n1"); !strings.Contains(out, "--server "+s.URL+" ") ||
		!strings.Contains(out, "--ca-hash "+s.CA.Hash()) || !strings.Contains(out, "--name n1") {
		t.Errorf("token create --join printed:\n%s\nwant the https URL, the CA hash and --name n1", out)
	}
	wrong := filepath.Join(t.TempDir(), "other.crt")
	if err := os.WriteFile(wrong, otherCA(t).PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("QUARRY_CA_FILE", wrong)
	if r := quarry(t, s.URL, "node", "ls"); r.code == 0 || !strings.Contains(r.stderr, "does not verify") {
		t.Errorf("the CLI trusting another CA: exit %d\n%s\nwant a refusal saying the certificate does not verify", r.code, r.stderr)
	}

	// An agent enrolls over https with the pin, and refuses a wrong one.
	a := quarrytest.StartAgentProcess(t, quarrytest.Binary(t), s, quarrytest.AgentOptions{
		Name: "n1", JoinToken: s.JoinToken(t, true, time.Hour), CAHash: s.CA.Hash()})
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	r := runAgent(t, s, t.TempDir(), "--join-token", s.JoinToken(t, true, time.Hour), "--name", "n2", "--ca-hash", otherCA(t).Hash())
	if r.code == 0 || !strings.Contains(r.stderr, "does not verify") {
		t.Errorf("an agent with a wrong pin: exit %d\n%s", r.code, r.stderr)
	}
}

// writeServerCert issues a certificate for 127.0.0.1 from ca and writes it
// and its key to certPath and keyPath; it returns the certificate's serial.
func writeServerCert(t *testing.T, ca *pki.CA, certPath, keyPath string) string {
	t.Helper()
	c, err := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.EncodeKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	// The key first, the certificate after, as a renewal would: the
	// server must not serve a mismatched pair meanwhile.
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pki.EncodeCert(c.Leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	return pki.Serial(c.Leaf)
}

// TestTLSCertFiles: --tls-cert and --tls-key are served, and certificate
// files replaced on disk are served from the next handshake, without a
// restart.
func TestTLSCertFiles(t *testing.T) {
	ca := otherCA(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writeServerCert(t, ca, certPath, keyPath)
	s := quarrytest.StartServer(t, func(c *server.Config) { c.TLSCertFile, c.TLSKeyFile = certPath, keyPath })
	s.TLS = pki.ControlPlaneTLS("", ca.Pool())
	if _, err := s.ClientsFor(s.AdminToken).Nodes.ListNodes(t.Context(), connect.NewRequest(&quarryv1.ListNodesRequest{})); err != nil {
		t.Fatalf("ListNodes with the file certificate: %v", err)
	}
	served := func() string {
		c, err := tls.Dial("tcp", strings.TrimPrefix(s.URL, "https://"), &tls.Config{RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return pki.Serial(c.ConnectionState().PeerCertificates[0])
	}
	if got := served(); got != first {
		t.Fatalf("served certificate %s, want %s", got, first)
	}
	time.Sleep(10 * time.Millisecond) // a modification time of its own
	second := writeServerCert(t, ca, certPath, keyPath)
	quarrytest.Eventually(t, 5*time.Second, func() error {
		if got := served(); got != second {
			return &notYet{got: got, want: second}
		}
		return nil
	})
}

type notYet struct{ got, want string }

func (e *notYet) Error() string { return "served certificate " + e.got + ", want " + e.want }
