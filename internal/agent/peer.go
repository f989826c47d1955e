package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/pki"
)

// The peer endpoint: GET (and HEAD) /peer/v1/files/<sha256>, answered to
// another node of the cluster (its TLS client certificate from the CA)
// that presents, as "Authorization: Bearer <grant>", the control plane's
// grant for exactly that file, served from this node, to that node, not
// expired (pki.VerifyGrant). It serves the file with Range and If-Range
// and the strong ETag "sha256-<hex>", the same on every node that holds
// the file, so a copy resumes from another source where it stopped.
const peerPrefix = "/peer/v1/files/"

// peerHost is the host of the URLs copies are fetched from: the same for
// every source, so that a checkpoint taken while reading from one node is
// resumed from another. The connection goes to the address the grant's
// request names, and TLS checks that node's certificate.
const peerHost = "peer.quarry"

// guard lets the control plane reach everything and another node only the
// peer endpoint.
func (a *Agent) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && !pki.IsControlPlane(r.TLS.PeerCertificates[0]) &&
			!strings.HasPrefix(r.URL.Path, peerPrefix) {
			http.Error(w, "forbidden: other nodes may only read files the control plane granted them", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// servePeer serves one granted file (see peerPrefix).
func (a *Agent) servePeer(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, msg string) {
		a.log.Warn("peer read refused", "remote", r.RemoteAddr, "path", r.URL.Path, "status", code, "reason", msg)
		http.Error(w, msg, code)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		refuse(http.StatusForbidden, "peer reads need a node's TLS client certificate")
		return
	}
	client := pki.NodeID(r.TLS.PeerCertificates[0])
	id := a.id.Load()
	if id == nil || client == "" {
		refuse(http.StatusForbidden, "peer reads are for the nodes of this cluster")
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		refuse(http.StatusForbidden, "no grant: peer reads need the control plane's grant as a bearer token")
		return
	}
	g, err := pki.VerifyGrant(token, id.roots, a.now())
	switch {
	case err != nil:
		refuse(http.StatusForbidden, err.Error())
		return
	case g.Source != id.nodeID:
		refuse(http.StatusForbidden, fmt.Sprintf("the grant is for files of node %s, not this one (%s)", g.Source, id.nodeID))
		return
	case g.Grantee != client:
		refuse(http.StatusForbidden, fmt.Sprintf("the grant is for node %s, not the caller %s", g.Grantee, client))
		return
	case r.PathValue("sha256") != g.SHA256:
		refuse(http.StatusForbidden, "the grant is for another file")
		return
	}
	s := &service{a: a}
	_, dir, err := s.mountedDir(&agentv1.PoolRef{Id: g.PoolID, Name: g.PoolName, Path: g.PoolPath})
	if err == nil {
		err = checkImagePath(g.Path)
	}
	if err != nil {
		// Not this copy's fault: the control plane tries another source.
		refuse(http.StatusServiceUnavailable, err.Error())
		return
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		refuse(http.StatusServiceUnavailable, "opening the pool: "+cause(err).Error())
		return
	}
	defer root.Close()
	f, err := root.Open(g.Path)
	if err != nil {
		refuse(http.StatusServiceUnavailable, fmt.Sprintf("the file %s is not readable on this node: %v", g.Path, cause(err)))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() != g.Size {
		refuse(http.StatusServiceUnavailable, fmt.Sprintf("the file %s on this node is not the granted one (%d bytes expected)", g.Path, g.Size))
		return
	}
	a.log.Info("peer read", "job", g.Job, "node", client, "file", g.Path, "range", r.Header.Get("Range"))
	w.Header().Set("ETag", `"sha256-`+g.SHA256+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, &peerFile{File: f, a: a, start: time.Now()})
}

// peerFile is a granted file as ServeContent reads it: at most
// PeerReadRate bytes a second, and ended when the agent stops, so a
// shutdown does not wait for a long copy (the reader resumes elsewhere).
type peerFile struct {
	*os.File
	a     *Agent
	start time.Time
	sent  int64
}

var errStopping = errors.New("the agent is shutting down")

func (p *peerFile) Read(b []byte) (int, error) {
	select {
	case <-p.a.stopping:
		return 0, errStopping
	default:
	}
	n, err := p.File.Read(b)
	p.sent += int64(n)
	if rate := p.a.cfg.PeerReadRate; rate > 0 {
		due := p.start.Add(time.Duration(float64(p.sent) / float64(rate) * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-p.a.stopping:
				return n, errStopping
			case <-t.C:
			}
		}
	}
	return n, err
}

// peerURL is what a copy from a peer fetches.
func peerURL(sha256 string) string { return "https://" + peerHost + peerPrefix + sha256 }

// peerClient is the HTTP client a copy reads from node p with: mutual TLS
// (this node's certificate; the peer's must name p's node), every
// connection to p's address, the grant on every request. Once the grant
// has expired no request is sent: the failure is transient, and the
// control plane restarts the copy with a fresh grant.
func (a *Agent) peerClient(p *agentv1.PeerSource) (*http.Client, error) {
	id := a.id.Load()
	if id == nil {
		return nil, errclass.New(errclass.FailedPrecondition, "the agent is not enrolled")
	}
	g, err := pki.VerifyGrant(p.GetGrant(), id.roots, a.now())
	if err != nil {
		return nil, errclass.Wrap(errclass.InvalidArgument, err, "the copy's grant: %v", err)
	}
	if g.Source != p.GetNodeId() || g.Grantee != id.nodeID {
		return nil, errclass.New(errclass.InvalidArgument, "the copy's grant is from node %s to node %s, not from %s to this node", g.Source, g.Grantee, p.GetNodeId())
	}
	addr := p.GetAddress()
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: pki.NodeClientTLS(p.GetNodeId(), id.roots, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return a.getCertificate(nil)
		}),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:     true,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{Transport: &grantTransport{next: tr, grant: p.GetGrant(), expires: g.Expires, now: a.now},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

type grantTransport struct {
	next    http.RoundTripper
	grant   string
	expires time.Time
	now     func() time.Time
}

// errGrantExpired ends a copy's attempt whose grant ran out.
var errGrantExpired = errors.New("the copy's grant expired; the control plane restarts the copy with a new one")

func (t *grantTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.now().Before(t.expires) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errGrantExpired
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.grant)
	return t.next.RoundTrip(r)
}

func (s *service) LookupChecksum(ctx context.Context, req *connect.Request[agentv1.LookupChecksumRequest]) (*connect.Response[agentv1.LookupChecksumResponse], error) {
	m := req.Msg
	if m.GetChecksumUrl() == "" || m.GetFileName() == "" {
		return nil, errclass.ToConnect(errclass.New(errclass.InvalidArgument, "checksum file URL and file name are required"))
	}
	policy, err := agentPolicy(m.GetPolicy())
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	client := policy.Client(&http.Transport{ResponseHeaderTimeout: 30 * time.Second})
	defer client.CloseIdleConnections()
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	d, err := checksum.Lookup(lctx, client, m.GetChecksumUrl(), m.GetFileName())
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	return connect.NewResponse(&agentv1.LookupChecksumResponse{Digest: d.String()}), nil
}
