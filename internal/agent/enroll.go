package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/pki"
)

// Enrollment is how an agent without a certificate gets one: it presents a
// join token to the control plane, which signs the agent's key.
type Enrollment struct {
	// Server is the control plane's URL (http:// or https://).
	Server string
	// JoinToken is a token made with `quarry token create --join`.
	JoinToken string
	// CAHash, when set, pins the control plane's CA ("sha256:<hex>", printed
	// with the token): the agent refuses to enroll with any other.
	CAHash string
	// Name is the node to enroll as. A node registered with that name gets
	// the certificate; otherwise the control plane registers one.
	Name string
	// Advertise is the management address the control plane should dial.
	// Empty: the listen address when it names a host; needed only when no
	// node has Name yet, or to change the address of the node that has.
	Advertise string
	// Replace enrolls even when the node already has an enrolled agent,
	// whose certificate the control plane then stops accepting (needed
	// only with a join token that is not bound to Name).
	Replace bool
	// HTTPClient talks to the control plane; default a client with a 30 s
	// timeout per call.
	HTTPClient *http.Client
}

// notEnrolledHelp is the advice every "not enrolled" error ends with.
const notEnrolledHelp = "start it with --server URL --join-token TOKEN (make a token on the control plane with quarry token create --join)"

// ensureEnrolled makes sure the agent holds a certificate that is still
// valid, enrolling when it has none (or an expired one) and a join token
// was given. addr is where the agent listens, the default advertised address.
func (a *Agent) ensureEnrolled(ctx context.Context, addr net.Addr) error {
	id, e := a.id.Load(), a.cfg.Enrollment
	if id != nil && a.now().Before(id.cert.Leaf.NotAfter) {
		if e.JoinToken != "" {
			a.log.Info("agent already enrolled; --join-token is not needed any more", "node", id.nodeID)
		}
		return nil
	}
	if e.JoinToken == "" {
		if id == nil {
			return fmt.Errorf("this agent is not enrolled: %s", notEnrolledHelp)
		}
		return fmt.Errorf("this agent's certificate for node %s expired at %s: enroll again: %s",
			id.nodeID, id.cert.Leaf.NotAfter.UTC().Format(time.RFC3339), notEnrolledHelp)
	}
	adv := e.Advertise
	if adv == "" {
		adv = concreteAddr(addr)
	}
	return a.Enroll(ctx, e.JoinToken, adv)
}

// concreteAddr returns addr as host:port when it names a host, or "" for a
// wildcard address the control plane could not dial.
func concreteAddr(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		return ""
	}
	return tcp.String()
}

// Enroll trades joinToken for a certificate from the control plane in
// Config.Enrollment, whatever the agent holds now, and saves it in the data
// directory. advertise is sent as the node's management address ("" sends
// none). Calls that find the control plane unreachable are retried until
// ctx is done; a refusal is returned at once.
func (a *Agent) Enroll(ctx context.Context, joinToken, advertise string) error {
	e := a.cfg.Enrollment
	e.JoinToken = joinToken
	if err := e.check(); err != nil {
		return err
	}
	if a.cfg.DataDir == "" {
		return errors.New("enrolling needs a data directory (--data-dir) to keep the agent's certificate")
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key, e.Name)
	if err != nil {
		return err
	}
	hc := a.controlPlaneClient(30 * time.Second)
	server := strings.TrimRight(e.Server, "/")
	// With a pin, check the CA before the token leaves this machine: a
	// control plane that is not the one meant never sees it, and nothing is
	// registered.
	if e.CAHash != "" {
		if err := checkPin(ctx, hc, server, e.CAHash); err != nil {
			return err
		}
	}
	client := quarryv1connect.NewEnrollmentServiceClient(hc, server)
	req := &quarryv1.EnrollRequest{JoinToken: e.JoinToken, NodeName: e.Name, ManagementAddress: advertise, CsrPem: string(csr), Replace: e.Replace}
	var resp *connect.Response[quarryv1.EnrollResponse]
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		resp, err = client.Enroll(ctx, connect.NewRequest(req))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			break
		}
		a.log.Warn("cannot reach the control plane to enroll; retrying", "server", server, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("enrolling with %s: %w", server, err)
		case <-time.After(wait):
		}
	}
	if err != nil {
		return fmt.Errorf("the control plane at %s refused to enroll this agent as node %q: %s", server, e.Name, message(err))
	}
	id, err := acceptEnrollment(resp.Msg, key, e)
	if err != nil {
		return fmt.Errorf("enrolling with %s: %w", server, err)
	}
	if err := saveIdentity(a.cfg.DataDir, id, true); err != nil {
		return err
	}
	a.id.Store(id)
	a.log.Info("agent enrolled", "node", id.nodeID, "name", e.Name, "ca", pki.Hash(id.ca),
		"certificate_expires", id.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	if e.CAHash == "" {
		a.log.Warn("the control plane's CA was not pinned; pass --ca-hash (printed by quarry token create --join) to check it", "ca", pki.Hash(id.ca))
	}
	return nil
}

func (e Enrollment) check() error {
	switch {
	case e.Server == "":
		return errors.New("enrolling needs the control plane's URL: --server URL")
	case !strings.HasPrefix(e.Server, "http://") && !strings.HasPrefix(e.Server, "https://"):
		return fmt.Errorf("--server must be an http:// or https:// URL, not %q", e.Server)
	case e.JoinToken == "":
		return fmt.Errorf("enrolling needs a join token: %s", notEnrolledHelp)
	case e.Name == "":
		return errors.New("enrolling needs the node's name: --name NODE")
	}
	if e.CAHash != "" {
		return pki.CheckHash(e.CAHash)
	}
	return nil
}

