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
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/isoscan"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// listBatch is how many files one ListISOs message carries.
const listBatch = 512

// askWritersWithin: a listed ISO changed more recently than this, of which
// the file watch knows nothing, is checked for a writer holding it open.
// Older files are taken as written; the check costs an open per file.
const askWritersWithin = 15 * time.Minute

// isoWatches keeps one inotify watch per mounted pool's iso/ directory, so
// the agent knows which files are still being written, and fans their
// events out to the control plane's WatchPools streams.
type isoWatches struct {
	a       *Agent
	scanner *isoscan.Scanner
	// wg owns every watch goroutine; close waits for them.
	wg sync.WaitGroup

	mu     sync.Mutex
	pools  map[string]*poolWatch // by pool id
	closed bool
}

// poolWatch is the file watch of one pool's iso/ directory. It runs while
// at least one WatchPools stream asks for the pool: the set of watches is
// what the control plane asks to watch, nothing else.
type poolWatch struct {
	poolID string
	dir    string // host directory of the pool
	stop   context.CancelFunc
	users  int // WatchPools streams using it; guarded by isoWatches.mu

	mu      sync.Mutex
	writing map[string]bool      // pool-relative path → open for writing
	closed  map[string]time.Time // pool-relative path → when its writer closed it
	// subs are the WatchPools streams; true marks one that missed events
	// and must be told to rescan as soon as it has room.
	subs map[chan *agentv1.PoolEvent]bool
}

func newISOWatches(a *Agent) *isoWatches {
	return &isoWatches{a: a, scanner: isoscan.New(), pools: map[string]*poolWatch{}}
}

// close stops every watch and waits for their goroutines.
func (w *isoWatches) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		for id, pw := range w.pools {
			pw.stop()
			delete(w.pools, id)
		}
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// start watches dir/iso; nil when there is no iso/ directory to watch (a
// pool initialized by Quarry always has one). Called with w.mu held.
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
	w.wg.Go(func() {
		if err := watcher.Run(ctx, events); err != nil && ctx.Err() == nil {
			w.a.log.Warn("pool watch stopped", "pool", poolID, "err", err)
		}
		close(events)
	})
	w.wg.Go(func() {
		for e := range events {
			pw.record(e)
		}
	})
	w.a.log.Debug("watching pool for ISOs", "pool", poolID, "dir", isoDir)
	return pw
}

// acquire returns the watch of one pool (the caller checked it is mounted
// at dir), starting it if no stream uses it yet; nil if it cannot be
// watched. Every non-nil acquire needs one release.
func (w *isoWatches) acquire(poolID, dir string) *poolWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	pw, ok := w.pools[poolID]
	if ok && pw.dir != dir {
		// The pool moved on this node: streams of the old directory keep
		// their watch until they end; new ones get the new directory.
		delete(w.pools, poolID)
		ok = false
	}
	if !ok {
		if pw = w.start(poolID, dir); pw == nil {
			return nil
		}
		w.pools[poolID] = pw
	}
	pw.users++
	return pw
}

// release ends one use of pw; the last one stops the watch.
func (w *isoWatches) release(pw *poolWatch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw.users--; pw.users > 0 {
		return
	}
	pw.stop()
	if w.pools[pw.poolID] == pw {
		delete(w.pools, pw.poolID)
	}
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
		return poolRef{}, "", errclass.New(errclass.InvalidArgument, "pool is missing")
	}
	ref, err := checkPoolRef(p.GetId(), p.GetName(), p.GetPath())
	if err != nil {
		return poolRef{}, "", err
	}
	dir := s.a.paths.resolve(ref.path)
	if why := s.a.refusal(ref, dir); why != "" {
		return poolRef{}, "", errclass.New(errclass.FailedPrecondition, "%s", why)
	}
	if f := inspect(ref, dir); !f.mounted {
		return poolRef{}, "", errclass.New(errclass.FailedPrecondition, "%s", f.reason)
	}
	return ref, dir, nil
}

func (s *service) ListISOs(ctx context.Context, req *connect.Request[agentv1.ListISOsRequest], stream *connect.ServerStream[agentv1.ListISOsResponse]) error {
	ref, dir, err := s.mountedDir(req.Msg.GetPool())
	if err != nil {
		return errclass.ToConnect(err)
	}
	files, err := s.a.isos.scanner.Scan(ctx, dir, nil)
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "listing %s/%s: %v", ref.path, poolfs.ISODir, cause(err)))
	}
	if req.Msg.GetIncludeImages() {
		imgs, err := s.a.isos.scanner.ScanImages(ctx, dir)
		if err != nil {
			return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "listing %s/%s: %v", ref.path, poolfs.ImagesDir, cause(err)))
		}
		files = append(files, imgs...)
	}
	pw := s.a.isos.get(ref.id)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err)))
	}
	defer root.Close()
	batch := &agentv1.ListISOsResponse{}
	for _, f := range files {
		out := &agentv1.IsoFile{RelPath: f.RelPath, Size: f.Size, ModTime: timestamppb.New(f.ModTime),
			Label: f.Label, Bootable: f.Bootable, Problem: f.Problem, Format: f.Format}
		pw.annotate(out, f.ModTime)
		if !out.Writing && !out.Settled && poolfs.IsISOPath(f.RelPath) && time.Since(f.ModTime) < askWritersWithin {
			// The watch saw nothing of this recent file (it was created
			// before the watch started, or the agent restarted during the
			// copy): ask the kernel whether a writer still holds it.
			out.Writing, _ = openForWriting(root, f.RelPath)
		}
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
	// The forwarding goroutines end with this call, which waits for them.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	merged := make(chan *agentv1.PoolEvent, 256)
	for _, p := range req.Msg.GetPools() {
		if _, err := checkPoolRef(p.GetId(), p.GetName(), p.GetPath()); err != nil {
			return errclass.ToConnect(err)
		}
		ref, dir, err := s.mountedDir(p)
		if err != nil {
			continue // not mounted here
		}
		pw := s.a.isos.acquire(ref.id, dir)
		if pw == nil {
			continue // no iso/ to watch
		}
		defer s.a.isos.release(pw)
		ch, unsubscribe := pw.subscribe()
		defer unsubscribe()
		wg.Go(func() {
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
		})
	}
	// An empty first message tells the caller the watch is in place.
	if err := stream.Send(&agentv1.WatchPoolsResponse{}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.a.stopping:
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
		return nil, errclass.ToConnect(err)
	}
	rel := req.Msg.GetRelPath()
	if err := checkImagePath(rel); err != nil {
		return nil, errclass.ToConnect(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err)))
	}
	defer root.Close()
	err = root.Remove(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return connect.NewResponse(&agentv1.DeleteFileResponse{AlreadyGone: true}), nil
	}
	if err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "deleting %s in %s: %v", rel, ref.path, cause(err)))
	}
	s.a.log.Info("file deleted", "pool", ref.id, "path", rel)
	return connect.NewResponse(&agentv1.DeleteFileResponse{}), nil
}

// checkImagePath accepts only paths an image can have (poolfs.CheckImagePath):
// never the marker, partial downloads, or anything outside the pool.
func checkImagePath(rel string) error {
	if err := poolfs.CheckImagePath(rel); err != nil {
		return errclass.New(errclass.InvalidArgument, "file path %v", err)
	}
	return nil
}
