package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/agent"
	"github.com/quarry-project/quarry/internal/auth"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// impostor serves the real agent API at addr, but not as the enrolled
// agent: plain HTTP (h2c) when cert is nil, else TLS with cert and no
// client authentication.
func impostor(t *testing.T, addr string, cert *tls.Certificate) (stop func()) {
	t.Helper()
	ag, err := agent.New(agent.Config{FSRoot: t.TempDir(), Hostname: "impostor", Logger: quarrytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	hs := &http.Server{Handler: ag.Handler(), Protocols: p, ErrorLog: log.New(io.Discard, "", 0)}
	if cert == nil {
		p.SetUnencryptedHTTP2(true)
		go hs.Serve(ln)
	} else {
		p.SetHTTP2(true)
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		go hs.ServeTLS(ln, "", "")
	}
	return func() { hs.Close() }
}

// nodeCert signs a new key into a certificate for nodeID from ca, issued at
// at for ttl.
func nodeCert(t *testing.T, ca *pki.CA, nodeID string, at time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := pki.CreateCSR(key, nodeID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, nodeID, ttl, at)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func otherCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(time.Now().Add(-24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestControlPlaneRefusesImpostors: whatever answers at an enrolled node's
// address without that node's certificate from the control plane's CA — no
// TLS at all, a self-signed certificate, one from another CA, an expired
// one — is refused: the node turns UNREACHABLE with a reason that says
// what is wrong and what to do.
func TestControlPlaneRefusesImpostors(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	a.Stop()

	for _, tt := range []struct {
		name string
		cert *tls.Certificate
		want string
	}{
		{"no TLS (h2c)", nil, "does not speak TLS"},
		{"another CA", nodeCert(t, otherCA(t), a.NodeID, time.Now(), time.Hour), "not from this control plane's CA"},
		{"expired", nodeCert(t, s.CA, a.NodeID, time.Now().Add(-2*time.Hour), time.Hour), "expired at"},
		{"self-signed", selfSignedCert(t), "holds a certificate of no node"},
		{"another node of the same CA", nodeCert(t, s.CA, "node-other", time.Now(), time.Hour), "holds the certificate of node node-other"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stop := impostor(t, a.Addr, tt.cert)
			defer stop()
			quarrytest.Eventually(t, 10*time.Second, func() error {
				n, err := getNode(t.Context(), s, a.NodeID)
				if err != nil {
					return err
				}
				if n.GetState() != quarryv1.NodeState_NODE_STATE_UNREACHABLE || !strings.Contains(n.GetStateReason(), tt.want) ||
					!strings.Contains(n.GetStateReason(), "--join-token") {
					return fmt.Errorf("node is %v: %q, want UNREACHABLE: ...%s...--join-token", n.GetState(), n.GetStateReason(), tt.want)
				}
				return nil
			})
		})
	}

	a.Start()
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
}

// selfSignedCert is a self-signed certificate naming no node.
func selfSignedCert(t *testing.T) *tls.Certificate {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, _, err := pki.LoadOrCreateCA(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	c.Leaf = ca.Certificate()
	return &c
}

// TestAgentRefusesStrangers: a process without the control plane's client
// certificate gets nothing from an agent: no certificate, another CA's, an
// expired one, a valid agent certificate from the same CA, or plain HTTP.
func TestAgentRefusesStrangers(t *testing.T) {
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	p := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "n1"})
	// Another enrolled agent's own certificate and key, as it keeps them.
	other := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n2"})
	pemFile := filepath.Join(other.Opts.DataDir(), "agent.pem")
	agentCert, err := tls.LoadX509KeyPair(pemFile, pemFile)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := s.CA.IssueControlPlane(time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA(t).IssueControlPlane(time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		cert *tls.Certificate
		// node: another node of the cluster, whose handshake succeeds
		// (for the peer endpoint) and whose calls are refused (403).
		node bool
	}{
		{"no certificate", &tls.Certificate{}, false},
		{"another CA's control plane", foreign, false},
		{"an expired control plane certificate", expired, false},
		{"a valid agent certificate of the same CA", &agentCert, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := s.AgentClient(t, p.NodeID, p.Addr, tt.cert)
			_, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
			if err == nil {
				t.Error("GetFacts answered")
			} else if tt.node && connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("GetFacts as another node: %v; want permission_denied", err)
			}
			if _, err := c.InitPool(t.Context(), connect.NewRequest(&agentv1.InitPoolRequest{
				Pool: &agentv1.PoolRef{Id: "p", Name: "p", Path: "/srv/p"}})); err == nil {
				t.Error("InitPool answered")
			}
			if tt.node {
				return
			}
			// The refusal is the agent's, in the handshake: TLS 1.3 tells
			// the client at its first read.
			cfg := pki.NodeClientTLS(p.NodeID, s.CA.Pool(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tt.cert, nil })
			conn, err := tls.Dial("tcp", p.Addr, cfg)
			if err == nil {
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "remote error: tls") {
				t.Errorf("handshake: %v, want the agent's refusal", err)
			}
		})
	}
	t.Run("plain HTTP", func(t *testing.T) {
		for _, h2c := range []bool{false, true} {
			pr := new(http.Protocols)
			pr.SetHTTP1(!h2c)
			pr.SetUnencryptedHTTP2(h2c)
			tr := &http.Transport{Protocols: pr}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + p.Addr + "/healthz")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK || strings.Contains(string(body), "ok") {
					t.Errorf("plain GET /healthz (h2c %v) answered %s %q", h2c, resp.Status, body)
				}
			}
		}
	})
	t.Run("the control plane", func(t *testing.T) {
		if _, err := s.AgentClient(t, p.NodeID, p.Addr, nil).GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{})); err != nil {
			t.Fatalf("GetFacts with the control plane's certificate: %v", err)
		}
	})
}

