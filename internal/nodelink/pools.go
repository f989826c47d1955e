package nodelink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// EnsureInitialized makes sure the pool's identity marker has been written,
// once, by one node. The writer is the first node in placement.Initializers'
// order (the assigned nodes in the pool's order, or every node by name when
// none is assigned) that reports the pool's directory without a marker. A
// node that already holds this pool's marker is recorded as the
// initializer.
//
// Once a pool is initialized it is never initialized again: if the marker
// later vanishes (a shared filesystem not mounted), writing a new one into
// whatever empty directory a node has at that path would make the wrong
// disk look like the pool.
//
// With lazy set, nodes that are not READY are connected on the spot;
// otherwise only facts from the last successful checks are used.
func (l *Link) EnsureInitialized(ctx context.Context, pool store.Pool, lazy bool) error {
	l.initMu.Lock()
	defer l.initMu.Unlock()
	pool, err := l.cfg.Store.GetPool(ctx, pool.ID)
	if err != nil || pool.InitializedBy != "" {
		return err
	}
	nodes, err := l.initOrder(ctx, pool)
	if err != nil {
		return err
	}
	var why []string
	for _, n := range nodes {
		pf, ok := l.poolFacts(n.ID, pool.ID)
		if !ok && lazy {
			if _, _, err := l.Connect(ctx, n.ID); err != nil {
				why = append(why, fmt.Sprintf("%s: %s", n.Name, reason(err)))
				continue
			}
			pf, ok = l.poolFacts(n.ID, pool.ID)
		}
		if !ok {
			continue
		}
		switch pf.status {
		case agentv1.MountStatus_MOUNT_STATUS_MOUNTED:
			return l.markInitialized(ctx, pool, n)
		case agentv1.MountStatus_MOUNT_STATUS_NO_MARKER:
			return l.initThrough(ctx, pool, n)
		default:
			why = append(why, fmt.Sprintf("%s: %s", n.Name, pf.reason.Value()))
		}
	}
	if len(why) == 0 {
		return fmt.Errorf("pool %q is not initialized yet: no node has reported on %s", pool.Name, pool.Path)
	}
	return fmt.Errorf("pool %q is not initialized yet: %s", pool.Name, strings.Join(why, "; "))
}

// CheckPoolNodes checks right away, in parallel, the nodes that serve a
// pool — its assigned nodes, or every node when none is assigned — so that
// an answer about the pool (CreatePool, UpdatePool) shows what they report
// now: the node that just wrote the marker as mounting it, the others with
// their reasons. Each check is bounded by the connect timeout; a node that
// fails it is recorded as such.
func (l *Link) CheckPoolNodes(ctx context.Context, pool store.Pool) {
	nodes, err := l.initOrder(ctx, pool)
	if err != nil {
		return
	}
	// Listed once for all the checks: a shared pool may have hundreds of
	// nodes.
	pools, err := l.cfg.Store.ListPools(ctx)
	if err != nil {
		return
	}
	sem := make(chan struct{}, l.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, n := range nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, _, err := l.connect(ctx, n.ID, pools); err != nil {
				l.log.Debug("checking a node of a pool failed", "pool", pool.Name, "node", n.Name, "err", err)
			}
		})
	}
	wg.Wait()
}

// initOrder lists the nodes allowed to initialize the pool, in the order
// placement gives.
func (l *Link) initOrder(ctx context.Context, pool store.Pool) ([]store.Node, error) {
	if len(pool.AssignedNodeIDs) == 0 {
		all, err := l.cfg.Store.ListNodes(ctx)
		if err != nil {
			return nil, err
		}
		return placement.Initializers(pool, all), nil
	}
	// Only the assigned nodes may initialize it: looked up one by one,
	// not by listing thousands of nodes for every pool created (under
	// initMu, which made creating pools one at a time).
	nodes := make([]store.Node, 0, len(pool.AssignedNodeIDs))
	for _, id := range pool.AssignedNodeIDs {
		n, err := l.cfg.Store.GetNode(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	return placement.Initializers(pool, nodes), nil
}

// poolFacts is what the node said about the pool at its last successful
// check; ok is false when it said nothing.
func (l *Link) poolFacts(nodeID, poolID string) (pf poolFact, ok bool) {
	s := l.state(nodeID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.facts == nil {
		return poolFact{}, false
	}
	for _, pf := range s.facts.pools {
		if pf.id.Value() == poolID {
			return pf, true
		}
	}
	return poolFact{}, false
}

func (l *Link) initThrough(ctx context.Context, pool store.Pool, n store.Node) error {
	c, err := l.conn(n)
	if err != nil {
		return fmt.Errorf("initializing pool %q on node %s: %s", pool.Name, n.Name, reason(err))
	}
	_, err = l.agents.InitPool(withConn(ctx, c), connect.NewRequest(&agentv1.InitPoolRequest{
		Pool: poolRef(pool),
	}))
	if err != nil {
		return fmt.Errorf("initializing pool %q on node %s: %w", pool.Name, n.Name, agentError(err))
	}
	l.log.Info("pool initialized", "pool", pool.Name, "node", n.Name, "path", pool.Path)
	return l.markInitialized(ctx, pool, n)
}

func (l *Link) markInitialized(ctx context.Context, pool store.Pool, n store.Node) error {
	err := l.cfg.Store.MarkPoolInitialized(ctx, pool.ID, n.ID)
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	// Every node that may use the pool should now re-check it, the
	// initializer included.
	l.KickPool(pool)
	return nil
}

// ensureAllInitialized tries, after each round, every pool of the round not yet
// initialized, using the facts the round gathered.
func (l *Link) ensureAllInitialized(ctx context.Context, pools []store.Pool) {
	for _, p := range pools {
		if p.InitializedBy != "" {
			continue
		}
		if err := l.EnsureInitialized(ctx, p, false); err != nil {
			l.log.Debug("pool not initialized yet", "pool", p.Name, "err", err)
		}
	}
}
