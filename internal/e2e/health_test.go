package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// register adds a node through the API and returns its id.
func register(t *testing.T, s *quarrytest.Server, name, addr string) string {
	t.Helper()
	resp, err := s.Nodes.RegisterNode(t.Context(), connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: name, ManagementAddress: addr}))
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	return resp.Msg.GetNode().GetId()
}

func getNode(ctx context.Context, s *quarrytest.Server, id string) (*quarryv1.Node, error) {
	resp, err := s.Nodes.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetNode(), nil
}

// waitState polls until the node is in state, returning it.
func waitState(t *testing.T, s *quarrytest.Server, id string, state quarryv1.NodeState, within time.Duration) *quarryv1.Node {
	t.Helper()
	var n *quarryv1.Node
	quarrytest.Eventually(t, within, func() error {
		var err error
		if n, err = getNode(t.Context(), s, id); err != nil {
			return err
		}
		if n.GetState() != state {
			return fmt.Errorf("node %s is %v (%s), want %v", n.GetName(), n.GetState(), n.GetStateReason(), state)
		}
		return nil
	})
	return n
}

// TestNodeHealthKillAndRestart runs three agent processes, kills one with
// SIGKILL and restarts it: its node turns UNREACHABLE within three health
// intervals with the error, and READY again with nobody re-registering it.
func TestNodeHealthKillAndRestart(t *testing.T) {
	const interval = 300 * time.Millisecond
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval))
	var agents []*quarrytest.AgentProcess
	var ids []string
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		a := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: name})
		agents = append(agents, a)
		ids = append(ids, a.NodeID) // registered by its enrollment
	}
	for i, id := range ids {
		n := waitState(t, s, id, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
		if n.GetHostname() != fmt.Sprintf("n%d", i+1) || n.GetAgentVersion() == "" {
			t.Errorf("node facts: hostname %q, version %q", n.GetHostname(), n.GetAgentVersion())
		}
	}

	agents[1].Kill()
	killed := time.Now()
	n := waitState(t, s, ids[1], quarryv1.NodeState_NODE_STATE_UNREACHABLE, 3*interval)
	t.Logf("UNREACHABLE %v after the kill: %s", time.Since(killed).Round(time.Millisecond), n.GetStateReason())
	if !strings.Contains(n.GetStateReason(), "connection refused") {
		t.Errorf("state reason %q does not give the error", n.GetStateReason())
	}
	if since := n.GetStateSince().AsTime(); since.Before(killed.Add(-time.Second)) {
		t.Errorf("state_since %v is before the kill at %v", since, killed)
	}
	for _, id := range []string{ids[0], ids[2]} {
		if n, err := getNode(t.Context(), s, id); err != nil || n.GetState() != quarryv1.NodeState_NODE_STATE_READY {
			t.Errorf("node %s: %v, %v; the others must stay READY", id, n.GetState(), err)
		}
	}

	agents[1].Start()
	n = waitState(t, s, ids[1], quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	if n.GetStateReason() != "" {
		t.Errorf("READY node keeps reason %q", n.GetStateReason())
	}
}

// TestNodeRegisteredBeforeAgent registers a node by address whose agent has
// not enrolled: it shows UNKNOWN, "not enrolled" with how to enroll it, and
// is never dialed; starting the agent with a join token under the node's
// name makes it READY without any other call from the operator.
func TestNodeRegisteredBeforeAgent(t *testing.T) {
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	a := quarrytest.NewAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "late"})
	id := register(t, s, "late", a.Addr)
	n := waitState(t, s, id, quarryv1.NodeState_NODE_STATE_UNKNOWN, 10*time.Second)
	quarrytest.Eventually(t, 10*time.Second, func() error {
		var err error
		if n, err = getNode(t.Context(), s, id); err != nil {
			return err
		}
		if r := n.GetStateReason(); !strings.Contains(r, "not enrolled") || !strings.Contains(r, "--join-token") ||
			!strings.Contains(r, "quarry token create --join") {
			return fmt.Errorf("node late is %v with reason %q, want not enrolled and how to enroll it", n.GetState(), r)
		}
		return nil
	})
	if n.GetLastCheckedAt() != nil {
		t.Errorf("a node whose agent never enrolled was dialed at %v", n.GetLastCheckedAt().AsTime())
	}
	a.Start()
	if a.NodeID != id {
		t.Errorf("the agent enrolled as node %s, want the registered node %s", a.NodeID, id)
	}
	n = waitState(t, s, id, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	if n.GetManagementAddress() != a.Addr {
		t.Errorf("node late is at %s, want %s", n.GetManagementAddress(), a.Addr)
	}
}

// TestNodeReadyRightAfterRestart: a node whose agent was down long enough
// for its checks to back off is READY within a second of its agent being
// back, not at the next scheduled check, because the agent says it started
// and the control plane checks the node at once.
func TestNodeReadyRightAfterRestart(t *testing.T) {
	const interval = 500 * time.Millisecond
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval), quarrytest.WithMaxBackoff(20*interval))
	a := quarrytest.StartAgentProcess(t, quarrytest.Binary(t), s, quarrytest.AgentOptions{Name: "n1"})
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)

	a.Kill()
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_UNREACHABLE, 3*interval)
	// Failed checks at 0, 0.5, 1.5 and 3.5 s: the next is due at 7.5 s.
	time.Sleep(8 * interval)

	a.Start()
	back := time.Now()
	n := waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	if took := time.Since(back); took > time.Second {
		t.Errorf("node READY %v after its agent was back, want within 1 s", took.Round(time.Millisecond))
	}
	if n.GetStateReason() != "" {
		t.Errorf("READY node keeps reason %q", n.GetStateReason())
	}
}
