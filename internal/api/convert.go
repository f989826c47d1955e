package api

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// snapshot is everything the views of nodes and pools are built from, read
// once per request.
type snapshot struct {
	nodes  []store.Node
	pools  []store.Pool
	mounts []store.PoolMount
	node   map[string]store.Node
	pool   map[string]store.Pool
	byNode map[string][]int // indexes into mounts by node id, made by nodeView
}

// loadSnapshot reads every node, pool and mount.
func loadSnapshot(ctx context.Context, st store.Store) (*snapshot, error) {
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	s := &snapshot{nodes: nodes, node: map[string]store.Node{}, pool: map[string]store.Pool{}}
	if s.mounts, err = st.ListPoolMounts(ctx); err != nil {
		return nil, err
	}
	if s.pools, err = st.ListPools(ctx); err != nil {
		return nil, err
	}
	for _, n := range s.nodes {
		s.node[n.ID] = n
	}
	for _, p := range s.pools {
		s.pool[p.ID] = p
	}
	return s, nil
}

// loadPoolSnapshot reads what pool p's view needs: its mounts, and its
// assigned nodes and the nodes that reported on it.
func loadPoolSnapshot(ctx context.Context, st store.Store, p store.Pool) (*snapshot, error) {
	s := &snapshot{pools: []store.Pool{p}, node: map[string]store.Node{}, pool: map[string]store.Pool{p.ID: p}}
	var err error
	if s.mounts, err = st.ListPoolMounts(ctx, p.ID); err != nil {
		return nil, err
	}
	ids := slices.Clone(p.AssignedNodeIDs)
	for _, m := range s.mounts {
		ids = append(ids, m.NodeID)
	}
	slices.Sort(ids)
	if s.nodes, err = st.GetNodes(ctx, slices.Compact(ids)...); err != nil {
		return nil, err
	}
	for _, n := range s.nodes {
		s.node[n.ID] = n
	}
	return s, nil
}

// loadSnapshotOf reads what the views of some nodes (a page of them) need:
// these nodes' mounts and, of the pools those name, the id, the name and
// which of these nodes are assigned. It is not enough for a pool's view:
// reading every pool with all its assigned nodes cost more than the page.
func loadSnapshotOf(ctx context.Context, st store.Store, nodes []store.Node) (*snapshot, error) {
	s := &snapshot{nodes: nodes, node: map[string]store.Node{}, pool: map[string]store.Pool{}}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
		s.node[n.ID] = n
	}
	var err error
	if s.mounts, err = st.ListNodeMounts(ctx, ids...); err != nil {
		return nil, err
	}
	var poolIDs []string
	for _, m := range s.mounts {
		if !slices.Contains(poolIDs, m.PoolID) {
			poolIDs = append(poolIDs, m.PoolID)
		}
	}
	names, err := st.PoolNames(ctx, poolIDs...)
	if err != nil {
		return nil, err
	}
	for id, name := range names {
		s.pool[id] = store.Pool{ID: id, Name: name}
	}
	assigned, err := st.PoolsAssignedTo(ctx, ids...)
	if err != nil {
		return nil, err
	}
	for node, pools := range assigned {
		for _, id := range pools {
			if p, ok := s.pool[id]; ok {
				p.AssignedNodeIDs = append(p.AssignedNodeIDs, node)
				s.pool[id] = p
			}
		}
	}
	return s, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var nodeStates = map[store.NodeState]quarryv1.NodeState{
	store.NodeReady:       quarryv1.NodeState_NODE_STATE_READY,
	store.NodeUnreachable: quarryv1.NodeState_NODE_STATE_UNREACHABLE,
	store.NodeUnknown:     quarryv1.NodeState_NODE_STATE_UNKNOWN,
}

func (s *snapshot) nodeView(n store.Node) *quarryv1.Node {
	v := &quarryv1.Node{
		Id:                n.ID,
		Name:              n.Name,
		ManagementAddress: n.Address,
		State:             nodeStates[n.State],
		StateReason:       n.StateReason,
		StateSince:        ts(n.StateSince),
		LastCheckedAt:     ts(n.LastCheckedAt),
		Hostname:          n.Hostname,
		AgentVersion:      n.AgentVersion,
		CreatedAt:         ts(n.CreatedAt),
	}
	if s.byNode == nil {
		s.byNode = map[string][]int{}
		for i, m := range s.mounts {
			s.byNode[m.NodeID] = append(s.byNode[m.NodeID], i)
		}
	}
	for _, i := range s.byNode[n.ID] {
		if p, ok := s.pool[s.mounts[i].PoolID]; ok {
			v.Pools = append(v.Pools, s.mountView(n, p, &s.mounts[i]))
		}
	}
	return v
}

// mountView describes node n's view of pool p; m is nil when the node has
// not reported on the pool yet.
func (s *snapshot) mountView(n store.Node, p store.Pool, m *store.PoolMount) *quarryv1.PoolMount {
	v := &quarryv1.PoolMount{
		NodeId:          n.ID,
		NodeName:        n.Name,
		StoragePoolId:   p.ID,
		StoragePoolName: p.Name,
		NodeState:       nodeStates[n.State],
	}
	for _, id := range p.AssignedNodeIDs {
		v.Assigned = v.Assigned || id == n.ID
	}
	if m == nil {
		v.Reason = "the node has not reported on this pool yet"
		return v
	}
	v.Mounted, v.Reason = m.Mounted, m.Reason
	checked := m.CheckedAt
	if n.MountsSeenAt.After(checked) {
		// A check that finds a mount unchanged leaves its row: it
		// confirmed it.
		checked = n.MountsSeenAt
	}
	v.FreeBytes, v.TotalBytes, v.CheckedAt = m.FreeBytes, m.TotalBytes, ts(checked)
	return v
}

// poolView lists the assigned nodes first, in the pool's order, then every
// other node that reported on the pool, by name.
func (s *snapshot) poolView(p store.Pool) *quarryv1.StoragePool {
	v := &quarryv1.StoragePool{
		Id:                  p.ID,
		Name:                p.Name,
		Type:                p.Type,
		Path:                p.Path,
		Shared:              p.Shared,
		AssignedNodeIds:     p.AssignedNodeIDs,
		CreatedAt:           ts(p.CreatedAt),
		InitializedByNodeId: p.InitializedBy,
	}
	mount := map[string]*store.PoolMount{}
	for i := range s.mounts {
		if s.mounts[i].PoolID == p.ID {
			mount[s.mounts[i].NodeID] = &s.mounts[i]
		}
	}
	seen := map[string]bool{}
	for _, id := range p.AssignedNodeIDs {
		if n, ok := s.node[id]; ok {
			v.Nodes = append(v.Nodes, s.mountView(n, p, mount[id]))
			seen[id] = true
		}
	}
	for _, n := range s.nodes {
		if m, ok := mount[n.ID]; ok && !seen[n.ID] {
			v.Nodes = append(v.Nodes, s.mountView(n, p, m))
		}
	}
	return v
}

// candidatesView lists the kept nodes in rank order, then the dropped ones.
func candidatesView(ch *placement.Choice) []*quarryv1.PlacementCandidate {
	var out []*quarryv1.PlacementCandidate
	add := func(cands []placement.Candidate, kept bool) {
		for _, c := range cands {
			out = append(out, &quarryv1.PlacementCandidate{
				NodeId:   c.Node.ID,
				NodeName: c.Node.Name,
				Kept:     kept,
				Reason:   c.Reason,
				Assigned: c.Assigned,
			})
		}
	}
	add(ch.Kept, true)
	add(ch.Rejected, false)
	return out
}
