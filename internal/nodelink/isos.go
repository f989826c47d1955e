package nodelink

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

func poolRef(p store.Pool) *agentv1.PoolRef {
	return &agentv1.PoolRef{Id: p.ID, Name: p.Name, Path: p.Path}
}

// ListISOs asks a node for the ISO files of a pool and the files under its
// images/; progress receives the number of files listed so far.
func (l *Link) ListISOs(ctx context.Context, nodeID string, pool store.Pool, progress func(seen int)) ([]*agentv1.IsoFile, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	stream, err := c.ListISOs(ctx, connect.NewRequest(&agentv1.ListISOsRequest{Pool: poolRef(pool), IncludeImages: true}))
	if err != nil {
		return nil, agentError(err)
	}
	defer stream.Close()
	var files []*agentv1.IsoFile
	for stream.Receive() {
		files = append(files, stream.Msg().GetFiles()...)
		if progress != nil {
			progress(len(files))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, agentError(err)
	}
	return files, nil
}

// DeleteFile removes one file of a pool through a node; a file already
// gone is not an error.
func (l *Link) DeleteFile(ctx context.Context, nodeID string, pool store.Pool, relPath string) error {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	_, err = c.DeleteFile(ctx, connect.NewRequest(&agentv1.DeleteFileRequest{Pool: poolRef(pool), RelPath: relPath}))
	if err != nil {
		return agentError(err)
	}
	return nil
}

// PoolEventHandler receives the file events agents report: a pool whose
// iso/ directory changed on a node.
type PoolEventHandler func(nodeID string, ev *agentv1.PoolEvent)

// EventWatcher keeps one WatchPools stream open to every READY node, for
// the pools that node mounts, and hands their events to a handler.
type EventWatcher struct {
	link    *Link
	handler PoolEventHandler
	// wg owns the streams' goroutines; Run waits for them.
	wg sync.WaitGroup

	mu      sync.Mutex
	streams map[string]*eventStream // by node id
}

type eventStream struct {
	pools  string // sorted pool ids, to notice a change
	cancel context.CancelFunc
	done   chan struct{}
}

// NewEventWatcher returns a watcher; Run keeps its streams.
func (l *Link) NewEventWatcher(h PoolEventHandler) *EventWatcher {
	return &EventWatcher{link: l, handler: h, streams: map[string]*eventStream{}}
}

// Run re-syncs the streams with the nodes' state every health interval
// (a stream that ended is reopened then, if still wanted), and as soon as
// a check finds a node mounting other pools, until ctx is done; it returns
// once every stream has ended.
func (w *EventWatcher) Run(ctx context.Context) {
	defer w.wg.Wait()
	t := time.NewTicker(w.link.cfg.Interval)
	defer t.Stop()
	for {
		w.sync(ctx)
		synced := time.Now()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			for _, s := range w.streams {
				s.cancel()
			}
			w.mu.Unlock()
			return
		case <-t.C:
		case <-w.link.mountsChanged:
			// Changes come in bursts (a round of checks of thousands of
			// nodes): syncing once a second at most follows them.
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(synced.Add(time.Second))):
			}
		}
	}
}

// sync opens a stream for every READY node that mounts pools, restarts it
// when its pools changed, and closes the rest.
func (w *EventWatcher) sync(ctx context.Context) {
	pools, err := w.link.cfg.Store.ListPools(ctx)
	if err != nil {
		return
	}
	byID := map[string]store.Pool{}
	for _, p := range pools {
		byID[p.ID] = p
	}
	want := map[string][]store.Pool{}
	w.link.mu.Lock()
	for nodeID, st := range w.link.nodes {
		if st.facts == nil {
			continue
		}
		for _, pf := range st.facts.pools {
			if p, ok := byID[pf.id.Value()]; ok && pf.mounted {
				want[nodeID] = append(want[nodeID], p)
			}
		}
	}
	w.link.mu.Unlock()

	w.mu.Lock()
	defer w.mu.Unlock()
	for nodeID, s := range w.streams {
		select {
		case <-s.done:
			delete(w.streams, nodeID) // ended: reopen below if still wanted
			continue
		default:
		}
		if key(want[nodeID]) != s.pools {
			s.cancel()
			delete(w.streams, nodeID)
		}
	}
	for nodeID, ps := range want {
		if _, ok := w.streams[nodeID]; ok {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		s := &eventStream{pools: key(ps), cancel: cancel, done: make(chan struct{})}
		w.streams[nodeID] = s
		w.wg.Go(func() { w.stream(sctx, nodeID, ps, s.done) })
	}
}

func key(ps []store.Pool) string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	slices.Sort(ids)
	return strings.Join(ids, ",")
}

// stream reads one node's events until the stream ends. When it opens, the
// handler gets an overflow event per pool: whatever changed while no
// stream was open is found by the scan that follows.
func (w *EventWatcher) stream(ctx context.Context, nodeID string, pools []store.Pool, done chan struct{}) {
	defer close(done)
	ctx, c, err := w.link.Client(ctx, nodeID)
	if err != nil {
		return
	}
	req := &agentv1.WatchPoolsRequest{}
	for _, p := range pools {
		req.Pools = append(req.Pools, poolRef(p))
	}
	s, err := c.WatchPools(ctx, connect.NewRequest(req))
	if err != nil {
		return
	}
	defer s.Close()
	first := true
	for s.Receive() {
		if first {
			first = false
			for _, p := range pools {
				w.handler(nodeID, &agentv1.PoolEvent{PoolId: p.ID, Op: agentv1.FileOp_FILE_OP_OVERFLOW})
			}
		}
		for _, ev := range s.Msg().GetEvents() {
			w.handler(nodeID, ev)
		}
	}
	if ctx.Err() == nil {
		// The node broke the stream (its agent stopped, its connection
		// was cut): check it now rather than at its next turn, so that the
		// API shows it within a check of the break.
		w.link.log.Debug("pool event stream ended", "node", nodeID, "err", s.Err())
		w.link.Kick(nodeID)
	}
}
