package nodelink_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestAgentErrorClasses: the class of an error a real agent answers with
// survives the link, with the agent's message; a node whose agent does not
// answer is unavailable, with the reason a person can act on.
func TestAgentErrorClasses(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	l := nodelink.New(nodelink.Config{Store: s.Store, Issuer: testIssuer(t, s.CA), Logger: quarrytest.Logger(t)})
	ctx := t.Context()
	nowhere := store.Pool{ID: "pool-nowhere", Name: "nowhere", Path: "/srv/nowhere"}

	for _, tt := range []struct {
		name  string
		call  func() error
		class *errclass.Class
		msg   string
	}{
		{"pool not on the node", func() error {
			return l.DeleteFile(ctx, a.NodeID, nowhere, "iso/x.iso")
		}, errclass.FailedPrecondition, "path /srv/nowhere does not exist on this node"},
		{"bad request", func() error {
			_, err := l.StartDownload(ctx, a.NodeID, &agentv1.StartDownloadRequest{Pool: &agentv1.PoolRef{Id: "p", Name: "p", Path: "relative"}})
			return err
		}, errclass.InvalidArgument, `pool p: path "relative" is not absolute`},
		{"stream", func() error {
			_, err := l.ListISOs(ctx, a.NodeID, nowhere, nil)
			return err
		}, errclass.FailedPrecondition, "path /srv/nowhere does not exist on this node"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.class) || errclass.Of(err) != tt.class {
				t.Fatalf("error %q of class %v, want %v", err, errclass.Of(err), tt.class)
			}
			if !strings.HasPrefix(err.Error(), tt.msg) {
				t.Errorf("message %q, want %q", err, tt.msg)
			}
		})
	}

	// A node whose agent is gone: unavailable, saying why. The call may go
	// out on the connection the agent closed as it stopped, before the link
	// has read that it did; then the agent closed the connection.
	a.Stop()
	err := l.DeleteFile(ctx, a.NodeID, nowhere, "iso/x.iso")
	if msg := err.Error(); errclass.Of(err) != errclass.Unavailable ||
		!strings.Contains(msg, "connection refused") && !strings.HasPrefix(msg, "the agent closed the connection (it stopped or restarted") {
		t.Errorf("agent stopped: %q of class %v, want unavailable with the reason", err, errclass.Of(err))
	}

	// A node that never enrolled: unavailable too.
	reg, err := s.Nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "n2", ManagementAddress: "10.0.0.5"}))
	if err != nil {
		t.Fatal(err)
	}
	err = l.DeleteFile(ctx, reg.Msg.GetNode().GetId(), nowhere, "iso/x.iso")
	if !errors.Is(err, nodelink.ErrNotEnrolled) || errclass.Of(err) != errclass.Unavailable {
		t.Errorf("node not enrolled: %q of class %v, want ErrNotEnrolled, unavailable", err, errclass.Of(err))
	}
}

// testIssuer dials agents as the control plane of ca does.
func testIssuer(t *testing.T, ca *pki.CA) nodelink.Issuer {
	t.Helper()
	cp, err := ca.IssueControlPlane(time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return issuer{ca: ca, cert: cp}
}

type issuer struct {
	ca   *pki.CA
	cert *tls.Certificate
}

func (i issuer) ClientTLS(nodeID string) *tls.Config {
	return pki.NodeClientTLS(nodeID, i.ca.Pool(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return i.cert, nil })
}

func (i issuer) SignNode([]byte, string, time.Time) (*x509.Certificate, error) {
	return nil, errors.New("this test signs nothing")
}
