// Package pki holds the certificates that let the control plane and the
// agents trust each other, and the TLS rules built on them.
//
// Contract:
//   - The control plane's CA (ECDSA P-256, kept under <data-dir>/ca/ with its
//     key file mode 0600) signs every agent's key. It signs only the public
//     key of a certificate signing request; names come from the CA, never
//     from the request.
//   - An agent certificate names exactly one node: the DNS name
//     "<node-id>.node.quarry" and the URI "quarry://node/<node-id>", for
//     server authentication only.
//   - The control plane's client certificate carries the URI
//     "quarry://control-plane", for client authentication only. It lives in
//     memory and is reissued before it expires.
//   - AgentServerTLS accepts only clients with the control plane's
//     certificate or a node's certificate from the CA (nodes may only read
//     granted files, which the agent enforces); NodeClientTLS accepts only
//     the certificate of the node it dials. Both require TLS 1.3.
//   - A peer grant (SignGrant, VerifyGrant) lets one node read one file
//     from another; it is signed with the control plane's client
//     certificate key and verified against the CA alone.
//
// The package imports neither the control plane's nor the agent's packages:
// both sides share it.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/atomicfile"
)

// Identities written into certificates.
const (
	// ControlPlaneURI names the control plane in its client certificate.
	ControlPlaneURI = "quarry://control-plane"
	nodeURIPrefix   = "quarry://node/"
	nodeDNSSuffix   = ".node.quarry"
)

// clockSkew is how far back certificates are dated, so that a peer whose
// clock is a little behind accepts them at once.
const clockSkew = 5 * time.Minute

// NodeServerName is the DNS name an agent certificate carries for nodeID,
// and the TLS server name the control plane dials it with.
func NodeServerName(nodeID string) string { return nodeID + nodeDNSSuffix }

// NodeURI is the URI an agent certificate carries for nodeID.
func NodeURI(nodeID string) string { return nodeURIPrefix + nodeID }

// NodeID returns the node an agent certificate names, or "" when it names
// none.
func NodeID(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, nodeURIPrefix) {
			return strings.TrimPrefix(s, nodeURIPrefix)
		}
	}
	return ""
}

// hasURI reports whether cert carries the URI SAN want.
func hasURI(cert *x509.Certificate, want string) bool {
	return slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == want })
}

// Hash is the pin of a CA certificate that enrolling agents check:
// "sha256:" and the hex SHA-256 of its DER encoding.
func Hash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckHash validates the form of a pin given by an operator.
func CheckHash(pin string) error {
	hexPart, ok := strings.CutPrefix(pin, "sha256:")
	if _, err := hex.DecodeString(hexPart); !ok || err != nil || len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("CA hash %q is not of the form sha256:<64 hex digits> (quarry token create --join prints it)", pin)
	}
	return nil
}

// NewKey makes a private key of the kind Quarry uses everywhere: ECDSA P-256.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CreateCSR returns a PEM certificate signing request for key. The common
// name is informative only: the CA decides what the certificate names.
func CreateCSR(key *ecdsa.PrivateKey, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR decodes a PEM certificate signing request and checks that it is
// signed by its own key and that the key is ECDSA P-256.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the certificate signing request is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the certificate signing request does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate signing request's signature is wrong: %v", err)
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("the certificate signing request holds a %T key; Quarry agents use ECDSA P-256 keys", csr.PublicKey)
	}
	return csr, nil
}

// EncodeCert returns cert as PEM.
func EncodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKey returns key as PEM.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseCert decodes the first PEM certificate in data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKey decodes the first PEM EC private key in data.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM EC private key found")
		}
		if b.Type == "EC PRIVATE KEY" {
			return x509.ParseECPrivateKey(b.Bytes)
		}
	}
}

// SameKey reports whether cert certifies the public half of key.
func SameKey(cert *x509.Certificate, key *ecdsa.PrivateKey) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(&key.PublicKey)
}

// serial returns a random 128-bit certificate serial number.
func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// Serial formats a certificate's serial number as the control plane stores
// and shows it: lower-case hex.
func Serial(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// KeyHash is the hex SHA-256 of cert's public key (SubjectPublicKeyInfo):
// with the serial, what the control plane pins of an agent's certificate.
func KeyHash(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// UnpinnedError: an agent presented a certificate for its node from the
// right CA, but not the one the node's record pins (replaced by a later
// enrollment or renewal, or revoked).
type UnpinnedError struct{ Got, Want string }

func (e *UnpinnedError) Error() string {
	return fmt.Sprintf("quarry: the agent's certificate (serial %s) is not the node's current one (serial %s)", e.Got, e.Want)
}

// CheckPin returns an *UnpinnedError unless cert has the serial and, when
// keyHash is not "", the public key hash pinned.
func CheckPin(cert *x509.Certificate, serial, keyHash string) error {
	if Serial(cert) != serial || keyHash != "" && KeyHash(cert) != keyHash {
		return &UnpinnedError{Got: Serial(cert), Want: serial}
	}
	return nil
}

// WriteSecret writes data to path atomically with mode 0600: a temporary
// file in the same directory is written, fsynced and renamed over path, and
// the directory is fsynced, so a reader (or a crash) sees the old content
// or the new, never a mix.
func WriteSecret(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

// WritePublic is WriteSecret for certificates: mode 0644.
func WritePublic(path string, data []byte) error { return atomicfile.Write(path, data, 0o644) }

// ReadSecret reads a key file and refuses it when others may read it: a
// key that leaked is no longer a credential.
func ReadSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s holds a private key but has mode %04o; make it readable by its owner only (chmod 600 %s)",
			path, fi.Mode().Perm(), path)
	}
	return os.ReadFile(path)
}
