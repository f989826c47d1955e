package nodelink_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestRenewal: with 3 s certificates the link renews the agent's before it
// expires, the agent serves the new one, and the node stays READY past the
// first certificate's expiry without a moment in another state.
func TestRenewal(t *testing.T) {
	const ttl = 3 * time.Second
	s := quarrytest.StartServer(t, quarrytest.WithAgentCertTTL(ttl))
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	ctx := t.Context()
	first, err := s.Store.GetNode(ctx, a.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	// Certificates keep whole seconds.
	if d := first.Certificate.NotAfter.Sub(first.Certificate.IssuedAt); d <= ttl-time.Second || d > ttl {
		t.Fatalf("the enrolled certificate lasts %v, want %v", d, ttl)
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		n, err := s.Store.GetNode(ctx, a.NodeID)
		if err == nil && n.State != store.NodeReady {
			err = fmt.Errorf("node is %s: %s", n.State, n.StateReason)
		}
		return err
	})

	// Watch every state until well past the first certificate's expiry.
	serials := map[string]bool{first.Certificate.Serial: true}
	for until := first.Certificate.NotAfter.Add(2 * time.Second); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
		n, err := s.Store.GetNode(ctx, a.NodeID)
		if err != nil {
			t.Fatal(err)
		}
		if n.State != store.NodeReady {
			t.Fatalf("node turned %s (%s) at %v, %v after the first certificate's expiry",
				n.State, n.StateReason, time.Now().Format(time.RFC3339Nano), time.Since(first.Certificate.NotAfter))
		}
		serials[n.Certificate.Serial] = true
	}
	last, err := s.Store.GetNode(ctx, a.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	if last.Certificate.Serial == first.Certificate.Serial || len(serials) < 2 {
		t.Fatalf("the certificate was never renewed: serials %v", serials)
	}
	if !last.Certificate.NotAfter.After(time.Now()) {
		t.Errorf("the current certificate expired at %v", last.Certificate.NotAfter)
	}
	t.Logf("%d certificates over %v", len(serials), time.Since(first.Certificate.IssuedAt).Round(time.Millisecond))

	// What the agent serves and keeps is what the control plane recorded
	// (or a newer one, if a renewal happened in between).
	served := servedCert(t, s, a)
	if pki.Serial(served) == first.Certificate.Serial || !time.Now().Before(served.NotAfter) {
		t.Errorf("the agent serves certificate %s expiring %v", pki.Serial(served), served.NotAfter)
	}
	data, err := os.ReadFile(filepath.Join(a.Opts.DataDir(), "agent.pem"))
	if err != nil {
		t.Fatal(err)
	}
	saved, err := pki.ParseCert(data)
	if err != nil || !serials[pki.Serial(saved)] || pki.Serial(saved) == first.Certificate.Serial {
		t.Errorf("the agent saved certificate %v (%v), want a renewed one", pki.Serial(saved), err)
	}

	// A restarted agent comes back with the renewed certificate, no token.
	a.Restart()
	quarrytest.Eventually(t, 10*time.Second, func() error {
		n, err := s.Store.GetNode(ctx, a.NodeID)
		if err == nil && n.State != store.NodeReady {
			err = fmt.Errorf("node is %s: %s", n.State, n.StateReason)
		}
		return err
	})
}

// servedCert dials the agent as the control plane and returns the
// certificate it presents.
func servedCert(t *testing.T, s *quarrytest.Server, a *quarrytest.Agent) *x509.Certificate {
	t.Helper()
	cp := s.ControlPlaneCert(t)
	cfg := pki.NodeClientTLS(a.NodeID, s.CA.Pool(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cp, nil })
	c, err := tls.Dial("tcp", a.Addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestNotEnrolled: a node registered by address is not dialed until its
// agent enrolls; it says "not enrolled" and how to enroll it, and an
// operation that needs it gets that sentence. Once the agent enrolls under
// the node's name, the node is READY.
func TestNotEnrolled(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.NewAgent(t, s, quarrytest.AgentOptions{Name: "n1"})

	// Something listens at the address, counting connections: the link
	// must make none.
	ln, err := net.Listen("tcp", a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	reg, err := s.Nodes.RegisterNode(t.Context(), connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "n1", ManagementAddress: a.Addr}))
	if err != nil {
		t.Fatal(err)
	}
	id := reg.Msg.GetNode().GetId()
	want := "not enrolled: start its agent with --server URL --join-token TOKEN (make one with quarry token create --join)"
	quarrytest.Eventually(t, 10*time.Second, func() error {
		n, err := s.Store.GetNode(t.Context(), id)
		if err == nil && (n.State != store.NodeUnknown || n.StateReason != want) {
			err = fmt.Errorf("node is %s: %q", n.State, n.StateReason)
		}
		return err
	})
	// Several health intervals, and a lazy connect, dial nothing.
	mkdir(t, a.Opts.LocalPath("/srv/isos"))
	_, err = s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{id}}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Placement.Choose(t.Context(), poolID(t, s, "isos"))
	if err == nil || !strings.Contains(err.Error(), "not enrolled") || !strings.Contains(err.Error(), "--join-token") {
		t.Errorf("Choose with the only node not enrolled = %v, want it to say so", err)
	}
	time.Sleep(5 * quarrytest.HealthInterval)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the link dialed a node that is not enrolled %d times", n)
	}
	if n, _ := s.Store.GetNode(t.Context(), id); !n.LastCheckedAt.IsZero() {
		t.Errorf("a node that is not enrolled has a last check at %v", n.LastCheckedAt)
	}
	ln.Close()

	a.Start()
	if a.NodeID != id {
		t.Fatalf("the agent enrolled as %s, want the registered node %s", a.NodeID, id)
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		n, err := s.Store.GetNode(t.Context(), id)
		if err == nil && (n.State != store.NodeReady || n.StateReason != "") {
			err = fmt.Errorf("node is %s: %q", n.State, n.StateReason)
		}
		return err
	})
	// The pool that waited for the node is initialized through it.
	quarrytest.Eventually(t, 10*time.Second, func() error {
		_, err := os.Stat(a.Opts.LocalPath("/srv/isos/.quarry/pool.json"))
		return err
	})
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func poolID(t *testing.T, s *quarrytest.Server, name string) string {
	t.Helper()
	p, err := s.Store.GetPoolByName(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID
}

// TestClientNotEnrolled: Link.Client refuses a node that is not enrolled
// with ErrNotEnrolled, rather than dialing it.
func TestClientNotEnrolled(t *testing.T) {
	s := quarrytest.StartServer(t)
	reg, err := s.Nodes.RegisterNode(t.Context(), connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "n1", ManagementAddress: "10.0.0.5"}))
	if err != nil {
		t.Fatal(err)
	}
	l := nodelink.New(nodelink.Config{Store: s.Store, Logger: quarrytest.Logger(t)})
	_, _, err = l.Client(t.Context(), reg.Msg.GetNode().GetId())
	if !errors.Is(err, nodelink.ErrNotEnrolled) {
		t.Fatalf("Client of a node that is not enrolled = %v, want ErrNotEnrolled", err)
	}
}
