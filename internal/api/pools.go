package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// initTimeout bounds how long CreatePool and UpdatePool wait for a node to
// write the pool's marker; past it, the health loop finishes the job.
const initTimeout = 5 * time.Second

// PoolService implements quarry.v1.StoragePoolService.
type PoolService struct {
	quarryv1connect.UnimplementedStoragePoolServiceHandler
	Store store.Store
	Link  Link
	// Placement, when set, gives GetPool the ranked node candidates.
	Placement Placement
	Logger    *slog.Logger
	Now       func() time.Time
	// DataDir is the control plane's data directory, which no pool may
	// overlap.
	DataDir string
}

// Placement shows how operations on a pool choose their node, without
// connecting to any (placement.Chooser.Preview).
type Placement interface {
	Preview(ctx context.Context, poolID string) (*placement.Choice, error)
}

func (s *PoolService) CreatePool(ctx context.Context, req *connect.Request[quarryv1.CreatePoolRequest]) (*connect.Response[quarryv1.CreatePoolResponse], error) {
	m := req.Msg
	p := store.Pool{
		ID:        newID("pool"),
		Name:      m.GetName(),
		Type:      m.GetType(),
		Path:      m.GetPath(),
		Shared:    m.GetShared(),
		CreatedAt: s.Now(),
	}
	if p.Type == "" {
		p.Type = "dir"
	}
	err := s.validate(ctx, &p, m.GetAssignedNodeIds())
	if err == nil {
		err = s.Store.CreatePool(ctx, p)
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.initialize(ctx, p)
	v, err := s.view(ctx, p.ID)
	return connect.NewResponse(&quarryv1.CreatePoolResponse{Pool: v}), toConnect(ctx, s.Logger, err)
}

// validate checks everything about a pool that is new or changed; p.ID
// excludes the pool itself from the uniqueness checks.
func (s *PoolService) validate(ctx context.Context, p *store.Pool, assigned []string) error {
	if err := names.Check("pool", p.Name); err != nil {
		return invalidf("%s", err.Error())
	}
	if p.Type != "dir" {
		return invalidf("pool type %q is not supported; the only type is \"dir\"", p.Type)
	}
	if err := names.CheckPoolPath(p.Path); err != nil {
		return invalidf("%s", err.Error())
	}
	if err := names.CheckOwnDir(p.Path, s.DataDir, "the control plane's data directory"); err != nil {
		return invalidf("%s", err.Error())
	}
	ids, err := s.checkAssigned(ctx, assigned)
	if err != nil {
		return err
	}
	p.AssignedNodeIDs = ids
	pools, err := s.Store.ListPools(ctx)
	if err != nil {
		return err
	}
	for _, o := range pools {
		switch {
		case o.ID == p.ID:
		case o.Name == p.Name:
			return errclass.New(store.ErrConflict, "a pool named %q already exists (path %s)", p.Name, o.Path)
		case o.Path == p.Path:
			return errclass.New(store.ErrConflict, "pool %q already has the path %s", o.Name, p.Path)
		case names.Within(p.Path, o.Path), names.Within(o.Path, p.Path):
			return invalidf("path %s overlaps pool %q (%s); pools cannot nest, or one pool's files would show up in the other", p.Path, o.Name, o.Path)
		}
	}
	return nil
}

// checkAssigned verifies that every assigned node exists, once.
func (s *PoolService) checkAssigned(ctx context.Context, ids []string) ([]string, error) {
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			return nil, invalidf("node %q is assigned twice; list each node once", id)
		}
		seen[id] = true
		if _, err := s.Store.GetNode(ctx, id); errors.Is(err, store.ErrNotFound) {
			return nil, invalidf("assigned node %q does not exist; see quarry node ls", id)
		} else if err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// initialize asks one node to write the marker of a pool that has none yet,
// then has the pool's nodes checked, so that the answer shows each node's
// mount as it is now rather than as it was before the marker was written.
// A failure is not the request's failure: the pool exists, each node's
// status says why it does not mount it, and the health loop tries again.
func (s *PoolService) initialize(ctx context.Context, p store.Pool) {
	ictx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	if err := s.Link.EnsureInitialized(ictx, p, true); err != nil {
		s.Logger.InfoContext(ctx, "pool not initialized yet; will retry", "pool", p.Name, "err", err)
	}
	s.Link.CheckPoolNodes(ctx, p)
	s.Link.KickPool(p)
}

func (s *PoolService) ListPools(ctx context.Context, _ *connect.Request[quarryv1.ListPoolsRequest]) (*connect.Response[quarryv1.ListPoolsResponse], error) {
	snap, err := loadSnapshot(ctx, s.Store)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ListPoolsResponse{}
	for _, p := range snap.pools {
		resp.Pools = append(resp.Pools, snap.poolView(p))
	}
	return connect.NewResponse(resp), nil
}

func (s *PoolService) GetPool(ctx context.Context, req *connect.Request[quarryv1.GetPoolRequest]) (*connect.Response[quarryv1.GetPoolResponse], error) {
	v, err := s.view(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.GetPoolResponse{Pool: v}
	if s.Placement != nil {
		ch, err := s.Placement.Preview(ctx, v.GetId())
		if err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
		resp.Candidates = candidatesView(ch)
	}
	return connect.NewResponse(resp), nil
}

func (s *PoolService) UpdatePool(ctx context.Context, req *connect.Request[quarryv1.UpdatePoolRequest]) (*connect.Response[quarryv1.UpdatePoolResponse], error) {
	m := req.Msg
	p, err := s.get(ctx, m.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	if m.Name != nil {
		p.Name = m.GetName()
	}
	if m.Shared != nil {
		p.Shared = m.GetShared()
	}
	assigned := p.AssignedNodeIDs
	if m.AssignedNodeIds != nil {
		assigned = m.AssignedNodeIds.GetIds()
	}
	err = s.validate(ctx, &p, assigned)
	if err == nil {
		err = s.Store.UpdatePool(ctx, p)
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.initialize(ctx, p)
	v, err := s.view(ctx, p.ID)
	return connect.NewResponse(&quarryv1.UpdatePoolResponse{Pool: v}), toConnect(ctx, s.Logger, err)
}

// DeletePool forgets the pool. Its directory and files stay on disk.
func (s *PoolService) DeletePool(ctx context.Context, req *connect.Request[quarryv1.DeletePoolRequest]) (*connect.Response[quarryv1.DeletePoolResponse], error) {
	p, err := s.get(ctx, req.Msg.GetId())
	if err == nil {
		err = s.Store.DeletePool(ctx, p.ID)
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	return connect.NewResponse(&quarryv1.DeletePoolResponse{}), nil
}

func (s *PoolService) get(ctx context.Context, id string) (store.Pool, error) {
	if strings.TrimSpace(id) == "" {
		return store.Pool{}, invalidf("pool id is empty")
	}
	return getPool(ctx, s.Store, id)
}

// getPool is the pool with id; one that does not exist is ErrNotFound,
// saying where to look.
func getPool(ctx context.Context, st store.Store, id string) (store.Pool, error) {
	p, err := st.GetPool(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return p, errclass.New(store.ErrNotFound, "no pool has id %q; see quarry pool ls", id)
	}
	return p, err
}

func (s *PoolService) view(ctx context.Context, id string) (*quarryv1.StoragePool, error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	snap, err := loadPoolSnapshot(ctx, s.Store, p)
	if err != nil {
		return nil, err
	}
	return snap.poolView(p), nil
}
