package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
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
// the agent knows which files are still being written, and records their
// events in its event log, for the control plane's checks to collect.
type isoWatches struct {
	a       *Agent
	scanner *isoscan.Scanner
	log     *eventLog
	// wg owns every watch goroutine; close waits for them.
	wg sync.WaitGroup

	mu     sync.Mutex
	pools  map[string]*poolWatch // by pool id
	closed bool
}

// poolWatch is the file watch of one pool's iso/ directory. It runs while
// the control plane's checks name the pool and the agent mounts it: the
// set of watches is what the last check asked about, nothing else.
type poolWatch struct {
	poolID string
	dir    string // host directory of the pool
	stop   context.CancelFunc
	log    *eventLog

	mu      sync.Mutex
	writing map[string]bool      // pool-relative path → open for writing
	closed  map[string]time.Time // pool-relative path → when its writer closed it
}

func newISOWatches(a *Agent, notify func()) *isoWatches {
	return &isoWatches{a: a, scanner: isoscan.New(), log: newEventLog(notify), pools: map[string]*poolWatch{}}
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
	pw := &poolWatch{poolID: poolID, dir: dir, stop: cancel, log: w.log,
		writing: map[string]bool{}, closed: map[string]time.Time{}}
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

// sync makes the watches those of want (pool id → host directory of a
// mounted pool): it starts the missing ones, each with an overflow event
// (a rescan finds what the pool held before), restarts one whose pool
// moved to another directory, stops the others, and returns the ids of
// the pools watched.
func (w *isoWatches) sync(want map[string]string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	for id, pw := range w.pools {
		if dir, ok := want[id]; !ok || dir != pw.dir {
			pw.stop()
			delete(w.pools, id)
			w.a.log.Debug("no longer watching pool for ISOs", "pool", id, "dir", pw.dir)
		}
	}
	for id, dir := range want {
		if _, ok := w.pools[id]; ok {
			continue
		}
		if pw := w.start(id, dir); pw != nil {
			w.pools[id] = pw
			// What the pool held before the watch is for a scan to find.
			w.log.add(&agentv1.PoolEvent{PoolId: id, Op: agentv1.FileOp_FILE_OP_OVERFLOW})
		}
	}
	ids := make([]string, 0, len(w.pools))
	for id := range w.pools {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (w *isoWatches) get(poolID string) *poolWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pools[poolID]
}

// record updates what is known of a file and logs settled, removed and
// overflow events.
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
	pw.log.add(ev)
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
