package e2e

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestNodeBoundEnrollment: a join token bound to a node enrolls only that
// node; a node with an enrolled agent is enrolled again only with such a
// token or with replace, which is audited; the node link accepts only the
// node's current certificate, so the replaced agent and a revoked
// certificate are refused at the next handshake.
func TestNodeBoundEnrollment(t *testing.T) {
	s := quarrytest.StartServer(t)
	useToken(s.URL, s.AdminToken)
	ctx := t.Context()
	createJoin := func(node string) *quarryv1.CreateTokenResponse {
		resp, err := s.Tokens.CreateToken(ctx, connect.NewRequest(&quarryv1.CreateTokenRequest{
			Kind: quarryv1.TokenKind_TOKEN_KIND_JOIN, NodeName: node}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	csr := func() string {
		key, _ := pki.NewKey()
		c, _ := pki.CreateCSR(key, "x")
		return string(c)
	}
	enroll := s.Anonymous().Enrollment
	uses := func(tok *quarryv1.CreateTokenResponse) int {
		st, err := s.Store.GetToken(ctx, tok.GetToken().GetId())
		if err != nil {
			t.Fatal(err)
		}
		return st.UseCount
	}

	bound := createJoin("n1")
	if bound.GetToken().GetNodeName() != "n1" {
		t.Fatalf("CreateToken returned node_name %q, want n1", bound.GetToken().GetNodeName())
	}
	_, err := enroll.Enroll(ctx, connect.NewRequest(&quarryv1.EnrollRequest{JoinToken: bound.GetSecret(), NodeName: "n2",
		ManagementAddress: "10.0.0.2", CsrPem: csr()}))
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), `is bound to node "n1" and cannot enroll "n2"`) {
		t.Errorf("a token bound to n1 enrolling n2: %v, want permission_denied", err)
	}
	if _, err := s.Store.GetNodeByName(ctx, "n2"); err == nil {
		t.Error("node n2 was registered")
	}
	if _, err := s.Tokens.CreateToken(ctx, connect.NewRequest(&quarryv1.CreateTokenRequest{
		Kind: quarryv1.TokenKind_TOKEN_KIND_API, Role: quarryv1.Role_ROLE_VIEWER, NodeName: "n1"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("an API token bound to a node: %v, want invalid_argument", err)
	}

	a1 := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1", JoinToken: bound.GetSecret()})
	waitState(t, s, a1.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	first, err := s.Store.GetNode(ctx, a1.NodeID)
	if err != nil || first.Certificate.Serial == "" || len(first.Certificate.KeyHash) != 64 {
		t.Fatalf("enrolled node pins %+v (%v), want a serial and a key hash", first.Certificate, err)
	}

	// An unbound token may not take over n1 without replace.
	unbound := createJoin("")
	_, err = enroll.Enroll(ctx, connect.NewRequest(&quarryv1.EnrollRequest{JoinToken: unbound.GetSecret(), NodeName: "n1", CsrPem: csr()}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), `node "n1" already has an enrolled agent`) ||
		!strings.Contains(err.Error(), "--replace") {
		t.Errorf("an unbound token enrolling n1 again: %v, want failed_precondition naming --replace", err)
	}
	if n, _ := s.Store.GetNode(ctx, a1.NodeID); n.Certificate != first.Certificate || uses(unbound) != 0 {
		t.Errorf("a refused re-enrollment changed the node's certificate (%+v) or used the token (%d)", n.Certificate, uses(unbound))
	}

	// With replace it may, and the log says it replaced the agent; the
	// agent that held n1's certificate is no longer accepted.
	resp, err := enroll.Enroll(ctx, connect.NewRequest(&quarryv1.EnrollRequest{JoinToken: unbound.GetSecret(), NodeName: "n1", CsrPem: csr(), Replace: true}))
	if err != nil {
		t.Fatalf("replacing n1's agent: %v", err)
	}
	if resp.Msg.GetNodeId() != a1.NodeID {
		t.Errorf("replacement enrolled node %s, want %s", resp.Msg.GetNodeId(), a1.NodeID)
	}
	n := waitState(t, s, a1.NodeID, quarryv1.NodeState_NODE_STATE_UNREACHABLE, 10*time.Second)
	if !strings.Contains(n.GetStateReason(), "no longer this node's") {
		t.Errorf("the replaced agent's node: %s, want a reason saying its certificate is no longer the node's", n.GetStateReason())
	}
	audit, err := s.Audit.ListAudit(ctx, connect.NewRequest(&quarryv1.ListAuditRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if e := findAudit(audit.Msg.GetEntries(), "quarry.v1.EnrollmentService/Enroll", "ok"); e == nil ||
		!strings.Contains(e.GetMessage(), "replaced the enrolled agent of node n1: certificate "+first.Certificate.Serial) {
		t.Errorf("audit entry of the replacement: %v, want a message saying it replaced n1's agent", e)
	}

	// A bound token replaces its node's agent without --replace: a fresh
	// agent for n1 enrolls and is READY again.
	a1.Stop()
	again := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1", JoinToken: createJoin("n1").GetSecret(), FSRoot: t.TempDir()})
	waitState(t, s, again.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)

	// Revoking the certificate: the node is not enrolled any more, at once,
	// and the agent, still running with it, is not dialed.
	out := mustQuarry(t, s.URL, "node", "revoke-cert", "n1")
	if !strings.Contains(out, "revoked certificate ") {
		t.Errorf("quarry node revoke-cert: %q", out)
	}
	n = waitState(t, s, again.NodeID, quarryv1.NodeState_NODE_STATE_UNKNOWN, 5*time.Second)
	if !strings.HasPrefix(n.GetStateReason(), "not enrolled") {
		t.Errorf("after revoke-cert: %s, want not enrolled", n.GetStateReason())
	}
}
