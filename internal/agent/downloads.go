package agent

import (
	"context"
	"errors"
	"fmt"
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
	if m.GetJobId() == "" || m.GetUrl() == "" {
		return nil, errclass.ToConnect(errclass.New(errclass.InvalidArgument, "job id and URL are required"))
	}
	if err := checkImagePath(m.GetDest()); err != nil {
		return nil, errclass.ToConnect(err)
	}
	policy, err := urlpolicy.Parse(m.GetPolicy().GetAllow(), m.GetPolicy().GetDeny())
	if err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.InvalidArgument, "%v", err))
	}
	policy.AllowLoopback, policy.DenyPrivate = m.GetPolicy().GetAllowLoopback(), m.GetPolicy().GetDenyPrivate()

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
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err)))
	}
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &download{cancel: cancel, done: make(chan struct{}), subs: map[chan *agentv1.DownloadStatus]struct{}{},
		status: &agentv1.DownloadStatus{JobId: m.GetJobId(), Fence: m.GetFence(), State: agentv1.DownloadState_DOWNLOAD_STATE_RUNNING, Phase: "preflight"}}
	dl.jobs[m.GetJobId()] = d
	dl.forgetOld()
	go dl.run(jctx, d, root, m, policy)
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

func (dl *downloads) run(ctx context.Context, d *download, root *os.Root, m *agentv1.StartDownloadRequest, policy *urlpolicy.Policy) {
	defer close(d.done)
	defer root.Close()
	log := dl.a.log.With("job", m.GetJobId(), "fence", m.GetFence())
	// HTTP/1.1 (the policy's dialer keeps HTTP/2 off): the connections of
	// a segmented download are separate TCP connections, which is what
	// origins that throttle each connection count.
	client := policy.Client(&http.Transport{ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second,
		MaxIdleConnsPerHost: dl.a.cfg.DownloadHostConnections})
	res, err := dl.fetch(ctx, d, root, m, client)
	d.set(func(s *agentv1.DownloadStatus) {
		switch {
		case err == nil:
			s.State, s.Phase = agentv1.DownloadState_DOWNLOAD_STATE_SUCCEEDED, "finalizing"
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
func (dl *downloads) fetch(ctx context.Context, d *download, root *os.Root, m *agentv1.StartDownloadRequest, client *http.Client) (ingest.Result, error) {
	var digest checksum.Digest
	var err error
	switch {
	case m.GetChecksum() != "":
		if digest, err = checksum.ParseDigest(m.GetChecksum()); err != nil {
			return ingest.Result{}, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
		}
	case m.GetChecksumUrl() != "":
		if digest, err = lookupChecksum(ctx, client, m.GetChecksumUrl(), path.Base(urlPath(m.GetUrl()))); err != nil {
			return ingest.Result{}, err
		}
	}
	sh := dl.bw.join(m.GetUrl(), m.GetMaxBytesPerSecond(), dl.a.cfg.DownloadConnections)
	defer dl.bw.leave(sh)
	return ingest.Download(ctx, ingest.Request{
		Job: m.GetJobId(), Fence: uint64(m.GetFence()), URL: m.GetUrl(), Expected: digest,
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
		Progress: func(p ingest.Progress) {
			d.set(func(s *agentv1.DownloadStatus) {
				s.Phase, s.BytesDone, s.BytesTotal, s.BytesPerSecond = p.Phase, p.Done, p.Total, p.BytesPerSec
				s.Connections, s.RateLimitBytesPerSecond = int32(p.Connections), dl.bw.current(sh)
			})
		},
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

// lookupChecksum fetches a checksum file and finds the file's digest in it.
func lookupChecksum(ctx context.Context, client *http.Client, sumsURL, fileName string) (checksum.Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sumsURL, nil)
	if err != nil {
		return checksum.Digest{}, fmt.Errorf("checksum file URL %s: %w", sumsURL, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return checksum.Digest{}, fmt.Errorf("fetching the checksum file %s: %w", sumsURL, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return checksum.Digest{}, fmt.Errorf("fetching the checksum file %s: %s", sumsURL, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return checksum.Digest{}, errclass.New(errclass.InvalidArgument, "fetching the checksum file %s: %s; check the URL or give --checksum", sumsURL, resp.Status)
	}
	entries, err := checksum.Parse(resp.Body, 1<<20)
	if err != nil {
		return checksum.Digest{}, errclass.Wrap(errclass.InvalidArgument, err, "reading the checksum file %s: %v", sumsURL, err)
	}
	e, err := checksum.FindIn(sumsURL, entries, fileName)
	if err != nil {
		return checksum.Digest{}, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
	}
	return e.Digest(), nil
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
