package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/pki"
)

// TestRefusesStrangers: a process without the control plane's client
// certificate gets nothing from an agent, not even /healthz; another node
// of the cluster gets through TLS (for the peer endpoint) but is refused
// everything else.
func TestRefusesStrangers(t *testing.T) {
	a := startAgent(t, Config{FSRoot: t.TempDir()})
	other := newTestCA(t)
	otherAgent := t.TempDir()
	writeIdentity(t, a.ca, otherAgent, "node-other", time.Now(), time.Hour)
	sameCAAgent, err := loadIdentity(otherAgent)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := a.ca.IssueControlPlane(time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		cert *tls.Certificate
		node bool // a node of the cluster: TLS passes, the handler refuses
	}{
		{"no certificate", nil, false},
		{"another CA's control plane", controlPlane(t, other), false},
		{"an expired control plane certificate", expired, false},
		{"another agent of the same CA", sameCAAgent.cert, true},
		{"the agent's own certificate", a.Agent.id.Load().cert, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, h2 := range []bool{false, true} {
				hc := httpClient(t, a.clientTLS(tt.cert), h2)
				if resp, err := hc.Get(a.url + "/healthz"); err == nil {
					resp.Body.Close()
					if !tt.node || resp.StatusCode != http.StatusForbidden {
						t.Errorf("GET /healthz (h2 %v) answered %s", h2, resp.Status)
					}
				} else if tt.node {
					t.Errorf("GET /healthz (h2 %v) as a node: %v; want 403 Forbidden", h2, err)
				}
				c := agentv1connect.NewAgentServiceClient(hc, a.url)
				_, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
				switch {
				case err == nil:
					t.Errorf("GetFacts (h2 %v) answered", h2)
				case tt.node && connect.CodeOf(err) != connect.CodePermissionDenied:
					t.Errorf("GetFacts (h2 %v) as a node: %v; want permission_denied", h2, err)
				default:
					t.Logf("h2 %v: %v", h2, err)
				}
			}
		})
	}
	t.Run("plain HTTP", func(t *testing.T) {
		url := strings.Replace(a.url, "https://", "http://", 1)
		for _, p := range []protocol{{name: "http1"}, {name: "h2c", h2: true}} {
			protos := new(http.Protocols)
			if p.h2 {
				protos.SetUnencryptedHTTP2(true)
			} else {
				protos.SetHTTP1(true)
			}
			tr := &http.Transport{Protocols: protos}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url + "/healthz")
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s GET /healthz answered %s; want no answer", p.name, resp.Status)
			}
		}
		// Not even a 400: the connection closes without a byte.
		c, err := net.Dial("tcp", strings.TrimPrefix(a.url, "https://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if out, err := io.ReadAll(c); len(out) > 0 || err != nil {
			t.Errorf("plain HTTP on the agent port: read %q, %v; want the connection closed without an answer", out, err)
		}
	})
	t.Run("the control plane", func(t *testing.T) {
		if _, err := protocols[1].client(t, a).GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{})); err != nil {
			t.Fatalf("GetFacts as the control plane: %v", err)
		}
	})
}

func TestNotEnrolled(t *testing.T) {
	a, err := New(Config{FSRoot: t.TempDir(), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Serve(t.Context(), ln)
	if err == nil || !strings.Contains(err.Error(), "not enrolled") || !strings.Contains(err.Error(), "--join-token") {
		t.Fatalf("Serve without a certificate = %v, want advice to enroll with --join-token", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener still accepts connections")
	}
}

// enrollServer is the enrollment endpoint of a control plane, signing with
// its CA: enough to test the agent's side of enrollment. The real one is
// tested end to end in internal/e2e.
type enrollServer struct {
	quarryv1connect.UnimplementedEnrollmentServiceHandler
	ca      *pki.CA
	ttl     time.Duration
	calls   atomic.Int32
	lastReq atomic.Pointer[quarryv1.EnrollRequest]
	url     string
}

func (s *enrollServer) Enroll(_ context.Context, req *connect.Request[quarryv1.EnrollRequest]) (*connect.Response[quarryv1.EnrollResponse], error) {
	s.calls.Add(1)
	s.lastReq.Store(req.Msg)
	if req.Msg.GetJoinToken() != "good" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("join token refused: unknown or wrong token"))
	}
	csr, err := pki.ParseCSR([]byte(req.Msg.GetCsrPem()))
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	cert, err := s.ca.SignNode(csr, "node-"+req.Msg.GetNodeName(), s.ttl, time.Now())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&quarryv1.EnrollResponse{
		NodeId: "node-" + req.Msg.GetNodeName(), CertificatePem: string(pki.EncodeCert(cert)), CaPem: string(s.ca.PEM()),
	}), nil
}

