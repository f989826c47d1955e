package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// IssueServer makes a key and a server certificate for the control plane's
// public API, naming dnsNames and ips, valid from now for ttl. The chain it
// returns holds the CA's certificate too, so that a client that knows only
// the CA's pin can verify it (ControlPlaneTLS).
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, ttl time.Duration, now time.Time) (*tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "quarry control plane API"},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &key.PublicKey, ttl, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw, ca.cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// ControlPlaneTLS is the TLS configuration the CLI and agents reach an
// https:// control plane with. Its certificate must verify, for the host
// dialed, against the CA whose pin ("sha256:…") is pin when the server sends
// that CA along (--tls-auto), else against roots (a CA file, the CA an
// agent saved at enrollment), else against the system's roots (a
// certificate from a public CA, --tls-cert). Nothing else is accepted.
func ControlPlaneTLS(pin string, roots *x509.CertPool) *tls.Config {
	pin = strings.ToLower(pin)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The checks are VerifyConnection's: crypto/tls cannot try a
		// pinned CA found in the chain itself.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			certs := cs.PeerCertificates
			if len(certs) == 0 {
				return errors.New("the control plane presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			opts := x509.VerifyOptions{DNSName: cs.ServerName, Intermediates: inter}
			if pin != "" {
				for _, c := range certs[1:] {
					if Hash(c) == pin {
						opts.Roots = x509.NewCertPool()
						opts.Roots.AddCert(c)
						_, err := certs[0].Verify(opts)
						return verifyError(err)
					}
				}
			}
			if roots != nil {
				opts.Roots = roots
				if _, err := certs[0].Verify(opts); err == nil {
					return nil
				}
			}
			opts.Roots = nil
			_, err := certs[0].Verify(opts)
			return verifyError(err)
		},
	}
}

func verifyError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("the control plane's certificate does not verify: %w "+
		"(give the CLI its CA with QUARRY_CA_FILE, an agent --ca-hash; quarry token create --join prints the hash)", err)
}
