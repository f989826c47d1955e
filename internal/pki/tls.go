package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ALPN is left to net/http, which offers what its Protocols enable.

// AgentServerTLS is the TLS configuration an agent serves with: its own
// certificate from getCert (so a renewed one is picked up by the next
// handshake), and only clients whose certificate chains to the CA in roots
// and is either the control plane's (client authentication, its URI) or
// another node's (server authentication, a node URI): nodes read files from
// each other's peer endpoint for copies. The agent's handler lets a node
// reach nothing but that endpoint, and only with a grant (VerifyGrant).
func AgentServerTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: getCert,
		// Go's own verification of client certificates requires the
		// client-auth extended key usage, which node certificates lack;
		// VerifyConnection checks the chain and, per identity, the usage.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("quarry: no client certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			usage := x509.ExtKeyUsageServerAuth
			switch {
			case hasURI(leaf, ControlPlaneURI):
				usage = x509.ExtKeyUsageClientAuth
			case NodeID(leaf) == "":
				return fmt.Errorf("quarry: client certificate %q is neither the control plane's nor a node's", leaf.Subject.CommonName)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				return fmt.Errorf("quarry: client certificate %q: %w", leaf.Subject.CommonName, err)
			}
			return nil
		},
	}
}

// IsControlPlane reports whether a verified client certificate is the
// control plane's (and not another node's).
func IsControlPlane(cert *x509.Certificate) bool { return hasURI(cert, ControlPlaneURI) }

// NodeClientTLS is the TLS configuration the control plane dials node
// nodeID with: the agent's certificate must chain to the CA in roots and
// name that node (DNS and URI), and the control plane presents the
// certificate getClientCert returns.
func NodeClientTLS(nodeID string, roots *x509.CertPool, getClientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	want := NodeURI(nodeID)
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              roots,
		ServerName:           NodeServerName(nodeID),
		GetClientCertificate: getClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("quarry: the agent presented no certificate")
			}
			if !hasURI(cs.PeerCertificates[0], want) {
				return &WrongNodeError{Want: nodeID, Got: NodeID(cs.PeerCertificates[0])}
			}
			return nil
		},
	}
}

// WrongNodeError: an agent presented a valid certificate for another node.
type WrongNodeError struct{ Want, Got string }

func (e *WrongNodeError) Error() string {
	return fmt.Sprintf("quarry: the agent's certificate names node %q, not %q", e.Got, e.Want)
}

// DueForRenewal reports whether a certificate valid from issued until
// notAfter should be renewed at now: when less than a third of its lifetime
// remains.
func DueForRenewal(issued, notAfter, now time.Time) bool {
	return !now.Before(notAfter.Add(-notAfter.Sub(issued) / 3))
}

// ClientCert is the control plane's client certificate, kept in memory and
// reissued from the CA when a third of its lifetime remains. It is safe for
// concurrent use.
type ClientCert struct {
	ca  *CA
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	cur    *tls.Certificate
	issued time.Time
}

// NewClientCert returns a source of control-plane client certificates
// valid for ttl each.
func NewClientCert(ca *CA, ttl time.Duration, now func() time.Time) *ClientCert {
	return &ClientCert{ca: ca, ttl: ttl, now: now}
}

// Get returns the current certificate, issuing a new one when it is due.
func (c *ClientCert) Get() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.cur != nil && !DueForRenewal(c.issued, c.cur.Leaf.NotAfter, now) {
		return c.cur, nil
	}
	cert, err := c.ca.IssueControlPlane(c.ttl, now)
	if err != nil {
		return nil, fmt.Errorf("issuing the control plane's client certificate: %w", err)
	}
	c.cur, c.issued = cert, now
	return cert, nil
}

// GetClientCertificate is Get in the shape tls.Config wants.
func (c *ClientCert) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.Get()
}
