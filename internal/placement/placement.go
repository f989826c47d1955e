// Package placement is the one place that decides which nodes may work on a
// storage pool. Downloads, scans, uploads and deletes all ask Choose for an
// ordered list of candidates; nothing else chooses nodes.
//
// The rules (DESIGN.md, "Choosing a node"):
//  1. Only nodes that mount the pool are ever used.
//  2. Assigned nodes that are READY come first, ordered by affinity: fewer
//     running jobs, better recent throughput, more free space.
//  3. Assigned nodes that are not READY are connected lazily, in order, and
//     used if that works.
//  4. For a shared pool, any other READY node that mounts it is a fallback.
//     A pool with no assigned nodes may use any READY node that mounts it.
//  5. When nothing is left, the error is one sentence naming every node
//     considered, why it was dropped, and what the operator can do.
package placement

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/store"
)

// ErrNoNode classes the error Choose returns when no node can work on the
// pool: errors.Is(err, ErrNoNode). Its class is
// errclass.FailedPrecondition: the operator has to change something (mount
// the pool, start an agent) before trying again.
var ErrNoNode = errclass.New(errclass.FailedPrecondition, "no node can reach the pool")

// Candidate is one node considered for a pool, kept or dropped.
type Candidate struct {
	Node     store.Node
	Assigned bool
	// Mount is the node's last known view of the pool; nil when never reported.
	Mount *store.PoolMount
	// Reason says why the node was kept (and in which rank) or dropped.
	Reason string
}

// Choice is the outcome of Choose: the usable nodes in order of preference,
// and every other node with the reason it was dropped.
type Choice struct {
	Pool     store.Pool
	Kept     []Candidate
	Rejected []Candidate
}

// First returns the preferred node.
func (c *Choice) First() Candidate { return c.Kept[0] }

// Load is a node's current work, used to order nodes of equal rank.
type Load struct {
	RunningJobs int
	// Throughput is recent bytes per second; 0 when unknown.
	Throughput float64
}

// Connector checks a node right away (short timeout) and returns its fresh
// state and pool mounts. The node link implements it.
type Connector interface {
	Connect(ctx context.Context, nodeID string) (store.Node, []store.PoolMount, error)
}

// Chooser applies the rules to the state in the store.
type Chooser struct {
	Store store.Store
	Link  Connector
	// Load reports per-node load; nil means every node is idle.
	Load func(ctx context.Context) (map[string]Load, error)
}

// Choose returns the nodes that may work on the pool, best first. When none
// may, the error wraps ErrNoNode and reads as one actionable sentence; the
// Choice is returned too, so callers can show every node's reason.
func (c *Chooser) Choose(ctx context.Context, poolID string) (*Choice, error) {
	pool, err := c.Store.GetPool(ctx, poolID)
	if err != nil {
		return nil, err
	}
	nodes, err := c.Store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	mounts, err := c.Store.ListPoolMounts(ctx)
	if err != nil {
		return nil, err
	}
	loads := map[string]Load{}
	if c.Load != nil {
		if loads, err = c.Load(ctx); err != nil {
			return nil, err
		}
	}
	ch := &Choice{Pool: pool}
	ready, lazy, fallback := classify(pool, nodes, mounts, ch)
	sortByAffinity(ready, loads)
	ch.Kept = append(ch.Kept, ready...)
	for _, cand := range lazy {
		if len(ch.Kept) > 0 {
			// Dialing dead nodes would only delay an operation that has a
			// node already; the health loop keeps retrying them.
			cand.Reason = notReady(cand.Node) + "; not tried, a ready node was kept"
			ch.Rejected = append(ch.Rejected, cand)
			continue
		}
		ch.add(c.connect(ctx, pool, cand))
	}
	sortByAffinity(fallback, loads)
	ch.Kept = append(ch.Kept, fallback...)
	if len(ch.Kept) == 0 {
		return ch, ch.err()
	}
	return ch, nil
}