func startEnrollServer(t *testing.T) *enrollServer {
	t.Helper()
	s := &enrollServer{ca: newTestCA(t), ttl: time.Hour}
	mux := http.NewServeMux()
	mux.Handle(quarryv1connect.NewEnrollmentServiceHandler(s))
	mux.HandleFunc("GET /ca.crt", func(w http.ResponseWriter, _ *http.Request) { w.Write(s.ca.PEM()) })
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

// serveAgent enrolls a if it needs to, as Serve does first (TestNotEnrolled
// covers that Serve does), then serves it until the test ends. It returns
// the agent's address.
func serveAgent(t *testing.T, a *Agent) (string, error) {
	t.Helper()
	addr, _, err := serveAgentStop(t, a)
	return addr, err
}

// serveAgentStop is serveAgent that also returns a function that stops the
// agent before the test ends.
func serveAgentStop(t *testing.T, a *Agent) (string, func(), error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ensureEnrolled(t.Context(), ln.Addr()); err != nil {
		ln.Close()
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop, nil
}

func TestEnroll(t *testing.T) {
	s := startEnrollServer(t)
	quiet := slog.New(slog.NewTextHandler(t.Output(), nil))

	t.Run("enrolls, saves and serves", func(t *testing.T) {
		data := t.TempDir()
		a, err := New(Config{FSRoot: t.TempDir(), DataDir: data, Logger: quiet, Enrollment: Enrollment{
			Server: s.url, JoinToken: "good", Name: "n1", CAHash: s.ca.Hash()}})
		if err != nil {
			t.Fatal(err)
		}
		addr, stop, err := serveAgentStop(t, a)
		if err != nil {
			t.Fatal(err)
		}
		if a.NodeID() != "node-n1" || a.CAHash() != s.ca.Hash() {
			t.Errorf("enrolled as %q with CA %s", a.NodeID(), a.CAHash())
		}
		req := s.lastReq.Load()
		if req.GetNodeName() != "n1" || req.GetManagementAddress() != addr {
			t.Errorf("enrolled with name %q address %q; want n1 and the listen address %s", req.GetNodeName(), req.GetManagementAddress(), addr)
		}
		for _, f := range []string{identityFile, caFile} {
			fi, err := os.Stat(filepath.Join(data, f))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
			}
		}
		ta := &testAgent{Agent: a, url: "https://" + addr, ca: s.ca, nodeID: a.NodeID()}
		if _, err := protocols[2].client(t, ta).GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{})); err != nil {
			t.Fatalf("GetFacts after enrolling: %v", err)
		}

		// A later start needs no token and does not enroll again.
		stop()
		calls := s.calls.Load()
		again, err := New(Config{FSRoot: t.TempDir(), DataDir: data, Logger: quiet, Enrollment: Enrollment{Server: s.url, JoinToken: "good", Name: "n1"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := serveAgent(t, again); err != nil {
			t.Fatal(err)
		}
		if again.NodeID() != "node-n1" || s.calls.Load() != calls {
			t.Errorf("restart: node %q, %d more enrollments; want node-n1 and none", again.NodeID(), s.calls.Load()-calls)
		}
	})

	t.Run("wrong CA hash", func(t *testing.T) {
		calls := s.calls.Load()
		pin := newTestCA(t).Hash()
		a, err := New(Config{FSRoot: t.TempDir(), DataDir: t.TempDir(), Logger: quiet, Enrollment: Enrollment{
			Server: s.url, JoinToken: "good", Name: "n2", CAHash: pin}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = serveAgent(t, a)
		if err == nil || !strings.Contains(err.Error(), "not the --ca-hash "+pin) || !strings.Contains(err.Error(), "refusing to enroll") {
			t.Fatalf("Serve with a wrong pin = %v", err)
		}
		if s.calls.Load() != calls {
			t.Error("the token was sent to a control plane whose CA does not match the pin")
		}
	})

	t.Run("refused token", func(t *testing.T) {
		a, err := New(Config{FSRoot: t.TempDir(), DataDir: t.TempDir(), Logger: quiet, Enrollment: Enrollment{
			Server: s.url, JoinToken: "bad", Name: "n3", Advertise: "10.0.0.3"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = serveAgent(t, a)
		if err == nil || !strings.Contains(err.Error(), `refused to enroll this agent as node "n3": join token refused`) {
			t.Fatalf("Serve with a refused token = %v", err)
		}
		if got := s.lastReq.Load().GetManagementAddress(); got != "10.0.0.3" {
			t.Errorf("advertised %q, want the --advertise address 10.0.0.3", got)
		}
	})

	t.Run("expired certificate", func(t *testing.T) {
		data := t.TempDir()
		writeIdentity(t, s.ca, data, "node-n4", time.Now().Add(-2*time.Hour), time.Hour)
		a, err := New(Config{FSRoot: t.TempDir(), DataDir: data, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := serveAgent(t, a); err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "--join-token") {
			t.Fatalf("Serve with an expired certificate and no token = %v", err)
		}
		a, err = New(Config{FSRoot: t.TempDir(), DataDir: data, Logger: quiet, Enrollment: Enrollment{Server: s.url, JoinToken: "good", Name: "n4"}})
		if err != nil {
			t.Fatal(err)
		}
		old := a.Certificate()
		if _, err := serveAgent(t, a); err != nil {
			t.Fatalf("re-enrolling: %v", err)
		}
		if pki.Serial(a.Certificate()) == pki.Serial(old) || time.Now().After(a.Certificate().NotAfter) {
			t.Error("the expired certificate was kept")
		}
	})

	t.Run("bad settings", func(t *testing.T) {
		for _, tt := range []struct {
			e    Enrollment
			want string
		}{
			{Enrollment{JoinToken: "good", Name: "x"}, "--server URL"},
			{Enrollment{Server: "ftp://x", JoinToken: "good", Name: "x"}, "http:// or https://"},
			{Enrollment{Server: s.url, JoinToken: "good"}, "--name NODE"},
			{Enrollment{Server: s.url, JoinToken: "good", Name: "x", CAHash: "abc"}, "sha256:<64 hex digits>"},
		} {
			a, err := New(Config{FSRoot: t.TempDir(), DataDir: t.TempDir(), Logger: quiet, Enrollment: tt.e})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Enroll(t.Context(), tt.e.JoinToken, ""); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Enroll(%+v) = %v, want %q", tt.e, err, tt.want)
			}
		}
	})
}

// TestRenewCertificate: CreateCSR and InstallCertificate swap the agent's
// certificate without a restart: the next handshake presents the new one,
// and the file holds it.
func TestRenewCertificate(t *testing.T) {
	a := startAgent(t, Config{FSRoot: t.TempDir()})
	c := protocols[2].client(t, a)
	old := a.Certificate()

	install := func(cert *x509.Certificate) error {
		_, err := c.InstallCertificate(t.Context(), connect.NewRequest(&agentv1.InstallCertificateRequest{CertificatePem: string(pki.EncodeCert(cert))}))
		return err
	}
	csr := func() []byte {
		resp, err := c.CreateCSR(t.Context(), connect.NewRequest(&agentv1.CreateCSRRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(resp.Msg.GetCsrPem())
	}

	if err := install(old); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("install with nothing pending = %v, want failed_precondition", err)
	}

	pending := csr()
	other, _ := pki.NewKey()
	for _, tt := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"another key", signCSR(t, a.ca, mustCSR(t, other), a.nodeID, time.Now(), time.Hour), "not for the pending key"},
		{"another node", signCSR(t, a.ca, pending, "node-else", time.Now(), time.Hour), "names node node-else"},
		{"another CA", signCSR(t, newTestCA(t), pending, a.nodeID, time.Now(), time.Hour), "does not chain"},
		{"expired", signCSR(t, a.ca, pending, a.nodeID, time.Now().Add(-2*time.Hour), time.Hour), "check the clocks"},
	} {
		if err := install(tt.cert); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("install %s = %v, want invalid_argument %q", tt.name, err, tt.want)
		}
	}
	next := signCSR(t, a.ca, pending, a.nodeID, time.Now(), 2*time.Hour)
	if err := install(next); err != nil {
		t.Fatalf("install: %v", err)
	}
	if err := install(next); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("installing twice = %v, want failed_precondition", err)
	}

	// A new connection sees the new certificate.
	var served *x509.Certificate
	cfg := a.clientTLS(controlPlane(t, a.ca))
	cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
		served = chains[0][0]
		return nil
	}
	if _, err := agentv1connect.NewAgentServiceClient(httpClient(t, cfg, true), a.url).
		GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{})); err != nil {
		t.Fatal(err)
	}
	if served == nil || pki.Serial(served) != pki.Serial(next) {
		t.Errorf("the agent serves %v, want the installed certificate %s", served, pki.Serial(next))
	}
	saved, err := loadIdentity(a.cfg.DataDir)
	if err != nil || pki.Serial(saved.cert.Leaf) != pki.Serial(next) {
		t.Errorf("the data directory holds %v (%v), want the installed certificate", saved, err)
	}
}
