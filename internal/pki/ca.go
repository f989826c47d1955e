package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// caLifetime is how long a CA made by NewCA is valid. Renewing the CA means
// re-enrolling every agent, so it is long.
const caLifetime = 10 * 365 * 24 * time.Hour

// Files of a CA directory.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// CA is the control plane's certificate authority. Its methods are safe for
// concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

// NewCA makes a CA in memory, valid from now for ten years.
func NewCA(now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "Quarry CA " + sn.Text(16)[:8]},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return newCA(cert, key), nil
}

func newCA(cert *x509.Certificate, key *ecdsa.PrivateKey) *CA {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool}
}

// LoadOrCreateCA loads the CA kept in dir, or creates one there on first
// start (ca.crt, and ca.key with mode 0600). created reports which.
func LoadOrCreateCA(dir string, now time.Time) (ca *CA, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	switch {
	case certErr == nil:
		ca, err := loadCA(certPEM, keyPath)
		if err != nil {
			return nil, false, err
		}
		return ca, false, nil
	case !errors.Is(certErr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("reading the CA certificate: %w", certErr)
	}
	// No certificate: a key alone is left over from a start that crashed
	// before publishing the certificate; it never signed anything, so a new
	// CA replaces it.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("creating the CA directory: %w", err)
	}
	ca, err = NewCA(now)
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := EncodeKey(ca.key)
	if err != nil {
		return nil, false, err
	}
	if err := WriteSecret(keyPath, keyPEM); err != nil {
		return nil, false, fmt.Errorf("writing the CA key: %w", err)
	}
	// The certificate is public; written last, it marks the CA complete.
	if err := WritePublic(certPath, ca.PEM()); err != nil {
		return nil, false, fmt.Errorf("writing the CA certificate: %w", err)
	}
	return ca, true, nil
}

func loadCA(certPEM []byte, keyPath string) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA certificate next to %s: %w", keyPath, err)
	}
	keyPEM, err := ReadSecret(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the CA key %s is missing but its certificate is there; restore the key from a backup "+
			"(a new CA would mean re-enrolling every agent: remove the whole %s directory to start over)", keyPath, filepath.Dir(keyPath))
	}
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA key %s: %w", keyPath, err)
	}
	if !SameKey(cert, key) {
		return nil, fmt.Errorf("the CA key %s does not belong to the CA certificate next to it", keyPath)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("the CA certificate next to %s is not a CA certificate", keyPath)
	}
	return newCA(cert, key), nil
}

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// PEM returns the CA's certificate as PEM.
func (ca *CA) PEM() []byte { return EncodeCert(ca.cert) }

// Hash returns the CA's pin, "sha256:<hex>".
func (ca *CA) Hash() string { return Hash(ca.cert) }

// Pool returns a pool holding only the CA's certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// SignNode signs the public key of csr (already checked by ParseCSR) into a
// certificate for node nodeID, valid from now for ttl.
func (ca *CA) SignNode(csr *x509.CertificateRequest, nodeID string, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	if nodeID == "" {
		return nil, errors.New("signing a node certificate: empty node id")
	}
	u, err := url.Parse(NodeURI(nodeID))
	if err != nil {
		return nil, fmt.Errorf("node id %q: %w", nodeID, err)
	}
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: nodeID, Organization: []string{"Quarry nodes"}},
		DNSNames:    []string{NodeServerName(nodeID)},
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, csr.PublicKey, ttl, now)
}

// IssueControlPlane makes a new key and a client certificate for the control
// plane, valid from now for ttl.
func (ca *CA) IssueControlPlane(ttl time.Duration, now time.Time) (*tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(ControlPlaneURI)
	cert, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "quarry control plane"},
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &key.PublicKey, ttl, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub any, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("certificate lifetime %v is not positive", ttl)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(ttl)
	tmpl.BasicConstraintsValid = true
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// LoadCADir loads the CA kept in dir by LoadOrCreateCA; found is false when
// dir holds none.
func LoadCADir(dir string) (ca *CA, found bool, err error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading the CA certificate: %w", err)
	}
	ca, err = loadCA(certPEM, filepath.Join(dir, caKeyFile))
	return ca, err == nil, err
}

// ParseCA makes a CA of its certificate and key, both PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA certificate: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA key: %w", err)
	}
	if !SameKey(cert, key) || !cert.IsCA {
		return nil, errors.New("the CA key does not belong to the CA certificate, or it is not a CA certificate")
	}
	return newCA(cert, key), nil
}

// KeyPEM returns the CA's private key as PEM, for storing it sealed.
func (ca *CA) KeyPEM() ([]byte, error) { return EncodeKey(ca.key) }