// checkPin fetches the control plane's CA certificate (public) and compares
// it with the pin.
func checkPin(ctx context.Context, hc *http.Client, server, pin string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/ca.crt", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the control plane's CA from %s: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the control plane's CA from %s/ca.crt: %s %v", server, resp.Status, err)
	}
	ca, err := pki.ParseCert(body)
	if err != nil {
		return fmt.Errorf("the CA from %s/ca.crt: %w", server, err)
	}
	return matchPin(ca, pin, server)
}

func matchPin(ca *x509.Certificate, pin, server string) error {
	if got := pki.Hash(ca); got != strings.ToLower(pin) {
		return fmt.Errorf("the control plane at %s has CA %s, not the --ca-hash %s; refusing to enroll "+
			"(is --server the right control plane? quarry token create --join prints its CA hash)", server, got, pin)
	}
	return nil
}

// acceptEnrollment checks what the control plane sent back: a certificate
// for the agent's key, naming the node, from a CA that matches the pin.
func acceptEnrollment(m *quarryv1.EnrollResponse, key *ecdsa.PrivateKey, e Enrollment) (*identity, error) {
	ca, err := pki.ParseCert([]byte(m.GetCaPem()))
	if err != nil {
		return nil, fmt.Errorf("the control plane's CA: %w", err)
	}
	if e.CAHash != "" {
		if err := matchPin(ca, e.CAHash, e.Server); err != nil {
			return nil, err
		}
	}
	certX, err := pki.ParseCert([]byte(m.GetCertificatePem()))
	if err != nil {
		return nil, fmt.Errorf("the agent's certificate: %w", err)
	}
	id, err := newIdentity(certX, key, ca)
	if err != nil {
		return nil, err
	}
	if id.nodeID != m.GetNodeId() {
		return nil, fmt.Errorf("the certificate names node %s, the answer node %s", id.nodeID, m.GetNodeId())
	}
	return id, nil
}

// message is the text of an error from the control plane without the
// Connect code a person does not need.
func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// announceTries bounds how often a starting agent tries to tell the control
// plane; one that is down checks every node when it starts anyway.
const announceTries = 5

// announce tells the control plane at Enrollment.Server that this agent
// started, so that it checks the node now instead of at its next health
// check (minutes, for a node that was down long). The call carries only the
// node id; the control plane believes its own mutual-TLS check, not this.
// Failures are retried a few times and then left to the health checks.
func (a *Agent) announce(ctx context.Context) {
	id, server := a.id.Load(), strings.TrimRight(a.cfg.Enrollment.Server, "/")
	if id == nil || server == "" {
		return
	}
	client := quarryv1connect.NewEnrollmentServiceClient(a.controlPlaneClient(10*time.Second), server)
	wait := 500 * time.Millisecond
	for try := 1; ; try++ {
		_, err := client.Announce(ctx, connect.NewRequest(&quarryv1.AnnounceRequest{NodeId: id.nodeID}))
		if err == nil {
			a.log.Debug("told the control plane this agent started", "server", server, "node", id.nodeID)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if try == announceTries || connect.CodeOf(err) == connect.CodeUnimplemented {
			a.log.Info("could not tell the control plane this agent started; it finds out at its next health check",
				"server", server, "err", message(err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// eventsAnnounceGap is the least time between two announcements of file
// events: the control plane checks an announced node at most once a
// second, and events in between wait for the next announcement.
const eventsAnnounceGap = 1100 * time.Millisecond

// announceEvents tells the control plane, whenever the file watches logged
// new events, that this node has events to collect, so that the leader
// checks it now rather than at its next health check; at most once per
// eventsAnnounceGap, until ctx is done. A failed announcement is left to
// that check.
func (a *Agent) announceEvents(ctx context.Context) {
	var client quarryv1connect.EnrollmentServiceClient
	var hc *http.Client
	defer func() {
		if hc != nil {
			hc.CloseIdleConnections()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.newEvents:
		}
		id, server := a.id.Load(), strings.TrimRight(a.cfg.Enrollment.Server, "/")
		if id == nil || server == "" {
			continue
		}
		if client == nil {
			hc = a.controlPlaneClient(10 * time.Second)
			client = quarryv1connect.NewEnrollmentServiceClient(hc, server)
		}
		_, err := client.Announce(ctx, connect.NewRequest(&quarryv1.AnnounceRequest{NodeId: id.nodeID, FileEvents: true}))
		if err != nil && ctx.Err() == nil {
			a.log.Debug("could not tell the control plane of new file events; its next health check collects them", "server", server, "err", message(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(eventsAnnounceGap):
		}
	}
}

// controlPlaneClient is the HTTP client the agent calls the control plane
// with (Enrollment.HTTPClient when set): an https:// control plane must
// present a certificate from the CA of --ca-hash, from the CA the agent
// saved at enrollment, or from one the system trusts.
func (a *Agent) controlPlaneClient(timeout time.Duration) *http.Client {
	if hc := a.cfg.Enrollment.HTTPClient; hc != nil {
		return hc
	}
	var roots *x509.CertPool
	if id := a.id.Load(); id != nil {
		roots = id.roots
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = pki.ControlPlaneTLS(a.cfg.Enrollment.CAHash, roots)
	return &http.Client{Timeout: timeout, Transport: tr}
}
