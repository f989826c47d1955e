package agent

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/ingest"
	"github.com/quarry-project/quarry/internal/urlpolicy"
)

// keepFinished is how long the agent remembers how a download ended, so a
// control plane that lost the stream can still learn it.
const keepFinished = 10 * time.Minute

// downloads runs the agent's downloads: one goroutine per job, its status
// fanned out to watchers.
type downloads struct {
	a  *Agent
	mu sync.Mutex
	// jobs by id; finished ones stay for keepFinished.
	jobs map[string]*download
	// stopped: the agent is shutting down and starts no download.
	stopped bool
	// bw shares the node's bandwidth and connections between downloads.
	bw *bandwidth
}

type download struct {
	cancel context.CancelFunc
	// discard: the control plane cancelled the job (CancelDownload removes
	// its files once it has stopped).
	discard bool
	done    chan struct{}

	mu     sync.Mutex
	status *agentv1.DownloadStatus
	subs   map[chan *agentv1.DownloadStatus]struct{}
	ended  time.Time
}

func newDownloads(a *Agent) *downloads {
	return &downloads{a: a, jobs: map[string]*download{}, bw: newBandwidth(a.cfg.NodeDownloadRate, a.cfg.DownloadHostConnections)}
}

func (d *download) snapshot() *agentv1.DownloadStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return cloneStatus(d.status)
}

func cloneStatus(s *agentv1.DownloadStatus) *agentv1.DownloadStatus {
	return proto.CloneOf(s)
}

// set updates the status and tells every watcher.
func (d *download) set(f func(s *agentv1.DownloadStatus)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d.status)
	s := cloneStatus(d.status)
	for ch := range d.subs {
		select {
		case ch <- s:
		default: // a slow watcher gets the next one
		}
	}
}

func final(s agentv1.DownloadState) bool {
	return s != agentv1.DownloadState_DOWNLOAD_STATE_RUNNING && s != agentv1.DownloadState_DOWNLOAD_STATE_UNSPECIFIED
}

func (s *service) StartDownload(ctx context.Context, req *connect.Request[agentv1.StartDownloadRequest]) (*connect.Response[agentv1.StartDownloadResponse], error) {
	m := req.Msg
	ref, dir, err := s.mountedDir(m.GetPool())
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	if m.GetJobId() == "" || (m.GetUrl() == "" && m.GetPeer() == nil && m.GetLocal() == nil) {
		return nil, errclass.ToConnect(errclass.New(errclass.InvalidArgument, "job id and URL (or a copy's source) are required"))
	}
	if err := checkImagePath(m.GetDest()); err != nil {
		return nil, errclass.ToConnect(err)
	}

	dl := s.a.downloads
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.stopped {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the agent is shutting down; the download resumes from its checkpoint on this node or another"))
	}
	if cur, ok := dl.jobs[m.GetJobId()]; ok {
		st := cur.snapshot()
		switch {
		case st.GetFence() > m.GetFence():
			return connect.NewResponse(&agentv1.StartDownloadResponse{Status: &agentv1.DownloadStatus{
				JobId: m.GetJobId(), Fence: m.GetFence(), State: agentv1.DownloadState_DOWNLOAD_STATE_FENCED}}), nil
		case st.GetFence() == m.GetFence() && (!final(st.GetState()) || st.GetState() == agentv1.DownloadState_DOWNLOAD_STATE_SUCCEEDED):
			return connect.NewResponse(&agentv1.StartDownloadResponse{Status: st}), nil
		}
		cur.cancel()
		<-cur.done
	}
	src, err := s.source(m)
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if src.local != nil {
			src.local.Close()
		}
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err)))
	}
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &download{cancel: cancel, done: make(chan struct{}), subs: map[chan *agentv1.DownloadStatus]struct{}{},
		status: &agentv1.DownloadStatus{JobId: m.GetJobId(), Fence: m.GetFence(), State: agentv1.DownloadState_DOWNLOAD_STATE_RUNNING, Phase: "preflight"}}
	dl.jobs[m.GetJobId()] = d
	dl.forgetOld()
	go dl.run(jctx, d, root, m, src)
	return connect.NewResponse(&agentv1.StartDownloadResponse{Status: d.snapshot()}), nil
}

