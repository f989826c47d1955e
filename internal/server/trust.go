package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"github.com/quarry-project/quarry/internal/pki"
)

// defaultAgentCertTTL is the lifetime of an agent certificate.
const defaultAgentCertTTL = 30 * 24 * time.Hour

// controlPlaneCertTTL is the lifetime of the control plane's client
// certificate. It lives in memory only and is reissued when a third of it
// remains, so it can be short.
const controlPlaneCertTTL = 24 * time.Hour

// openCA loads the CA from <data-dir>/ca, creating it on the first start:
// on SQLite it lives with the database file it goes with. On PostgreSQL,
// whose replicas share it, it is in the database (openSharedCA).
func openCA(cfg Config) (*pki.CA, error) {
	dir := filepath.Join(cfg.DataDir, "ca")
	ca, created, err := pki.LoadOrCreateCA(dir, time.Now())
	if err != nil {
		return nil, fmt.Errorf("the control plane's CA in %s: %w", dir, err)
	}
	if created {
		cfg.Logger.Info("created the control plane's CA; agents enroll with join tokens (quarry token create --join)", "dir", dir, "ca_hash", ca.Hash())
	} else {
		cfg.Logger.Info("control plane CA loaded", "dir", dir, "ca_hash", ca.Hash())
	}
	return ca, nil
}

// issuer is the CA as the node link uses it: the TLS configuration each
// node is dialed with, and renewals.
type issuer struct {
	ca     *pki.CA
	client *pki.ClientCert
	ttl    time.Duration
}

func newIssuer(ca *pki.CA, agentTTL time.Duration) *issuer {
	return &issuer{ca: ca, client: pki.NewClientCert(ca, controlPlaneCertTTL, time.Now), ttl: agentTTL}
}

func (i *issuer) ClientTLS(nodeID string) *tls.Config {
	return pki.NodeClientTLS(nodeID, i.ca.Pool(), i.client.GetClientCertificate)
}

func (i *issuer) SignNode(csrPEM []byte, nodeID string, now time.Time) (*x509.Certificate, error) {
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return i.ca.SignNode(csr, nodeID, i.ttl, now)
}

// SignGrant signs a peer grant with the control plane's client
// certificate, which every agent already trusts through the CA.
func (i *issuer) SignGrant(g pki.Grant) (string, error) {
	cert, err := i.client.Get()
	if err != nil {
		return "", err
	}
	return pki.SignGrant(g, cert)
}

// absPath is p made absolute, or p when that fails (no working directory).
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