// classify sorts every node into usable-now, to-connect-lazily and
// shared-fallback, recording dropped nodes in ch.Rejected. A READY node whose
// view of the pool is unknown (the pool is newer than its last check) is
// connected lazily too, so a fresh pool is usable at once.
func classify(pool store.Pool, nodes []store.Node, mounts []store.PoolMount, ch *Choice) (ready, lazy, fallback []Candidate) {
	byNode := map[string]*store.PoolMount{}
	for i := range mounts {
		if mounts[i].PoolID == pool.ID {
			byNode[mounts[i].NodeID] = &mounts[i]
		}
	}
	position := map[string]int{}
	for i, id := range pool.AssignedNodeIDs {
		position[id] = i
	}
	// Assigned nodes in the pool's preference order, then the rest by name.
	slices.SortStableFunc(nodes, func(a, b store.Node) int {
		pa, aok := position[a.ID]
		pb, bok := position[b.ID]
		switch {
		case aok && bok:
			return cmp.Compare(pa, pb)
		case aok:
			return -1
		case bok:
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	anyAssigned := len(pool.AssignedNodeIDs) > 0
	for _, n := range nodes {
		_, assigned := position[n.ID]
		cand := Candidate{Node: n, Assigned: assigned, Mount: byNode[n.ID]}
		switch {
		case anyAssigned && !assigned && !pool.Shared:
			cand.Reason = "not assigned to the pool, and the pool is not shared"
			ch.Rejected = append(ch.Rejected, cand)
		case n.State != store.NodeReady && !assigned:
			cand.Reason = notReady(n)
			ch.Rejected = append(ch.Rejected, cand)
		case n.State != store.NodeReady || cand.Mount == nil:
			lazy = append(lazy, cand)
		case !cand.Mount.Mounted:
			cand.Reason = "does not mount it: " + cand.Mount.Reason
			ch.Rejected = append(ch.Rejected, cand)
		case assigned || !anyAssigned:
			cand.Reason = "ready and mounts the pool"
			if assigned {
				cand.Reason = "assigned, ready and mounts the pool"
			}
			ready = append(ready, cand)
		default:
			cand.Reason = "not assigned, but ready and mounts the shared pool (fallback)"
			fallback = append(fallback, cand)
		}
	}
	return ready, lazy, fallback
}

// connect checks a node now and returns it kept or dropped.
func (c *Chooser) connect(ctx context.Context, pool store.Pool, cand Candidate) Candidate {
	n, mounts, err := c.Link.Connect(ctx, cand.Node.ID)
	if err != nil {
		cand.Reason = notReady(cand.Node) + " and connecting now failed: " + err.Error()
		return cand
	}
	cand.Node = n
	cand.Mount = nil
	for i := range mounts {
		if mounts[i].PoolID == pool.ID {
			cand.Mount = &mounts[i]
		}
	}
	switch {
	case cand.Mount == nil:
		cand.Reason = "connected, but it did not report the pool"
	case !cand.Mount.Mounted:
		cand.Reason = "connected, but does not mount it: " + cand.Mount.Reason
	default:
		cand.Reason = "connected on demand and mounts the pool"
	}
	return cand
}

// add keeps cand when it mounts the pool and drops it otherwise.
func (ch *Choice) add(cand Candidate) {
	if cand.Mount != nil && cand.Mount.Mounted && cand.Node.State == store.NodeReady {
		ch.Kept = append(ch.Kept, cand)
		return
	}
	ch.Rejected = append(ch.Rejected, cand)
}

func notReady(n store.Node) string {
	switch n.State {
	case store.NodeUnreachable:
		return "unreachable since " + n.StateSince.UTC().Format("15:04:05") + " (" + n.StateReason + ")"
	case store.NodeReady:
		return "ready"
	}
	if n.StateReason != "" {
		return "never reached (" + n.StateReason + ")"
	}
	return "never reached"
}

// sortByAffinity orders equal-rank nodes: fewer running jobs, then better
// throughput, then more free space. Stable, so the pool's assignment order
// breaks ties.
func sortByAffinity(cands []Candidate, loads map[string]Load) {
	slices.SortStableFunc(cands, func(a, b Candidate) int {
		la, lb := loads[a.Node.ID], loads[b.Node.ID]
		if c := cmp.Compare(la.RunningJobs, lb.RunningJobs); c != 0 {
			return c
		}
		if c := cmp.Compare(lb.Throughput, la.Throughput); c != 0 {
			return c
		}
		return cmp.Compare(free(b), free(a))
	})
}

func free(c Candidate) uint64 {
	if c.Mount == nil {
		return 0
	}
	return c.Mount.FreeBytes
}

// err builds the one-sentence explanation of why no node is left.
func (ch *Choice) err() error {
	p := ch.Pool
	if len(ch.Rejected) == 0 {
		return errclass.New(ErrNoNode, "no node can reach pool %q (%s): no nodes are registered; register one with `quarry node register`",
			p.Name, p.Path)
	}
	var why []string
	for _, c := range ch.Rejected {
		role := ""
		if c.Assigned {
			role = " (assigned)"
		}
		why = append(why, fmt.Sprintf("%s%s %s", c.Node.Name, role, c.Reason))
	}
	advice := "start the agent on an assigned node or mount the pool's path there"
	if len(p.AssignedNodeIDs) == 0 {
		advice = "start an agent on a node that mounts " + p.Path + ", or assign one with `quarry pool update " + p.Name + " --assign NODE`"
	} else if !p.Shared {
		advice += ", or assign another node that mounts it with `quarry pool update " + p.Name + " --assign NODE`"
	}
	return errclass.New(ErrNoNode, "no node can reach pool %q (%s): %s; %s",
		p.Name, p.Path, strings.Join(why, "; "), advice)
}
