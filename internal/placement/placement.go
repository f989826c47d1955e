// Package placement is the one place that decides which nodes may work on a
// storage pool. Downloads, scans, uploads and deletes all ask Choose (or
// ChooseFor, with what the operation needs) for an ordered list of
// candidates, and the node link asks Initializers which node writes a new
// pool's marker; nothing else chooses nodes.
//
// The rules (DESIGN.md, "Choosing a node"):
//  1. Only nodes that mount the pool are ever used, and only when the pool
//     has the free space the operation needs there.
//  2. Assigned nodes that are READY come first, ordered by affinity: fewer
//     running jobs, then better recent throughput, then more free space in
//     the pool, then the pool's assignment order.
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
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/quarry-project/quarry/internal/bytesize"
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
	// Load is the node's work when the choice was made.
	Load Load
	// Reason says why the node was kept (and in which rank) or dropped.
	Reason string
}

// Choice is the outcome of Choose: the usable nodes in order of preference,
// and every other node with the reason it was dropped.
type Choice struct {
	Pool     store.Pool
	Kept     []Candidate
	Rejected []Candidate
	// short counts the nodes dropped for too little free space, so the
	// error can say what to do about it.
	short int
}

// First returns the preferred node.
func (c *Choice) First() Candidate { return c.Kept[0] }

// Load is a node's current work, used to order nodes of equal rank.
type Load struct {
	RunningJobs int
	// Throughput is recent bytes per second; 0 when unknown.
	Throughput float64
}

// JobLoad reads every node's load from the jobs in the store: how many
// RUNNING jobs it owns and the sum of their last reported rates. It is
// what the control plane sets as Chooser.Load, so the ranking follows the
// durable record rather than any one controller's memory.
func JobLoad(jobs store.JobStore) func(context.Context) (map[string]Load, error) {
	return func(ctx context.Context) (map[string]Load, error) {
		running, err := jobs.CountRunningJobs(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the nodes' running jobs: %w", err)
		}
		loads := make(map[string]Load, len(running))
		for id, r := range running {
			loads[id] = Load{RunningJobs: r.Count, Throughput: r.BytesPerSec}
		}
		return loads, nil
	}
}

