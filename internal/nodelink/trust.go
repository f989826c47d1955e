package nodelink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/store"
)

// reenroll is the advice for an agent whose certificate the control plane
// does not accept.
const reenroll = "enroll the agent again: remove agent.pem from its --data-dir and start it with " +
	"--server URL --join-token TOKEN (make one with quarry token create --join)"

// pinned returns cfg accepting, beyond what it checks itself, only the
// certificate the node's record pins: a certificate replaced by a later
// enrollment, or revoked, is refused at the next handshake, not at its
// expiry. (A changed pin makes the link open new connections: see conn.)
func pinned(cfg *tls.Config, pin store.NodeCertificate) *tls.Config {
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("quarry: the agent presented no certificate")
		}
		return pki.CheckPin(cs.PeerCertificates[0], pin.Serial, pin.KeyHash)
	}
	return cfg
}

// tlsReason explains a failed TLS handshake with an agent, and what to do;
// "" when err is not one.
func tlsReason(err error) string {
	var (
		header  tls.RecordHeaderError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		host    x509.HostnameError
		wrong   *pki.WrongNodeError
		unpin   *pki.UnpinnedError
		op      *net.OpError
	)
	switch {
	// net/http turns an HTTP answer to its TLS handshake into a plain error.
	case errors.As(err, &header), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "TLS handshake failed: the agent does not speak TLS (an agent from before enrollment, or another service on that port); " +
			"upgrade it and start it with --server URL --join-token TOKEN (make one with quarry token create --join)"
	case errors.As(err, &unknown):
		return "TLS handshake failed: the agent's certificate is not from this control plane's CA (enrolled with another control plane?); " + reenroll
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("TLS handshake failed: the agent's certificate expired at %s (the control plane renews it only while it reaches the node); %s",
			invalid.Cert.NotAfter.UTC().Format(time.RFC3339), reenroll)
	case errors.As(err, &invalid):
		return fmt.Sprintf("TLS handshake failed: the agent's certificate is not valid (%v); %s", invalid, reenroll)
	case errors.As(err, &unpin):
		return fmt.Sprintf("TLS handshake failed: the agent holds certificate %s, which is no longer this node's (its current one is %s: "+
			"the node was enrolled again, or its certificate revoked); %s", unpin.Got, unpin.Want, reenroll)
	case errors.As(err, &wrong):
		return fmt.Sprintf("TLS handshake failed: the agent at this address holds the certificate of node %s, not this node's: "+
			"check the node's management address (quarry node update), or %s", wrong.Got, reenroll)
	case errors.As(err, &host):
		other := "a certificate of no node"
		if host.Certificate != nil && pki.NodeID(host.Certificate) != "" {
			other = "the certificate of node " + pki.NodeID(host.Certificate)
		}
		return fmt.Sprintf("TLS handshake failed: the agent at this address holds %s, not this node's: "+
			"check the node's management address (quarry node update), or %s", other, reenroll)
	case errors.As(err, &op) && op.Op == "remote error":
		return fmt.Sprintf("TLS handshake failed: the agent refused the control plane's certificate (%v): it trusts another control plane's CA; %s", op.Err, reenroll)
	}
	var tlsErr *tls.CertificateVerificationError
	if errors.As(err, &tlsErr) {
		return fmt.Sprintf("TLS handshake failed: %v; %s", tlsErr.Err, reenroll)
	}
	return ""
}

// recordNotEnrolled keeps a node whose agent has not enrolled UNKNOWN with
// the reason, writing only when that changes. It returns the node as stored.
func (l *Link) recordNotEnrolled(ctx context.Context, n store.Node, st *nodeState) (store.Node, error) {
	now := l.cfg.Now()
	// Nothing failed: the node waits for its agent, looked at on the
	// normal interval (enrollment kicks the link anyway).
	l.mu.Lock()
	st.facts, st.failures, st.next = nil, 0, now.Add(l.delay(0))
	l.mu.Unlock()
	if n.State == store.NodeUnknown && n.StateReason == notEnrolledReason {
		return n, nil
	}
	next := store.NodeStatus{
		State:         store.NodeUnknown,
		StateReason:   notEnrolledReason,
		StateSince:    n.StateSince,
		LastCheckedAt: n.LastCheckedAt,
		Hostname:      n.Hostname,
		AgentVersion:  n.AgentVersion,
	}
	if n.State != store.NodeUnknown || next.StateSince.IsZero() {
		next.StateSince = now
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.cfg.Store.RecordNodeCheck(wctx, n.ID, next, nil); err != nil {
		return n, err
	}
	if n.State != next.State {
		l.log.Info("node state changed", "node", n.Name, "address", n.Address, "state", next.State, "from", n.State, "err", notEnrolledReason)
	}
	n.State, n.StateReason, n.StateSince = next.State, next.StateReason, next.StateSince
	l.metrics.setState(n)
	return n, nil
}

// renewIfDue renews the node's certificate when less than a third of its
// lifetime remains. A failure is logged and tried again at the next check;
// the certificate stays valid meanwhile.
func (l *Link) renewIfDue(ctx context.Context, n store.Node, c *conn) {
	cert := n.Certificate
	if cert.Serial == "" || !pki.DueForRenewal(cert.IssuedAt, cert.NotAfter, l.cfg.Now()) {
		return
	}
	if err := l.renew(ctx, n, c); err != nil {
		l.log.Warn("renewing the node's certificate failed; trying again at the next check", "node", n.Name,
			"expires", cert.NotAfter.UTC().Format(time.RFC3339), "err", err)
	}
}

// renew has the agent make a new key, signs it, installs the certificate
// on the agent and records it.
func (l *Link) renew(ctx context.Context, n store.Node, c *conn) error {
	csr, err := l.agents.CreateCSR(withConn(ctx, c), connect.NewRequest(&agentv1.CreateCSRRequest{}))
	if err != nil {
		return fmt.Errorf("asking the agent for a certificate request: %s", reason(err))
	}
	now := l.cfg.Now()
	cert, err := l.cfg.Issuer.SignNode([]byte(csr.Msg.GetCsrPem()), n.ID, now)
	if err != nil {
		return fmt.Errorf("signing the agent's request: %w", err)
	}
	if _, err := l.agents.InstallCertificate(withConn(ctx, c), connect.NewRequest(&agentv1.InstallCertificateRequest{
		CertificatePem: string(pki.EncodeCert(cert)),
	})); err != nil {
		return fmt.Errorf("installing the certificate on the agent: %s", reason(err))
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.cfg.Store.SetNodeCertificate(wctx, n.ID, store.NodeCertificate{
		Serial: pki.Serial(cert), KeyHash: pki.KeyHash(cert), NotAfter: cert.NotAfter, IssuedAt: now,
	}); err != nil {
		return fmt.Errorf("recording the renewed certificate: %w", err)
	}
	// The next check opens a connection, whose handshake proves the agent
	// serves the new certificate.
	c.close()
	l.log.Info("node certificate renewed", "node", n.Name, "serial", pki.Serial(cert),
		"expires", cert.NotAfter.UTC().Format(time.RFC3339), "previous_expiry", n.Certificate.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
