package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/nodeaddr"
	"github.com/quarry-project/quarry/internal/store"
)

// Link is what the API needs of the node link.
type Link interface {
	// Kick asks for the given nodes, or every node, to be checked now.
	Kick(nodeIDs ...string)
	// KickPool asks for the nodes that may use the pool to be checked now.
	KickPool(pool store.Pool)
	// Forget drops what the link remembers of a deleted node.
	Forget(nodeID string)
	// EnsureInitialized writes the pool's identity marker through one node
	// if no node has yet.
	EnsureInitialized(ctx context.Context, p store.Pool, lazy bool) error
	// CheckPoolNodes checks the nodes that serve a pool now, so that what
	// they report about it is stored before an answer shows it.
	CheckPoolNodes(ctx context.Context, p store.Pool)
	// QemuImgVersion is the qemu-img version the node reported at its last
	// check; "" when none.
	QemuImgVersion(nodeID string) (version string, known bool)
	// Announced checks a node now because its agent says it started.
	Announced(ctx context.Context, nodeID string) error
	// FileEventsAnnounced collects a node's file events now because its
	// agent says it has new ones.
	FileEventsAnnounced(ctx context.Context, nodeID string) error
}

// NodeService implements quarry.v1.NodeService.
type NodeService struct {
	quarryv1connect.UnimplementedNodeServiceHandler
	Store  store.Store
	Link   Link
	Logger *slog.Logger
	Now    func() time.Time
}

func (s *NodeService) RegisterNode(ctx context.Context, req *connect.Request[quarryv1.RegisterNodeRequest]) (*connect.Response[quarryv1.RegisterNodeResponse], error) {
	n, err := s.register(ctx, req.Msg)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.Link.Kick(n.ID)
	v, err := s.view(ctx, n.ID)
	return connect.NewResponse(&quarryv1.RegisterNodeResponse{Node: v}), toConnect(ctx, s.Logger, err)
}

func (s *NodeService) register(ctx context.Context, m *quarryv1.RegisterNodeRequest) (store.Node, error) {
	if err := names.Check("node", m.GetName()); err != nil {
		return store.Node{}, invalidf("%s", err.Error())
	}
	addr, err := nodeaddr.Normalize(m.GetManagementAddress())
	if err != nil {
		return store.Node{}, invalidf("%s", err.Error())
	}
	if err := s.checkUnique(ctx, "", m.GetName(), addr); err != nil {
		return store.Node{}, err
	}
	now := s.Now()
	n := store.Node{
		ID:         newID("node"),
		Name:       m.GetName(),
		Address:    addr,
		State:      store.NodeUnknown,
		StateSince: now,
		CreatedAt:  now,
	}
	return n, s.Store.CreateNode(ctx, n)
}