// Need is what an operation asks of a node beyond reaching the pool; the
// zero Need asks nothing.
type Need struct {
	// Bytes is the free space the operation will take in the pool; 0 when
	// unknown (a download whose size the origin has not told yet).
	Bytes int64
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

// Choose returns the nodes that may work on the pool, best first, for an
// operation that needs nothing in particular: ChooseFor with a zero Need.
func (c *Chooser) Choose(ctx context.Context, poolID string) (*Choice, error) {
	return c.ChooseFor(ctx, poolID, Need{})
}

// ChooseFor returns the nodes that may work on the pool for an operation
// that needs need, best first. When none may, the error wraps ErrNoNode and
// reads as one actionable sentence; the Choice is returned too, so callers
// can show every node's reason.
func (c *Chooser) ChooseFor(ctx context.Context, poolID string, need Need) (*Choice, error) {
	return c.choose(ctx, poolID, need, true)
}

// Preview ranks the nodes as Choose would now, without connecting to any:
// for showing an operator how operations on the pool pick their node.
// Nodes that are not READY are listed as dropped, saying whether an
// operation would connect to them. A Choice that keeps no node is not an
// error here; only failing to read the store is.
func (c *Chooser) Preview(ctx context.Context, poolID string) (*Choice, error) {
	ch, err := c.choose(ctx, poolID, Need{}, false)
	if errors.Is(err, ErrNoNode) {
		err = nil
	}
	return ch, err
}

// choose applies the rules; with dial unset, nodes that would be connected
// lazily are only described.
func (c *Chooser) choose(ctx context.Context, poolID string, need Need, dial bool) (*Choice, error) {
	pool, err := c.Store.GetPool(ctx, poolID)
	if err != nil {
		return nil, err
	}
	// An operation on a shared pool needs only its assigned nodes and the
	// nodes that mount it while one of them is READY: reading every node
	// of a large cluster for each scan, download and upload of the pool
	// cost as many rows as it has nodes. The others only add reasons for
	// not using them, and a node to connect to when none was kept.
	if pool.Shared && dial {
		ch, err := c.chooseAmong(ctx, pool, need, dial, mountingNodes)
		if err != nil || len(ch.Kept) > 0 {
			return ch, err
		}
	}
	// A local pool with assigned nodes may use those only. The others are
	// read, and listed as not assigned, only to explain a choice that found
	// no node.
	if !pool.Shared && len(pool.AssignedNodeIDs) > 0 {
		ch, err := c.chooseAmong(ctx, pool, need, dial, assignedNodes)
		if errors.Is(err, ErrNoNode) {
			all, lerr := c.Store.ListNodes(ctx)
			if lerr != nil {
				return nil, lerr
			}
			for _, n := range all {
				if !MayUse(pool, n.ID) {
					ch.Rejected = append(ch.Rejected, Candidate{Node: n, Reason: notAssigned})
				}
			}
			err = ch.err()
		}
		return ch, err
	}
	return c.chooseAmong(ctx, pool, need, dial, everyNode)
}

// Which nodes chooseAmong reads.
type nodeSet int

const (
	everyNode     nodeSet = iota
	assignedNodes         // the pool's assigned nodes
	mountingNodes         // its assigned nodes and those that mount it
)

// chooseAmong is choose among the nodes of set. With mountingNodes the
// Choice keeps what choose would whenever a READY node is kept; without
// one, only every node tells which to connect to.
func (c *Chooser) chooseAmong(ctx context.Context, pool store.Pool, need Need, dial bool, set nodeSet) (*Choice, error) {
	// Only this pool's: every node's view of every pool is nodes × pools
	// rows, read for every scan, download and upload.
	mounts, err := c.Store.ListPoolMounts(ctx, pool.ID)
	if err != nil {
		return nil, err
	}
	var nodes []store.Node
	switch set {
	case assignedNodes:
		for _, id := range pool.AssignedNodeIDs {
			n, err := c.Store.GetNode(ctx, id)
			if err != nil {
				return nil, err
			}
			nodes = append(nodes, n)
		}
	case mountingNodes:
		ids := slices.Clone(pool.AssignedNodeIDs)
		for _, m := range mounts {
			if m.Mounted && !slices.Contains(pool.AssignedNodeIDs, m.NodeID) {
				ids = append(ids, m.NodeID)
			}
		}
		if nodes, err = c.Store.GetNodes(ctx, ids...); err != nil {
			return nil, err
		}
	default:
		if nodes, err = c.Store.ListNodes(ctx); err != nil {
			return nil, err
		}
	}
	loads := map[string]Load{}
	if c.Load != nil {
		if loads, err = c.Load(ctx); err != nil {
			return nil, err
		}
	}
	ch := &Choice{Pool: pool}
	ready, lazy, fallback := classify(pool, nodes, mounts, ch)
	ch.Kept = append(ch.Kept, ch.rank(ready, loads, need)...)
	if set == mountingNodes && len(ch.Kept) == 0 {
		return ch, nil // choose reads every node
	}
	for _, cand := range lazy {
		switch {
		case len(ch.Kept) > 0:
			// Dialing dead nodes would only delay an operation that has a
			// node already; the health loop keeps retrying them.
			cand.Reason = notReady(cand.Node) + "; not tried, a ready node was kept"
			ch.Rejected = append(ch.Rejected, cand)
		case !dial:
			cand.Reason = notReady(cand.Node) + "; an operation would connect to it now"
			ch.Rejected = append(ch.Rejected, cand)
		default:
			ch.add(c.connect(ctx, pool, cand), need)
		}
	}
	ch.Kept = append(ch.Kept, ch.rank(fallback, loads, need)...)
	if len(ch.Kept) == 0 {
		return ch, ch.err()
	}
	return ch, nil
}

const notAssigned = "not assigned to the pool, and the pool is not shared"

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
	position := assignment(pool)
	nodes = byPreference(pool, nodes)
	anyAssigned := len(pool.AssignedNodeIDs) > 0
	for _, n := range nodes {
		_, assigned := position[n.ID]
		cand := Candidate{Node: n, Assigned: assigned, Mount: byNode[n.ID]}
		switch {
		case !MayUse(pool, n.ID):
			cand.Reason = notAssigned
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
			cand.Reason = "READY"
			switch {
			case len(pool.AssignedNodeIDs) > 1:
				cand.Reason = fmt.Sprintf("assigned #%d, READY", position[n.ID]+1)
			case assigned:
				cand.Reason = "assigned, READY"
			}
			ready = append(ready, cand)
		default:
			cand.Reason = "not assigned, READY, mounts the shared pool (fallback)"
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

// add keeps cand when it mounts the pool with room for need, and drops it
// otherwise.
func (ch *Choice) add(cand Candidate, need Need) {
	if cand.Mount != nil && cand.Mount.Mounted && cand.Node.State == store.NodeReady && ch.fits(&cand, need) {
		ch.Kept = append(ch.Kept, cand)
		return
	}
	ch.Rejected = append(ch.Rejected, cand)
}

// fits reports whether the pool has the free space need asks for on the
// node cand, which mounts it; if not, it says so in cand's reason.
func (ch *Choice) fits(cand *Candidate, need Need) bool {
	if need.Bytes <= 0 || free(*cand) >= uint64(need.Bytes) {
		return true
	}
	cand.Reason += fmt.Sprintf("; only %s free, %s needed", bytesize.Format(free(*cand)), bytesize.Format(uint64(need.Bytes)))
	ch.short++
	return false
}

// rank drops the nodes of one rank that lack the space need asks for,
// orders the rest by affinity, and completes each one's reason with what
// placed it: its running jobs, their rate and the pool's free space.
func (ch *Choice) rank(cands []Candidate, loads map[string]Load, need Need) []Candidate {
	var kept []Candidate
	for _, cand := range cands {
		cand.Load = loads[cand.Node.ID]
		if !ch.fits(&cand, need) {
			ch.Rejected = append(ch.Rejected, cand)
			continue
		}
		jobs := fmt.Sprintf("%d running jobs", cand.Load.RunningJobs)
		if cand.Load.RunningJobs == 1 {
			jobs = "1 running job"
		}
		if cand.Load.Throughput > 0 {
			jobs += " at " + bytesize.Format(uint64(cand.Load.Throughput)) + "/s"
		}
		cand.Reason += "; " + jobs + ", " + bytesize.Format(free(cand)) + " free"
		kept = append(kept, cand)
	}
	sortByAffinity(kept)
	return kept
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
// throughput, then more free space. Stable, so the order they come in (the
// pool's assignment order, then names) breaks ties.
func sortByAffinity(cands []Candidate) {
	slices.SortStableFunc(cands, func(a, b Candidate) int {
		if c := cmp.Compare(a.Load.RunningJobs, b.Load.RunningJobs); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Load.Throughput, a.Load.Throughput); c != 0 {
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
		if c.Assigned && !strings.HasPrefix(c.Reason, "assigned") {
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
	if ch.short > 0 {
		advice = "free space in the pool (`quarry image rm IMAGE`) or use another pool; or " + advice
	}
	return errclass.New(ErrNoNode, "no node can reach pool %q (%s): %s; %s",
		p.Name, p.Path, strings.Join(why, "; "), advice)
}

// Initializers returns the nodes that may write the pool's identity marker,
// in the order they are asked: the assigned nodes in the pool's order or,
// when the pool has none, every node by name. Affinity plays no part: the
// marker is one small file, and "the first assigned node writes it" is a
// rule an operator can predict. Unlike Choose, it keeps nodes whose
// directory has no marker yet (that is the point), so the caller checks
// what each node reported about the path.
func Initializers(pool store.Pool, nodes []store.Node) []store.Node {
	nodes = byPreference(pool, nodes)
	if len(pool.AssignedNodeIDs) == 0 {
		return nodes
	}
	position := assignment(pool)
	return slices.DeleteFunc(nodes, func(n store.Node) bool {
		_, assigned := position[n.ID]
		return !assigned
	})
}

// MayUse reports whether node nodeID may ever work on the pool: always for a
// shared pool or one with no assigned nodes (through any node that mounts
// it), otherwise only when the pool lists the node. The node link asks a
// node about these pools only, so a check costs what the node may use, not
// the size of the whole cluster.
func MayUse(pool store.Pool, nodeID string) bool {
	return pool.Shared || len(pool.AssignedNodeIDs) == 0 || slices.Contains(pool.AssignedNodeIDs, nodeID)
}

// assignment maps the pool's assigned node ids to their place in its order.
func assignment(pool store.Pool) map[string]int {
	position := make(map[string]int, len(pool.AssignedNodeIDs))
	for i, id := range pool.AssignedNodeIDs {
		position[id] = i
	}
	return position
}

// byPreference returns a sorted copy of nodes: the pool's assigned nodes in
// its order, then every other node by name.
func byPreference(pool store.Pool, nodes []store.Node) []store.Node {
	position := assignment(pool)
	nodes = slices.Clone(nodes)
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
	return nodes
}
