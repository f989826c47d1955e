package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/nodeaddr"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/store"
)

// EnrollmentService implements quarry.v1.EnrollmentService: an agent trades
// a join token for a certificate from the control plane's CA. It needs no
// bearer token (the join token is the credential); the auth interceptor
// lists it as public and audits every call.
type EnrollmentService struct {
	quarryv1connect.UnimplementedEnrollmentServiceHandler
	Store store.Store
	Link  Link
	CA    *pki.CA
	// CertTTL is the lifetime of the certificates it signs.
	CertTTL time.Duration
	Logger  *slog.Logger
	// Clock is the time join tokens are checked and used at (the API's
	// authentication clock); Now, the time certificates are issued at.
	Clock func() time.Time
	Now   func() time.Time
	// Metrics counts enrollments by result; nil counts nothing.
	Metrics *metrics.Metrics
}

// Enroll checks the request and the join token, finds or registers the
// node, and signs the agent's key for it. A node whose agent holds a valid
// certificate is enrolled again only with a token bound to it, or with
// replace; the replacement is audited. The token's use, the node and the
// certificate it pins are written in one transaction: a refused or failed
// enrollment registers nothing and spends no token.
func (s *EnrollmentService) Enroll(ctx context.Context, req *connect.Request[quarryv1.EnrollRequest]) (resp *connect.Response[quarryv1.EnrollResponse], err error) {
	defer func() { s.Metrics.Enrolled(enrollResult(err)) }()
	m := req.Msg
	if err := names.Check("node", m.GetNodeName()); err != nil {
		return nil, toConnect(ctx, s.Logger, invalidf("%s", err.Error()))
	}
	csr, err := pki.ParseCSR([]byte(m.GetCsrPem()))
	if err != nil {
		return nil, toConnect(ctx, s.Logger, invalidf("%s", err.Error()))
	}
	now, tokenNow := s.Now(), s.Clock()
	// The token first: who does not hold one learns nothing about nodes.
	tok, err := auth.Lookup(ctx, s.Store, m.GetJoinToken(), store.TokenJoin, tokenNow)
	if errors.Is(err, auth.ErrInvalid) {
		return nil, toConnect(ctx, s.Logger, joinRefused(err))
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	if tok.NodeName != "" && tok.NodeName != m.GetNodeName() {
		return nil, toConnect(ctx, s.Logger, errclass.New(errclass.PermissionDenied,
			"join token %s is bound to node %q and cannot enroll %q; make a token for that node with quarry token create --join --node %s",
			tok.ID, tok.NodeName, m.GetNodeName(), m.GetNodeName()))
	}
	n, create, err := s.target(ctx, m.GetNodeName(), m.GetManagementAddress(), now)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	previous := n.Certificate
	replacing := !create && previous.Serial != "" && now.Before(previous.NotAfter)
	if replacing && tok.NodeName == "" && !m.GetReplace() {
		return nil, toConnect(ctx, s.Logger, errclass.New(errclass.FailedPrecondition,
			"node %q already has an enrolled agent (certificate %s, valid until %s); to replace it, enroll with a join token bound to the node "+
				"(quarry token create --join --node %s) or start the agent with --replace; to stop trusting the old one first, quarry node revoke-cert %s",
			n.Name, previous.Serial, previous.NotAfter.UTC().Format(time.RFC3339), n.Name, n.Name))
	}
	cert, err := s.CA.SignNode(csr, n.ID, s.CertTTL, now)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	err = s.Store.Enroll(ctx, store.Enrollment{
		TokenID: tok.ID, UsedAt: tokenNow, Node: n, Create: create, PreviousSerial: previous.Serial,
		Cert: store.NodeCertificate{Serial: pki.Serial(cert), KeyHash: pki.KeyHash(cert), NotAfter: cert.NotAfter, IssuedAt: now},
	})
	if errors.Is(err, store.ErrConflict) {
		if t, gerr := s.Store.GetToken(ctx, tok.ID); gerr == nil && t.SingleUse && t.UseCount > 0 {
			// Another enrollment used the single-use token since Lookup.
			err = joinRefused(fmt.Errorf("%w: token %s was single-use and has been used", auth.ErrInvalid, tok.ID))
		}
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	if replacing {
		noteAudit(ctx, "replaced the enrolled agent of node %s: certificate %s is no longer accepted, %s is", n.Name, previous.Serial, pki.Serial(cert))
		s.Logger.WarnContext(ctx, "node's agent replaced by a new enrollment; its previous certificate is no longer accepted", "node", n.Name,
			"previous_serial", previous.Serial, "serial", pki.Serial(cert), "token", tok.ID)
	}
	s.Logger.InfoContext(ctx, "agent enrolled", "node", n.Name, "node_id", n.ID, "address", n.Address,
		"registered", create, "token", tok.ID, "serial", pki.Serial(cert), "expires", cert.NotAfter.UTC().Format(time.RFC3339))
	s.Link.Kick(n.ID)
	return connect.NewResponse(&quarryv1.EnrollResponse{
		NodeId:         n.ID,
		CertificatePem: string(pki.EncodeCert(cert)),
		CaPem:          string(s.CA.PEM()),
	}), nil
}

// target returns the node the agent enrolls as: the one named name, moved
// to addr when one is given, or a new node at addr (create is true).
func (s *EnrollmentService) target(ctx context.Context, name, addr string, now time.Time) (n store.Node, create bool, err error) {
	nodes := &NodeService{Store: s.Store, Link: s.Link, Logger: s.Logger, Now: s.Now}
	n, err = s.Store.GetNodeByName(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if addr == "" {
			return n, false, invalidf("no node is named %q, so the control plane would register one, but the agent gave no address to reach it at; "+
				"start the agent with --advertise HOST[:PORT], or register the node first (quarry node register --name %s --address HOST[:PORT])", name, name)
		}
		create = true
		n = store.Node{ID: newID("node"), Name: name, State: store.NodeUnknown, StateSince: now, CreatedAt: now}
	case err != nil:
		return n, false, err
	case addr == "":
		return n, false, nil
	}
	if n.Address, err = nodeaddr.Normalize(addr); err != nil {
		return n, false, invalidf("%s", err.Error())
	}
	self := n.ID
	if create {
		self = ""
	}
	return n, create, nodes.checkUnique(ctx, self, n.Name, n.Address)
}

// joinRefused answers an enrollment whose join token is not good: the
// reason, and what to do.
func joinRefused(err error) error {
	return errclass.Wrap(errclass.Unauthenticated, err, "join token refused: %v; make a new one on the control plane with quarry token create --join", err)
}

// enrollResult names the outcome of an enrollment for its metric: "ok", or
// the Connect code it was refused with.
func enrollResult(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// maxNodeIDLen bounds the node id an Announce may ask about.
const maxNodeIDLen = 128

// Announce checks the node of an agent that says it (re)started, so that it
// turns READY now rather than at its next scheduled check, or that says it
// has file events, so that they are collected now. It answers the
// same whether or not the node exists or the check succeeds: the caller
// shows no credential, so it learns nothing; the node's state says how the
// check went.
func (s *EnrollmentService) Announce(ctx context.Context, req *connect.Request[quarryv1.AnnounceRequest]) (*connect.Response[quarryv1.AnnounceResponse], error) {
	if id := req.Msg.GetNodeId(); id != "" && len(id) <= maxNodeIDLen {
		announced := s.Link.Announced
		if req.Msg.GetFileEvents() {
			announced = s.Link.FileEventsAnnounced
		}
		if err := announced(ctx, id); err != nil {
			s.Logger.DebugContext(ctx, "checking an announced node failed", "node", id, "err", err)
		}
	}
	return connect.NewResponse(&quarryv1.AnnounceResponse{}), nil
}
