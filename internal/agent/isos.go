package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/quarry-project/quarry/internal/dirwatch"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/isoscan"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// listBatch is how many files one ListISOs message carries.
const listBatch = 512

// isoWatches keeps one inotify watch per mounted pool's iso/ directory, so
// the agent knows which files are still being written, and fans their
// events out to the control plane's WatchPools streams.
type isoWatches struct {
	a       *Agent
	scanner *isoscan.Scanner

	mu    sync.Mutex
	pools map[string]*poolWatch // by pool id
	// done is closed when the agent shuts down: watch streams end.
	done   chan struct{}
	closed bool
}

type poolWatch struct {
	poolID string
	dir    string // host directory of the pool
	stop   context.CancelFunc

	mu      sync.Mutex
	writing map[string]bool      // pool-relative path → open for writing
	closed  map[string]time.Time // pool-relative path → when its writer closed it
	// subs are the WatchPools streams; true marks one that missed events
	// and must be told to rescan as soon as it has room.
	subs map[chan *agentv1.PoolEvent]bool
}

func newISOWatches(a *Agent) *isoWatches {
	return &isoWatches{a: a, scanner: isoscan.New(), pools: map[string]*poolWatch{}, done: make(chan struct{})}
}

// close stops every watch and ends the WatchPools streams.
func (w *isoWatches) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	close(w.done)
	for id, pw := range w.pools {
		pw.stop()
		delete(w.pools, id)
	}
}

// sync makes the set of watches match the pools the control plane just
// asked about: watches for mounted pools, none for the rest.
func (w *isoWatches) sync(mounted map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for id, pw := range w.pools {
		if dir, ok := mounted[id]; !ok || dir != pw.dir {
			pw.stop()
			delete(w.pools, id)
		}
	}
	for id, dir := range mounted {
		if _, ok := w.pools[id]; !ok {
			if pw := w.start(id, dir); pw != nil {
				w.pools[id] = pw
			}
		}
	}
}

// start watches dir/iso; nil when there is no iso/ directory to watch (a
// pool initialized by Quarry always has one).
func (w *isoWatches) start(poolID, dir string) *poolWatch {
	isoDir := dir + "/" + poolfs.ISODir
	watcher, err := dirwatch.New(isoDir, poolfs.IsISOName)
	if err != nil {
		w.a.log.Warn("cannot watch pool for new ISOs; periodic scans still find them", "pool", poolID, "dir", isoDir, "err", err)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	pw := &poolWatch{poolID: poolID, dir: dir, stop: cancel,
		writing: map[string]bool{}, closed: map[string]time.Time{}, subs: map[chan *agentv1.PoolEvent]bool{}}
	events := make(chan dirwatch.Event, 256)
	go func() {
		if err := watcher.Run(ctx, events); err != nil {
			w.a.log.Warn("pool watch stopped", "pool", poolID, "err", err)
		}
		close(events)
	}()
	go func() {
		for e := range events {
			pw.record(e)
		}
	}()
	w.a.log.Debug("watching pool for ISOs", "pool", poolID, "dir", isoDir)
	return pw
}

// ensure watches one pool (the caller checked it is mounted at dir) and
// returns its watch, nil if it cannot be watched.
func (w *isoWatches) ensure(poolID, dir string) *poolWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	if pw, ok := w.pools[poolID]; ok && pw.dir == dir {
		return pw
	} else if ok {
		pw.stop()
	}
	pw := w.start(poolID, dir)
	if pw != nil {
		w.pools[poolID] = pw
	}
	return pw
}

func (w *isoWatches) get(poolID string) *poolWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pools[poolID]
}

// record updates what is known of a file and forwards settled, removed
// and overflow events to subscribers.
func (pw *poolWatch) record(e dirwatch.Event) {
	rel := path.Join(poolfs.ISODir, e.RelPath)
	pw.mu.Lock()
	defer pw.mu.Unlock()
	ev := &agentv1.PoolEvent{PoolId: pw.poolID, RelPath: rel}
	switch e.Op {
	case dirwatch.Writing:
		pw.writing[rel] = true
		return
	case dirwatch.Settled:
		delete(pw.writing, rel)
		pw.closed[rel] = time.Now()
		ev.Op = agentv1.FileOp_FILE_OP_SETTLED
	case dirwatch.Removed:
		delete(pw.writing, rel)
		delete(pw.closed, rel)
		ev.Op = agentv1.FileOp_FILE_OP_REMOVED
	case dirwatch.Overflow:
		ev.RelPath, ev.Op = "", agentv1.FileOp_FILE_OP_OVERFLOW
	}
	for ch, missed := range pw.subs {
		if missed {
			// It lost events: one overflow (rescan) stands for them all.
			select {
			case ch <- &agentv1.PoolEvent{PoolId: pw.poolID, Op: agentv1.FileOp_FILE_OP_OVERFLOW}:
				pw.subs[ch] = false
			default:
			}
			continue
		}
		select {
		case ch <- ev:
		default:
			pw.subs[ch] = true
		}
	}
}

