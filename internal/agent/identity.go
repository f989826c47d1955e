package agent

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/pki"
)

// Files in the data directory that hold the agent's identity. The
// certificate and its key share one file so that a renewal replaces both in
// one rename.
const (
	identityFile = "agent.pem" // certificate, then key; mode 0600
	caFile       = "ca.pem"    // the control plane's CA; mode 0600
)

// identity is what the agent got at enrollment: its certificate and key,
// the node the certificate names, and the CA whose control-plane
// certificate it accepts clients with.
type identity struct {
	nodeID string
	cert   *tls.Certificate // Leaf set
	ca     *x509.Certificate
	roots  *x509.CertPool
}

func newIdentity(certX *x509.Certificate, key *ecdsa.PrivateKey, ca *x509.Certificate) (*identity, error) {
	if !pki.SameKey(certX, key) {
		return nil, errors.New("the certificate is not for the agent's key")
	}
	nodeID := pki.NodeID(certX)
	if nodeID == "" {
		return nil, errors.New("the certificate names no node")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	// The agent's own certificate must chain to the CA it trusts: a mix-up
	// of files from two control planes would otherwise surface only as
	// refused connections.
	// Expiry is checked separately, with a better message: verify at a
	// time both certificates were valid.
	at := certX.NotBefore
	if ca.NotBefore.After(at) {
		at = ca.NotBefore
	}
	if _, err := certX.Verify(x509.VerifyOptions{
		Roots:       roots,
		DNSName:     pki.NodeServerName(nodeID),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		CurrentTime: at.Add(time.Second),
	}); err != nil {
		return nil, fmt.Errorf("the certificate does not chain to the control plane's CA: %v", err)
	}
	return &identity{
		nodeID: nodeID,
		cert:   &tls.Certificate{Certificate: [][]byte{certX.Raw}, PrivateKey: key, Leaf: certX},
		ca:     ca,
		roots:  roots,
	}, nil
}

// loadIdentity reads the identity saved in dir; nil without error when the
// agent never enrolled.
func loadIdentity(dir string) (*identity, error) {
	path := filepath.Join(dir, identityFile)
	data, err := pki.ReadSecret(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	id, err := parseIdentity(data, filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("the agent's certificate %s: %w; remove %s and enroll again with --join-token", path, err, path)
	}
	return id, nil
}

func parseIdentity(data []byte, caPath string) (*identity, error) {
	certX, err := pki.ParseCert(data)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKey(data)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("reading the control plane's CA: %w", err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("the control plane's CA %s: %w", caPath, err)
	}
	return newIdentity(certX, key, ca)
}

// saveIdentity writes id into dir: the CA first, then the certificate and
// key, whose file marks the agent enrolled.
func saveIdentity(dir string, id *identity, writeCA bool) error {
	if writeCA {
		if err := pki.WriteSecret(filepath.Join(dir, caFile), pki.EncodeCert(id.ca)); err != nil {
			return fmt.Errorf("saving the control plane's CA: %w", err)
		}
	}
	keyPEM, err := pki.EncodeKey(id.cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	data := append(pki.EncodeCert(id.cert.Leaf), keyPEM...)
	if err := pki.WriteSecret(filepath.Join(dir, identityFile), data); err != nil {
		return fmt.Errorf("saving the agent's certificate: %w", err)
	}
	return nil
}

// NodeID returns the node the agent's certificate names, or "" before it
// enrolled.
func (a *Agent) NodeID() string {
	if id := a.id.Load(); id != nil {
		return id.nodeID
	}
	return ""
}

// CAHash returns the pin of the CA the agent trusts, or "" before it
// enrolled.
func (a *Agent) CAHash() string {
	if id := a.id.Load(); id != nil {
		return pki.Hash(id.ca)
	}
	return ""
}

// Certificate returns the agent's current certificate, or nil before it
// enrolled.
func (a *Agent) Certificate() *x509.Certificate {
	if id := a.id.Load(); id != nil {
		return id.cert.Leaf
	}
	return nil
}

// getCertificate hands every TLS handshake the current certificate, so a
// renewal takes effect at the next connection without a restart.
func (a *Agent) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	id := a.id.Load()
	if id == nil {
		return nil, errors.New("the agent is not enrolled")
	}
	return id.cert, nil
}

// createCSR makes the key the next certificate will be for and returns a
// signing request for it. The key stays pending, in memory, until
// installCertificate gets its certificate; a newer request replaces it.
func (a *Agent) createCSR() ([]byte, error) {
	id := a.id.Load()
	if id == nil {
		return nil, errclass.New(errclass.FailedPrecondition, "the agent is not enrolled")
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, id.nodeID)
	if err != nil {
		return nil, err
	}
	a.renewMu.Lock()
	a.pending = key
	a.renewMu.Unlock()
	return csr, nil
}

// installCertificate makes certPEM, signed for the pending key, the agent's
// certificate: saved atomically, then served from the next handshake on.
// It must chain to the CA the agent enrolled with and name the same node.
func (a *Agent) installCertificate(certPEM []byte) (*x509.Certificate, error) {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	cur := a.id.Load()
	if cur == nil {
		return nil, errclass.New(errclass.FailedPrecondition, "the agent is not enrolled")
	}
	if a.pending == nil {
		return nil, errclass.New(errclass.FailedPrecondition, "no certificate request is pending (the agent restarted since?); call CreateCSR first")
	}
	certX, err := pki.ParseCert(certPEM)
	if err != nil {
		return nil, errclass.New(errclass.InvalidArgument, "certificate: %v", err)
	}
	if !pki.SameKey(certX, a.pending) {
		return nil, errclass.New(errclass.InvalidArgument, "the certificate is not for the pending key; call CreateCSR again")
	}
	next, err := newIdentity(certX, a.pending, cur.ca)
	if err != nil {
		return nil, errclass.New(errclass.InvalidArgument, "%v", err)
	}
	if next.nodeID != cur.nodeID {
		return nil, errclass.New(errclass.InvalidArgument, "the certificate names node %s; this agent is node %s", next.nodeID, cur.nodeID)
	}
	if now := a.now(); now.After(certX.NotAfter) || now.Before(certX.NotBefore) {
		return nil, errclass.New(errclass.InvalidArgument, "the certificate is valid from %s to %s, not now (%s); check the clocks of the control plane and this node",
			certX.NotBefore.UTC().Format(time.RFC3339), certX.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if a.cfg.DataDir != "" {
		if err := saveIdentity(a.cfg.DataDir, next, false); err != nil {
			return nil, err
		}
	}
	a.id.Store(next)
	a.pending = nil
	return certX, nil
}
