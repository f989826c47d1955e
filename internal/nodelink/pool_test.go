package nodelink_test

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestConnectionsKeptPerCertificate: every node's connections share one
// transport, yet a connection verified for one certificate is never used
// for another. With the node's record pinning a certificate its agent
// does not serve, a call fails its new handshake instead of going out on
// the connection already open to the same address; pinned back, the node
// answers again; revoked, it is not dialed.
func TestConnectionsKeptPerCertificate(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	ctx := t.Context()
	l := nodelink.New(nodelink.Config{Store: s.Store, Issuer: testIssuer(t, s.CA), Logger: quarrytest.Logger(t)})
	facts := func() error {
		cctx, agents, err := l.Client(ctx, a.NodeID)
		if err != nil {
			return err
		}
		_, err = agents.GetFacts(cctx, connect.NewRequest(&agentv1.GetFactsRequest{}))
		return err
	}
	if err := facts(); err != nil {
		t.Fatal(err)
	}
	n, err := s.Store.GetNode(ctx, a.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	real := n.Certificate
	pin := func(c store.NodeCertificate) {
		t.Helper()
		if err := s.Store.SetNodeCertificate(ctx, a.NodeID, c); err != nil {
			t.Fatal(err)
		}
	}

	other := real
	other.Serial = strings.Repeat("0", len(real.Serial))
	pin(other)
	if err := facts(); err == nil || !strings.Contains(err.Error(), other.Serial) {
		t.Fatalf("a call with another certificate pinned = %v, want its handshake refused, naming the serial pinned", err)
	}

	pin(real)
	if err := facts(); err != nil {
		t.Fatalf("pinned back to the agent's certificate: %v", err)
	}

	pin(store.NodeCertificate{})
	if err := facts(); !errors.Is(err, nodelink.ErrNotEnrolled) {
		t.Fatalf("a call to a revoked node = %v, want ErrNotEnrolled", err)
	}
	pin(real)
	if err := facts(); err != nil {
		t.Fatalf("enrolled again: %v", err)
	}
}