// forgetOld drops downloads that ended long ago. Called with dl.mu held.
func (dl *downloads) forgetOld() {
	for id, d := range dl.jobs {
		d.mu.Lock()
		old := !d.ended.IsZero() && time.Since(d.ended) > keepFinished
		d.mu.Unlock()
		if old {
			delete(dl.jobs, id)
		}
	}
}

// agentPolicy is the control plane's URL policy as the agent enforces it.
func agentPolicy(p *agentv1.URLPolicy) (*urlpolicy.Policy, error) {
	policy, err := urlpolicy.Parse(p.GetAllow(), p.GetDeny())
	if err != nil {
		return nil, errclass.New(errclass.InvalidArgument, "%v", err)
	}
	policy.AllowLoopback, policy.DenyPrivate = p.GetAllowLoopback(), p.GetDenyPrivate()
	return policy, nil
}

// source is where a download's bytes come from: an origin through the URL
// policy, another node's peer endpoint (a copy), or a file of a pool this
// node mounts (a local copy: local is set).
type source struct {
	client *http.Client
	url    string
	local  *os.Root
	// localPath is the file in local; localID names it across restarts.
	localPath, localID string
}

func (s *service) source(m *agentv1.StartDownloadRequest) (source, error) {
	switch {
	case m.GetLocal() != nil:
		if m.GetChecksum() == "" {
			return source{}, errclass.New(errclass.InvalidArgument, "a copy needs the source's digest")
		}
		if err := checkImagePath(m.GetLocal().GetRelPath()); err != nil {
			return source{}, err
		}
		ref, dir, err := s.mountedDir(m.GetLocal().GetPool())
		if err != nil {
			return source{}, err
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			return source{}, errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err))
		}
		return source{local: root, localPath: m.GetLocal().GetRelPath(), localID: "local:" + ref.id + "/" + m.GetLocal().GetRelPath()}, nil
	case m.GetPeer() != nil:
		d, err := checksum.ParseDigest(m.GetChecksum())
		if err != nil || d.Algo != checksum.SHA256 {
			return source{}, errclass.New(errclass.InvalidArgument, "a copy from another node needs the source's SHA-256 digest")
		}
		client, err := s.a.peerClient(m.GetPeer())
		if err != nil {
			return source{}, err
		}
		return source{client: client, url: peerURL(d.Hex)}, nil
	}
	policy, err := agentPolicy(m.GetPolicy())
	if err != nil {
		return source{}, err
	}
	// HTTP/1.1 (the policy's dialer keeps HTTP/2 off): the connections of
	// a segmented download are separate TCP connections, which is what
	// origins that throttle each connection count.
	client := policy.Client(&http.Transport{ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second,
		MaxIdleConnsPerHost: s.a.cfg.DownloadHostConnections})
	return source{client: client, url: m.GetUrl()}, nil
}

func (dl *downloads) run(ctx context.Context, d *download, root *os.Root, m *agentv1.StartDownloadRequest, src source) {
	defer close(d.done)
	defer root.Close()
	log := dl.a.log.With("job", m.GetJobId(), "fence", m.GetFence())
	var res ingest.Result
	var method string
	var err error
	if src.local != nil {
		var cres ingest.CopyResult
		cres, err = dl.copyLocal(ctx, d, root, m, src)
		src.local.Close()
		res, method = cres.Result, cres.Method
	} else {
		res, err = dl.fetch(ctx, d, root, m, src)
		src.client.CloseIdleConnections()
	}
	d.set(func(s *agentv1.DownloadStatus) {
		switch {
		case err == nil:
			s.State, s.Phase = agentv1.DownloadState_DOWNLOAD_STATE_SUCCEEDED, "finalizing"
			s.CopyMethod = method
			s.Sha256, s.Size, s.Format, s.VirtualSize, s.Dest = res.SHA256, res.Size, res.Format, res.VirtualSize, res.Dest
			s.Resumed, s.FetchedBytes, s.BytesDone, s.BytesTotal = res.Resumed, res.FetchedBytes, res.Size, res.Size
		case errors.Is(err, ingest.ErrFenced):
			s.State, s.Error = agentv1.DownloadState_DOWNLOAD_STATE_FENCED, err.Error()
		case ctx.Err() != nil && d.discard: // d.mu is held inside set
			s.State = agentv1.DownloadState_DOWNLOAD_STATE_CANCELLED
		case ctx.Err() != nil:
			// The agent is stopping or the job moved: the checkpoint stays
			// for whoever resumes it.
			s.State = agentv1.DownloadState_DOWNLOAD_STATE_UNKNOWN
		case errors.Is(err, errclass.Terminal): // bad input too: a malformed digest, a checksum file without the file
			s.State, s.Error = agentv1.DownloadState_DOWNLOAD_STATE_FAILED, err.Error()
		default:
			// Transient and out of retries for now: the partial file and
			// checkpoint stay, and the control plane starts it again.
			s.State, s.Error = agentv1.DownloadState_DOWNLOAD_STATE_UNKNOWN, err.Error()
		}
		if s.Error != "" {
			s.ErrorClass = errclass.Wire(err)
		}
	})
	d.mu.Lock()
	d.ended = time.Now() // a cancelled one's files go in CancelDownload
	d.mu.Unlock()
	log.Info("download ended", "state", d.snapshot().GetState(), "err", err)
}

