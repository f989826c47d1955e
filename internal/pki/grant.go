package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A peer grant lets one node read one file from another node's peer
// endpoint (a copy between pools on different nodes). The control plane
// signs it with the private key of its client certificate, the one every
// agent already authenticates it by, and puts that certificate in the
// grant: an agent verifies the grant with nothing but the CA it enrolled
// with. The grant names the serving node, the reading node (whose TLS
// client certificate must name it), the pool, the file's path, size and
// SHA-256, and an expiry a few minutes ahead; it is checked when a request
// starts, so a long transfer is not cut off, and the control plane issues
// a fresh one every time it (re)starts the copy.
//
// Wire form: "qg1." + base64url(JSON payload) + "." + base64url(ASN.1
// ECDSA signature over SHA-256 of grantContext + payload) + "." +
// base64url(signer certificate DER).

const (
	grantPrefix  = "qg1."
	grantContext = "quarry peer grant v1\x00"
)

// Grant is the permission to read one file.
type Grant struct {
	// Source is the node that serves the file; Grantee the node that reads it.
	Source  string `json:"src"`
	Grantee string `json:"to"`
	// Job is the copy job, for logs.
	Job string `json:"job"`
	// The pool as the serving node knows it, and the file in it.
	PoolID   string `json:"pool"`
	PoolName string `json:"pool_name"`
	PoolPath string `json:"pool_path"`
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	// IssuedAt and Expires bound when a request may start.
	IssuedAt time.Time `json:"iat"`
	Expires  time.Time `json:"exp"`
}

// ErrGrant classes every refusal of a grant: errors.Is(err, ErrGrant).
var ErrGrant = errors.New("peer grant refused")

// SignGrant signs g with signer, a control-plane client certificate with an
// ECDSA key (ClientCert.Get).
func SignGrant(g Grant, signer *tls.Certificate) (string, error) {
	key, ok := signer.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || signer.Leaf == nil {
		return "", errors.New("signing a peer grant: the control plane's certificate has no ECDSA key")
	}
	payload, err := json.Marshal(g)
	if err != nil {
		return "", err
	}
	sum := grantDigest(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("signing a peer grant: %w", err)
	}
	enc := base64.RawURLEncoding
	return grantPrefix + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig) + "." + enc.EncodeToString(signer.Leaf.Raw), nil
}

func grantDigest(payload []byte) [32]byte {
	return sha256.Sum256(append([]byte(grantContext), payload...))
}

// VerifyGrant checks a grant against the CA in roots at now: signed by a
// control-plane certificate from that CA, valid now (with the clock skew
// certificates allow), and returns what it grants. The caller checks that
// the grant names itself as Source and the client as Grantee.
func VerifyGrant(token string, roots *x509.CertPool, now time.Time) (Grant, error) {
	var g Grant
	rest, ok := strings.CutPrefix(token, grantPrefix)
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 3 {
		return g, fmt.Errorf("%w: not a Quarry peer grant", ErrGrant)
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return g, fmt.Errorf("%w: malformed: %v", ErrGrant, err)
		}
		raw[i] = b
	}
	payload, sig, der := raw[0], raw[1], raw[2]
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return g, fmt.Errorf("%w: its certificate: %v", ErrGrant, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return g, fmt.Errorf("%w: its signer is not the control plane of this cluster: %v", ErrGrant, err)
	}
	if !hasURI(cert, ControlPlaneURI) {
		return g, fmt.Errorf("%w: signed by %q, not the control plane", ErrGrant, cert.Subject.CommonName)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	sum := grantDigest(payload)
	if !ok || !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return g, fmt.Errorf("%w: the signature does not match", ErrGrant)
	}
	if err := json.Unmarshal(payload, &g); err != nil {
		return g, fmt.Errorf("%w: malformed payload: %v", ErrGrant, err)
	}
	switch {
	case now.After(g.Expires.Add(clockSkew)):
		return g, fmt.Errorf("%w: expired at %s", ErrGrant, g.Expires.UTC().Format(time.RFC3339))
	case now.Add(clockSkew).Before(g.IssuedAt):
		return g, fmt.Errorf("%w: issued in the future (%s); check the clocks", ErrGrant, g.IssuedAt.UTC().Format(time.RFC3339))
	case g.Source == "" || g.Grantee == "" || g.Path == "" || g.SHA256 == "":
		return g, fmt.Errorf("%w: incomplete", ErrGrant)
	}
	return g, nil
}