// annotate adds what the watch knows to a listed file.
func (pw *poolWatch) annotate(f *agentv1.IsoFile, mod time.Time) {
	if pw == nil {
		return
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	f.Writing = pw.writing[f.RelPath]
	if at, ok := pw.closed[f.RelPath]; ok && !at.Before(mod) {
		f.Settled = true
	}
}

func (pw *poolWatch) subscribe() (chan *agentv1.PoolEvent, func()) {
	ch := make(chan *agentv1.PoolEvent, 256)
	pw.mu.Lock()
	pw.subs[ch] = false
	pw.mu.Unlock()
	return ch, func() {
		pw.mu.Lock()
		delete(pw.subs, ch)
		pw.mu.Unlock()
	}
}

// mountedDir checks a pool reference and that this node mounts the pool,
// returning its host directory.
func (s *service) mountedDir(p *agentv1.PoolRef) (poolRef, string, error) {
	if p == nil {
		return poolRef{}, "", invalidArgument("pool is missing")
	}
	ref, err := checkPoolRef(p.GetId(), p.GetName(), p.GetPath())
	if err != nil {
		return poolRef{}, "", err
	}
	dir := s.a.paths.resolve(ref.path)
	if f := inspect(ref, dir); !f.mounted {
		return poolRef{}, "", failedPrecondition("%s", f.reason)
	}
	return ref, dir, nil
}

func (s *service) ListISOs(ctx context.Context, req *connect.Request[agentv1.ListISOsRequest], stream *connect.ServerStream[agentv1.ListISOsResponse]) error {
	ref, dir, err := s.mountedDir(req.Msg.GetPool())
	if err != nil {
		return connectError(err)
	}
	files, err := s.a.isos.scanner.Scan(ctx, dir, nil)
	if err != nil {
		return connectError(failedPrecondition("listing %s/%s: %v", ref.path, poolfs.ISODir, cause(err)))
	}
	pw := s.a.isos.get(ref.id)
	batch := &agentv1.ListISOsResponse{}
	for _, f := range files {
		out := &agentv1.IsoFile{RelPath: f.RelPath, Size: f.Size, ModTime: timestamppb.New(f.ModTime),
			Label: f.Label, Bootable: f.Bootable, Problem: f.Problem}
		pw.annotate(out, f.ModTime)
		batch.Files = append(batch.Files, out)
		if len(batch.Files) == listBatch {
			if err := stream.Send(batch); err != nil {
				return err
			}
			batch = &agentv1.ListISOsResponse{}
		}
	}
	return stream.Send(batch)
}

func (s *service) WatchPools(ctx context.Context, req *connect.Request[agentv1.WatchPoolsRequest], stream *connect.ServerStream[agentv1.WatchPoolsResponse]) error {
	merged := make(chan *agentv1.PoolEvent, 256)
	for _, p := range req.Msg.GetPools() {
		ref, err := checkPoolRef(p.GetId(), p.GetName(), p.GetPath())
		if err != nil {
			return connectError(err)
		}
		// The stream may come before the next health check told this
		// agent (say, just restarted) which pools to watch.
		pw := s.a.isos.get(ref.id)
		if pw == nil {
			if _, dir, err := s.mountedDir(p); err == nil {
				pw = s.a.isos.ensure(ref.id, dir)
			}
		}
		if pw == nil {
			continue // not mounted here, or no iso/ to watch
		}
		ch, unsubscribe := pw.subscribe()
		defer unsubscribe()
		go func() {
			for {
				select {
				case e := <-ch:
					select {
					case merged <- e:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	// An empty first message tells the caller the watch is in place.
	if err := stream.Send(&agentv1.WatchPoolsResponse{}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.a.isos.done:
			return nil
		case e := <-merged:
			batch := &agentv1.WatchPoolsResponse{Events: []*agentv1.PoolEvent{e}}
			for len(merged) > 0 && len(batch.Events) < 256 {
				batch.Events = append(batch.Events, <-merged)
			}
			if err := stream.Send(batch); err != nil {
				return err
			}
		}
	}
}

func (s *service) DeleteFile(ctx context.Context, req *connect.Request[agentv1.DeleteFileRequest]) (*connect.Response[agentv1.DeleteFileResponse], error) {
	ref, dir, err := s.mountedDir(req.Msg.GetPool())
	if err != nil {
		return nil, connectError(err)
	}
	rel := req.Msg.GetRelPath()
	if err := checkImagePath(rel); err != nil {
		return nil, connectError(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, connectError(failedPrecondition("opening %s: %v", ref.path, cause(err)))
	}
	defer root.Close()
	err = root.Remove(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return connect.NewResponse(&agentv1.DeleteFileResponse{AlreadyGone: true}), nil
	}
	if err != nil {
		return nil, connectError(failedPrecondition("deleting %s in %s: %v", rel, ref.path, cause(err)))
	}
	s.a.log.Info("file deleted", "pool", ref.id, "path", rel)
	return connect.NewResponse(&agentv1.DeleteFileResponse{}), nil
}

// checkImagePath accepts only paths an image can have (poolfs.CheckImagePath):
// never the marker, partial downloads, or anything outside the pool.
func checkImagePath(rel string) error {
	if err := poolfs.CheckImagePath(rel); err != nil {
		return invalidArgument("file path %v", err)
	}
	return nil
}