// fetch resolves the expected digest (from a checksum file if need be) and
// runs the ingestion.
// copyLocal copies a file of a pool this node mounts (see ingest.Copy).
func (dl *downloads) copyLocal(ctx context.Context, d *download, root *os.Root, m *agentv1.StartDownloadRequest, src source) (ingest.CopyResult, error) {
	digest, err := checksum.ParseDigest(m.GetChecksum())
	if err != nil {
		return ingest.CopyResult{}, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
	}
	return ingest.Copy(ctx, ingest.CopyRequest{
		Job: m.GetJobId(), Fence: uint64(m.GetFence()),
		Src: src.local, SrcPath: src.localPath, Source: src.localID,
		Root: root, Dest: m.GetDest(), Expected: digest, Describe: m.GetDescribe(),
		CheckpointEvery: dl.a.cfg.CheckpointEvery,
		Progress:        progress(d, true, nil),
	})
}

// progress reports a download's progress in its status, and what more
// sets (nil: nothing); a copy's bytes are "copying", not "downloading".
func progress(d *download, copying bool, more func(*agentv1.DownloadStatus, ingest.Progress)) func(ingest.Progress) {
	return func(p ingest.Progress) {
		phase := p.Phase
		if copying && phase == ingest.PhaseDownloading {
			phase = phaseCopying
		}
		d.set(func(s *agentv1.DownloadStatus) {
			s.Phase, s.BytesDone, s.BytesTotal, s.BytesPerSecond = phase, p.Done, p.Total, p.BytesPerSec
			if more != nil {
				more(s, p)
			}
		})
	}
}

// phaseCopying is a copy's phase while its bytes move.
const phaseCopying = "copying"

func (dl *downloads) fetch(ctx context.Context, d *download, root *os.Root, m *agentv1.StartDownloadRequest, src source) (ingest.Result, error) {
	client := src.client
	var digest checksum.Digest
	var err error
	switch {
	case m.GetChecksum() != "":
		if digest, err = checksum.ParseDigest(m.GetChecksum()); err != nil {
			return ingest.Result{}, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
		}
	case m.GetChecksumUrl() != "":
		if digest, err = checksum.Lookup(ctx, client, m.GetChecksumUrl(), path.Base(urlPath(m.GetUrl()))); err != nil {
			return ingest.Result{}, err
		}
	}
	conns := dl.a.cfg.DownloadConnections
	if m.GetPeer() != nil {
		conns = 1 // a copy from a node: one stream, as the peer's --peer-read-rate paces it
	}
	sh := dl.bw.join(src.url, m.GetMaxBytesPerSecond(), conns)
	defer dl.bw.leave(sh)
	return ingest.Download(ctx, ingest.Request{
		Job: m.GetJobId(), Fence: uint64(m.GetFence()), URL: src.url, Expected: digest,
		Root: root, Dest: m.GetDest(), Client: client, Describe: m.GetDescribe(),
		CheckpointEvery: dl.a.cfg.CheckpointEvery,
		Connections:     sh.conns, SegmentMin: dl.a.cfg.DownloadSegmentMin, Limiter: sh.limiter,
		OnNotice: func(msg string) {
			d.set(func(s *agentv1.DownloadStatus) { s.Notice = msg })
		},
		// An attempt that got further is retried here at once; one that did
		// not ends the call, and the control plane decides when to try
		// again (its backoff and retry budget survive restarts).
		MaxAttempts: 1,
		OnFailure: func(f ingest.Failure) {
			d.set(func(s *agentv1.DownloadStatus) {
				s.FailedAttempts++
				s.AttemptError, s.AttemptProgressed = f.Err.Error(), f.Progressed
				s.RetryAfterMs = f.RetryAfter.Milliseconds()
			})
		},
		Progress: progress(d, m.GetPeer() != nil, func(s *agentv1.DownloadStatus, p ingest.Progress) {
			s.Connections, s.RateLimitBytesPerSecond = int32(p.Connections), dl.bw.current(sh)
		}),
	})
}