// checkUnique answers a taken name or address with a message naming the
// node that has it. The store's constraints still catch a race.
// checkUnique looks up the name and the address only: listing every node
// made enrolling N nodes read N²/2 rows.
func (s *NodeService) checkUnique(ctx context.Context, self, name, addr string) error {
	o, err := s.Store.GetNodeByName(ctx, name)
	switch {
	case err == nil && o.ID != self:
		return errclass.New(store.ErrConflict, "a node named %q already exists (id %s)", name, o.ID)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	o, err = s.Store.GetNodeByAddress(ctx, addr)
	switch {
	case err == nil && o.ID != self:
		return errclass.New(store.ErrConflict, "node %q already has the management address %s", o.Name, addr)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return nil
}

func (s *NodeService) ListNodes(ctx context.Context, req *connect.Request[quarryv1.ListNodesRequest]) (*connect.Response[quarryv1.ListNodesResponse], error) {
	m := req.Msg
	f := store.NodeFilter{Search: m.GetSearch()}
	if st := m.GetState(); st != quarryv1.NodeState_NODE_STATE_UNSPECIFIED {
		if f.State = enumKey(nodeStates, st); f.State == "" {
			return nil, toConnect(ctx, s.Logger, invalidf("node state %v is not known", st))
		}
	}
	nodes, next, err := s.Store.ListNodesPage(ctx, f, pageOf(m))
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	snap, err := loadSnapshotOf(ctx, s.Store, nodes)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ListNodesResponse{NextPageToken: next}
	for _, n := range snap.nodes {
		resp.Nodes = append(resp.Nodes, s.withFacts(snap.nodeView(n)))
	}
	return connect.NewResponse(resp), nil
}

func (s *NodeService) GetNode(ctx context.Context, req *connect.Request[quarryv1.GetNodeRequest]) (*connect.Response[quarryv1.GetNodeResponse], error) {
	v, err := s.view(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	return connect.NewResponse(&quarryv1.GetNodeResponse{Node: v}), nil
}

func (s *NodeService) UpdateNode(ctx context.Context, req *connect.Request[quarryv1.UpdateNodeRequest]) (*connect.Response[quarryv1.UpdateNodeResponse], error) {
	m := req.Msg
	n, err := s.get(ctx, m.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	if m.Name != nil {
		if err := names.Check("node", m.GetName()); err != nil {
			return nil, toConnect(ctx, s.Logger, invalidf("%s", err.Error()))
		}
		n.Name = m.GetName()
	}
	if m.ManagementAddress != nil {
		if n.Address, err = nodeaddr.Normalize(m.GetManagementAddress()); err != nil {
			return nil, toConnect(ctx, s.Logger, invalidf("%s", err.Error()))
		}
	}
	if err := s.checkUnique(ctx, n.ID, n.Name, n.Address); err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	if err := s.Store.UpdateNode(ctx, n.ID, n.Name, n.Address); err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.Link.Kick(n.ID)
	v, err := s.view(ctx, n.ID)
	return connect.NewResponse(&quarryv1.UpdateNodeResponse{Node: v}), toConnect(ctx, s.Logger, err)
}

func (s *NodeService) DeleteNode(ctx context.Context, req *connect.Request[quarryv1.DeleteNodeRequest]) (*connect.Response[quarryv1.DeleteNodeResponse], error) {
	n, err := s.get(ctx, req.Msg.GetId())
	if err == nil {
		err = s.Store.DeleteNode(ctx, n.ID)
	}
	if errors.Is(err, store.ErrInUse) {
		err = s.inUse(ctx, n, err)
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.Link.Forget(n.ID)
	return connect.NewResponse(&quarryv1.DeleteNodeResponse{}), nil
}

// inUse explains which pools hold on to a node that cannot be deleted.
func (s *NodeService) inUse(ctx context.Context, n store.Node, cause error) error {
	pools, err := s.Store.ListPools(ctx)
	if err != nil {
		return cause
	}
	var in []string
	for _, p := range pools {
		if slices.Contains(p.AssignedNodeIDs, n.ID) {
			in = append(in, fmt.Sprintf("%q", p.Name))
		}
	}
	return errclass.New(store.ErrInUse, "node %q is assigned to pool(s) %s; take it out of their assigned nodes first (quarry pool update POOL --assign ...)",
		n.Name, strings.Join(in, ", "))
}

// get loads a node by id with a not_found message that helps.
func (s *NodeService) get(ctx context.Context, id string) (store.Node, error) {
	if strings.TrimSpace(id) == "" {
		return store.Node{}, invalidf("node id is empty")
	}
	n, err := s.Store.GetNode(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return n, errclass.New(store.ErrNotFound, "no node has id %q; see quarry node ls", id)
	}
	return n, err
}

func (s *NodeService) view(ctx context.Context, id string) (*quarryv1.Node, error) {
	n, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	snap, err := loadSnapshotOf(ctx, s.Store, []store.Node{n})
	if err != nil {
		return nil, err
	}
	return s.withFacts(snap.nodeView(n)), nil
}

// withFacts adds to a node's view what the link holds of its latest facts
// and the store does not keep.
func (s *NodeService) withFacts(v *quarryv1.Node) *quarryv1.Node {
	v.QemuImgVersion, _ = s.Link.QemuImgVersion(v.GetId())
	return v
}