// runAgent runs `quarry agent` to enroll as name and returns what it did:
// refused enrollments exit at once. A process that enrolls is stopped.
func runAgent(t *testing.T, s *quarrytest.Server, dataDir string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	args = append([]string{"agent", "--listen", "127.0.0.1:0", "--fs-root", t.TempDir(), "--data-dir", dataDir, "--server", s.URL}, args...)
	cmd := exec.CommandContext(ctx, quarrytest.Binary(t), args...)
	cmd.Env = append(os.Environ(), "QUARRY_JOIN_TOKEN=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("quarry agent %s still ran after 20 s:\n%s", strings.Join(args, " "), r.stderr)
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// TestJoinTokens: an agent whose join token is reused (single-use),
// expired, revoked, not a join token, or whose --ca-hash does not match is
// refused with a sentence that says why and what to do, and nothing is
// registered or saved.
func TestJoinTokens(t *testing.T) {
	s := quarrytest.StartServer(t)
	ctx := t.Context()
	createJoin := func(singleUse bool) *quarryv1.CreateTokenResponse {
		resp, err := s.Tokens.CreateToken(ctx, connect.NewRequest(&quarryv1.CreateTokenRequest{
			Kind: quarryv1.TokenKind_TOKEN_KIND_JOIN, SingleUse: singleUse, Name: "join"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}

	single := createJoin(true)
	if single.GetCaHash() != s.CA.Hash() {
		t.Fatalf("CreateToken returned CA hash %q, want the CA's %s", single.GetCaHash(), s.CA.Hash())
	}
	first := quarrytest.StartAgentProcess(t, quarrytest.Binary(t), s, quarrytest.AgentOptions{
		Name: "first", JoinToken: single.GetSecret(), CAHash: single.GetCaHash()})
	waitState(t, s, first.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)

	revoked := createJoin(false)
	if err := s.Store.RevokeToken(ctx, revoked.GetToken().GetId(), time.Now()); err != nil {
		t.Fatal(err)
	}
	good := createJoin(false)

	for _, tt := range []struct {
		name   string
		token  string
		caHash string
		want   []string
	}{
		{"single-use token reused", single.GetSecret(), "", []string{"join token refused", "single-use and has been used", "quarry token create --join"}},
		{"expired token", s.JoinToken(t, false, -time.Minute), "", []string{"join token refused", "expired at", "quarry token create --join"}},
		{"revoked token", revoked.GetSecret(), "", []string{"join token refused", "was revoked", "quarry token create --join"}},
		{"API token", s.AdminToken, "", []string{"join token refused", "cannot be used here"}},
		{"not a token", "qj_nothing", "", []string{"join token refused", "not a Quarry token"}},
		{"wrong CA hash", good.GetSecret(), otherCA(t).Hash(), []string{"not the --ca-hash", "refusing to enroll"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			args := []string{"--join-token", tt.token, "--name", "n2"}
			if tt.caHash != "" {
				args = append(args, "--ca-hash", tt.caHash)
			}
			r := runAgent(t, s, data, args...)
			if r.code != 1 || !strings.Contains(r.stderr, "\nerror: ") && !strings.HasPrefix(r.stderr, "error: ") {
				t.Fatalf("quarry agent: exit %d, want 1 with an error\n%s", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error %q\nlacks %q", r.stderr, w)
				}
			}
			if _, err := s.Store.GetNodeByName(ctx, "n2"); err == nil {
				t.Error("node n2 was registered")
			}
			if _, err := os.Stat(filepath.Join(data, "agent.pem")); !os.IsNotExist(err) {
				t.Errorf("the refused agent saved a certificate: %v", err)
			}
		})
	}
	if tok, err := s.Store.GetToken(ctx, good.GetToken().GetId()); err != nil || tok.UseCount != 0 {
		t.Errorf("a join token sent nowhere was used %d times (%v)", tok.UseCount, err)
	}

	t.Run("bad requests", func(t *testing.T) {
		// Straight to the RPC, as anyone may call it: no bearer token.
		key, _ := pki.NewKey()
		csr, _ := pki.CreateCSR(key, "x")
		enroll := s.Anonymous().Enrollment
		for _, tt := range []struct {
			name string
			req  *quarryv1.EnrollRequest
			code connect.Code
			want string
		}{
			{"new node without address", &quarryv1.EnrollRequest{JoinToken: good.GetSecret(), NodeName: "n3", CsrPem: string(csr)},
				connect.CodeInvalidArgument, "--advertise"},
			{"bad name", &quarryv1.EnrollRequest{JoinToken: good.GetSecret(), NodeName: "a/b", ManagementAddress: "10.0.0.3", CsrPem: string(csr)},
				connect.CodeInvalidArgument, "use only letters"},
			{"no CSR", &quarryv1.EnrollRequest{JoinToken: good.GetSecret(), NodeName: "n3", ManagementAddress: "10.0.0.3"},
				connect.CodeInvalidArgument, "CERTIFICATE REQUEST"},
			{"address of another node", &quarryv1.EnrollRequest{JoinToken: good.GetSecret(), NodeName: "n3", ManagementAddress: first.Addr, CsrPem: string(csr)},
				connect.CodeAlreadyExists, `node "first" already has the management address`},
			{"no token", &quarryv1.EnrollRequest{NodeName: "n3", ManagementAddress: "10.0.0.3", CsrPem: string(csr)},
				connect.CodeUnauthenticated, "join token refused"},
		} {
			_, err := enroll.Enroll(ctx, connect.NewRequest(tt.req))
			if connect.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want %v with %q", tt.name, err, tt.code, tt.want)
			}
		}
		nodes, err := s.Store.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 1 || nodes[0].Name != "first" {
			t.Errorf("nodes after refused enrollments: %v, want only first", nodes)
		}
		if tok, err := s.Store.GetToken(ctx, good.GetToken().GetId()); err != nil || tok.UseCount != 0 {
			t.Errorf("refused requests used the token %d times (%v)", tok.UseCount, err)
		}
	})
}

// TestEnrollTour follows the README: an admin makes a join token with the
// CLI, and a new agent enrolls with what it printed; the node turns READY.
// Its second start needs no token.
func TestEnrollTour(t *testing.T) {
	s := quarrytest.StartServer(t)
	useToken(s.URL, s.AdminToken)
	var created quarryv1.CreateTokenResponse
	if err := quarryJSON(t, s.URL, &created, "token", "create", "--join", "--single-use", "--ttl", "10m"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := auth.Parse(created.GetSecret()); err != nil || created.GetCaHash() != s.CA.Hash() {
		t.Fatalf("token create --join printed secret %q (%v) and CA hash %q, want the CA's %s",
			created.GetSecret(), err, created.GetCaHash(), s.CA.Hash())
	}
	p := quarrytest.StartAgentProcess(t, quarrytest.Binary(t), s, quarrytest.AgentOptions{
		Name: "n2", JoinToken: created.GetSecret(), CAHash: created.GetCaHash()})
	n := waitState(t, s, p.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	if n.GetName() != "n2" || n.GetManagementAddress() != p.Addr {
		t.Errorf("enrolled node %s at %s, want n2 at %s", n.GetName(), n.GetManagementAddress(), p.Addr)
	}
	for _, f := range []string{"agent.pem", "ca.pem"} {
		fi, err := os.Stat(filepath.Join(p.Opts.DataDir(), f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", f, err)
		}
	}
	fi, err := os.Stat(filepath.Join(s.DataDir, "ca", "ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the CA key: %v, want mode 0600", err)
	}

	// The single-use token is spent; the agent's restart does not need it.
	p.Kill()
	waitState(t, s, p.NodeID, quarryv1.NodeState_NODE_STATE_UNREACHABLE, 10*time.Second)
	p.Start()
	waitState(t, s, p.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
}
