package nodelink

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/pki"
)

// TestTLSReasons: every way a handshake with an agent fails becomes a state
// reason that says what happened and what to do, from the error the real
// client returns.
func TestTLSReasons(t *testing.T) {
	now := time.Now()
	ca := newCA(t, now.Add(-24*time.Hour))
	other := newCA(t, now.Add(-24*time.Hour))
	cp, err := ca.IssueControlPlane(time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		// serve configures the server; nil serves plain HTTP.
		serve *tls.Config
		want  []string
	}{
		{"plain HTTP", nil, []string{"does not speak TLS", "--join-token"}},
		{"another CA", serverTLS(leaf(t, other, "node-a", now, time.Hour), ca), []string{"not from this control plane's CA", "--join-token"}},
		{"expired", serverTLS(leaf(t, ca, "node-a", now.Add(-2*time.Hour), time.Hour), ca), []string{"expired at", "--join-token"}},
		{"another node", serverTLS(leaf(t, ca, "node-b", now, time.Hour), ca), []string{"holds the certificate of node node-b", "quarry node update"}},
		{"trusts another CA", serverTLS(leaf(t, ca, "node-a", now, time.Hour), other),
			[]string{"the agent refused the control plane's certificate", "--join-token"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.NewServeMux()
			h.Handle(agentv1connect.NewAgentServiceHandler(agentv1connect.UnimplementedAgentServiceHandler{}))
			srv := httptest.NewUnstartedServer(h)
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
			if tt.serve != nil {
				srv.TLS = tt.serve
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			tr := &http.Transport{TLSClientConfig: pki.NodeClientTLS("node-a", ca.Pool(),
				func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cp, nil })}
			defer tr.CloseIdleConnections()
			addr := strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://")
			c := agentv1connect.NewAgentServiceClient(&http.Client{Transport: tr}, "https://"+addr)
			_, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
			if err == nil {
				t.Fatal("the call succeeded")
			}
			r := reason(err)
			for _, w := range tt.want {
				if !strings.Contains(r, w) {
					t.Errorf("reason %q\nlacks %q (error: %v)", r, w, err)
				}
			}
		})
	}
}

func newCA(t *testing.T, at time.Time) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(at)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func leaf(t *testing.T, ca *pki.CA, nodeID string, at time.Time, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key, _ := pki.NewKey()
	csrPEM, _ := pki.CreateCSR(key, nodeID)
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

// serverTLS serves cert and accepts clients of the CA trusted.
func serverTLS(cert *tls.Certificate, trusted *pki.CA) *tls.Config {
	return pki.AgentServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }, trusted.Pool())
}

// TestAgentWithoutHTTP2: the link speaks HTTP/2 only, and a node whose
// server does not is refused with a reason that says so and what to do,
// whether it offers other protocols or names none.
func TestAgentWithoutHTTP2(t *testing.T) {
	ca := newCA(t, time.Now().Add(-time.Hour))
	cert := leaf(t, ca, "node-a", time.Now(), time.Hour)
	for name, protos := range map[string][]string{"HTTP/1.1 only": {"http/1.1"}, "no protocol named": nil} {
		t.Run(name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: protos})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.(*tls.Conn).Handshake() //nolint:errcheck // the client's side is under test
					c.Close()
				}
			}()
			l := New(Config{})
			l.byKey["node-a"] = &conn{addr: ln.Addr().String(), connectTimeout: 5 * time.Second,
				tls: func() *tls.Config {
					return pki.NodeClientTLS("node-a", ca.Pool(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
				}}
			c, err := l.dialNode(t.Context(), "tcp", "node-a")
			if err == nil {
				c.Close()
				t.Fatal("the link dialed a node that does not speak HTTP/2")
			}
			if r := reason(err); !strings.Contains(r, "does not speak HTTP/2") || !strings.Contains(r, "upgrade it") {
				t.Errorf("reason %q (error %v), want that the agent does not speak HTTP/2 and what to do", r, err)
			}
		})
	}
}

// TestLostConnectionReason: a call that went out on a connection the agent
// closed fails as the client reported it in CI ("canceled: Post …: write:
// broken pipe"); its reason says the agent closed the connection instead.
func TestLostConnectionReason(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPIPE, syscall.ECONNRESET} {
		err := connect.NewError(connect.CodeCanceled, &url.Error{Op: "Post", URL: "https://agent.invalid/quarry.agent.v1.AgentService/DeleteFile",
			Err: &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)}})
		got := agentError(err)
		if want := "the agent closed the connection (it stopped or restarted, or the network dropped it; see that the agent runs and is reachable): " + errno.Error(); got.Error() != want {
			t.Errorf("%v: reason %q, want %q", errno, got, want)
		}
		if !errors.Is(got, errno) {
			t.Errorf("%v: the cause is lost: %v", errno, got)
		}
	}
}
