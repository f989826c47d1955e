package api

import (
	"context"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/store"
)

// RevokeNodeCertificate forgets the certificate the node's record pins:
// from the next handshake the link accepts none, and the node is "not
// enrolled" until its agent enrolls again with a join token.
func (s *NodeService) RevokeNodeCertificate(ctx context.Context, req *connect.Request[quarryv1.RevokeNodeCertificateRequest]) (*connect.Response[quarryv1.RevokeNodeCertificateResponse], error) {
	n, err := s.get(ctx, req.Msg.GetId())
	if err == nil {
		err = s.Store.SetNodeCertificate(ctx, n.ID, store.NodeCertificate{})
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.Logger.InfoContext(ctx, "node certificate revoked", "node", n.Name, "node_id", n.ID, "serial", n.Certificate.Serial)
	// Checked now, so the node shows it is no longer enrolled.
	if err := s.Link.Announced(ctx, n.ID); err != nil {
		s.Logger.DebugContext(ctx, "checking a node after revoking its certificate", "node", n.ID, "err", err)
	}
	v, err := s.view(ctx, n.ID)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	return connect.NewResponse(&quarryv1.RevokeNodeCertificateResponse{Node: v, RevokedSerial: n.Certificate.Serial}), nil
}