// stopAll stops every running download, keeping checkpoints for resuming
// after the agent restarts.
func (dl *downloads) stopAll() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.stopped = true
	for _, d := range dl.jobs {
		d.cancel()
		<-d.done
	}
}

func urlPath(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Path
}

func (s *service) WatchDownload(ctx context.Context, req *connect.Request[agentv1.WatchDownloadRequest], stream *connect.ServerStream[agentv1.WatchDownloadResponse]) error {
	dl := s.a.downloads
	dl.mu.Lock()
	d, ok := dl.jobs[req.Msg.GetJobId()]
	dl.mu.Unlock()
	if !ok {
		return stream.Send(&agentv1.WatchDownloadResponse{Status: &agentv1.DownloadStatus{
			JobId: req.Msg.GetJobId(), State: agentv1.DownloadState_DOWNLOAD_STATE_UNKNOWN}})
	}
	ch := make(chan *agentv1.DownloadStatus, 16)
	d.mu.Lock()
	d.subs[ch] = struct{}{}
	cur := cloneStatus(d.status)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.subs, ch)
		d.mu.Unlock()
	}()
	// The status goes out at least every heartbeat, changed or not: the
	// control plane takes silence for a hung or cut-off node.
	heartbeat := time.Duration(req.Msg.GetHeartbeatMs()) * time.Millisecond
	if heartbeat <= 0 {
		heartbeat = time.Second
	}
	t := time.NewTimer(heartbeat)
	defer t.Stop()
	for st := cur; ; {
		if err := stream.Send(&agentv1.WatchDownloadResponse{Status: st}); err != nil {
			return err
		}
		if final(st.GetState()) {
			return nil
		}
		t.Reset(heartbeat)
		select {
		case <-ctx.Done():
			return nil
		case <-s.a.stopping: // the agent is shutting down
			return nil
		case st = <-ch:
		case <-t.C:
			st = d.snapshot()
		case <-d.done:
			st = d.snapshot()
		}
	}
}

func (s *service) CancelDownload(ctx context.Context, req *connect.Request[agentv1.CancelDownloadRequest]) (*connect.Response[agentv1.CancelDownloadResponse], error) {
	dl := s.a.downloads
	dl.mu.Lock()
	d, ok := dl.jobs[req.Msg.GetJobId()]
	dl.mu.Unlock()
	if ok {
		d.mu.Lock()
		d.discard = true
		d.mu.Unlock()
		d.cancel()
		<-d.done
	}
	// Whether it ran here or not (it ended already, or the agent
	// restarted since): remove what is left.
	if err := s.discardJob(req.Msg.GetPool(), req.Msg.GetJobId()); err != nil {
		return nil, errclass.ToConnect(err)
	}
	return connect.NewResponse(&agentv1.CancelDownloadResponse{}), nil
}

// discardJob removes every file a download or upload left in the pool's
// partial directory; a job with nothing left is no error.
func (s *service) discardJob(pool *agentv1.PoolRef, jobID string) error {
	_, dir, err := s.mountedDir(pool)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return errclass.New(errclass.FailedPrecondition, "opening the pool: %v", cause(err))
	}
	defer root.Close()
	if err := ingest.Discard(root, jobID); err != nil {
		return errclass.New(errclass.FailedPrecondition, "removing the partial file: %v", cause(err))
	}
	return nil
}
