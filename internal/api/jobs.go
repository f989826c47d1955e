package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/store"
)

// JobService implements quarry.v1.JobService.
type JobService struct {
	quarryv1connect.UnimplementedJobServiceHandler
	Store store.Store
	// Enqueue asks the controllers of jobs (downloads, verifies) to look
	// at a job now (to act on a cancel); each ignores other kinds.
	Enqueue func(jobID string)
	Logger  *slog.Logger
	Now     func() time.Time
	// WatchEvery is how often WatchJob looks for changes (250 ms).
	WatchEvery time.Duration
}

var jobStates = map[store.JobState]quarryv1.JobState{
	store.JobQueued:    quarryv1.JobState_JOB_STATE_QUEUED,
	store.JobRunning:   quarryv1.JobState_JOB_STATE_RUNNING,
	store.JobSucceeded: quarryv1.JobState_JOB_STATE_SUCCEEDED,
	store.JobFailed:    quarryv1.JobState_JOB_STATE_FAILED,
	store.JobCancelled: quarryv1.JobState_JOB_STATE_CANCELLED,
}

// jobView converts a job, naming its node and, if asked, with its history.
func jobView(ctx context.Context, st store.Store, j store.Job, history bool) (*quarryv1.Job, error) {
	v := &quarryv1.Job{
		Id: j.ID, Kind: j.Kind, State: jobStates[j.State], ImageId: j.ImageID, StoragePoolId: j.PoolID,
		Source: j.Source, NodeId: j.NodeID, Attempts: uint32(max(j.Attempts, 0)), Message: j.Message,
		MaxBytesPerSecond: uint64(max(j.MaxBytesPerSec, 0)),
		CreatedAt:         ts(j.CreatedAt), UpdatedAt: ts(j.UpdatedAt), StartedAt: ts(j.StartedAt), FinishedAt: ts(j.FinishedAt),
		Progress: &quarryv1.JobProgress{Phase: j.Phase, BytesDone: uint64(max(j.BytesDone, 0)),
			BytesTotal: uint64(max(j.BytesTotal, 0)), BytesPerSecond: j.BytesPerSec},
	}
	if j.BytesPerSec > 0 && j.BytesTotal > j.BytesDone && j.State == store.JobRunning {
		v.Progress.EtaSeconds = int64(float64(j.BytesTotal-j.BytesDone) / j.BytesPerSec)
	}
	if j.NodeID != "" {
		if n, err := st.GetNode(ctx, j.NodeID); err == nil {
			v.NodeName = n.Name
		}
	}
	if history {
		evs, err := st.ListJobEvents(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			v.History = append(v.History, &quarryv1.JobEvent{Time: ts(e.Time), Message: e.Message})
		}
	}
	return v, nil
}

func (s *JobService) get(ctx context.Context, id string) (store.Job, error) {
	if strings.TrimSpace(id) == "" {
		return store.Job{}, invalidf("job id is empty")
	}
	j, err := s.Store.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return j, errclass.New(store.ErrNotFound, "no job has id %q; see quarry job ls", id)
	}
	return j, err
}

func (s *JobService) ListJobs(ctx context.Context, req *connect.Request[quarryv1.ListJobsRequest]) (*connect.Response[quarryv1.ListJobsResponse], error) {
	m := req.Msg
	f := store.JobFilter{PoolID: m.GetStoragePoolId(), NodeID: m.GetNodeId(), Kind: m.GetKind(), ImageID: m.GetImageId()}
	for _, want := range m.GetStates() {
		st := enumKey(jobStates, want)
		if st == "" {
			return nil, toConnect(ctx, s.Logger, invalidf("job state %v is not known", want))
		}
		f.States = append(f.States, st)
	}
	switch f.Kind {
	case "", "download", "upload", "verify":
	default:
		return nil, toConnect(ctx, s.Logger, invalidf("job kind %q is not known; use download, upload or verify", f.Kind))
	}
	jobs, next, err := s.Store.ListJobsPage(ctx, f, pageOf(m))
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ListJobsResponse{NextPageToken: next}
	memo := &nodeMemo{Store: s.Store, nodes: map[string]store.Node{}}
	for _, j := range jobs {
		v, err := jobView(ctx, memo, j, false)
		if err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
		resp.Jobs = append(resp.Jobs, v)
	}
	return connect.NewResponse(resp), nil
}

// nodeMemo reads each node once: a page of up to 1,000 jobs names few
// nodes.
type nodeMemo struct {
	store.Store
	nodes map[string]store.Node
}

func (m *nodeMemo) GetNode(ctx context.Context, id string) (store.Node, error) {
	if n, ok := m.nodes[id]; ok {
		return n, nil
	}
	n, err := m.Store.GetNode(ctx, id)
	if err == nil {
		m.nodes[id] = n
	}
	return n, err
}

func (s *JobService) GetJob(ctx context.Context, req *connect.Request[quarryv1.GetJobRequest]) (*connect.Response[quarryv1.GetJobResponse], error) {
	j, err := s.get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	v, err := jobView(ctx, s.Store, j, true)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	return connect.NewResponse(&quarryv1.GetJobResponse{Job: v}), nil
}

// CancelJob marks the job for cancelling; the controller stops it on its
// node and ends it. A job that already ended is refused with
// failed_precondition. Success means the cancel request is saved.
func (s *JobService) CancelJob(ctx context.Context, req *connect.Request[quarryv1.CancelJobRequest]) (*connect.Response[quarryv1.CancelJobResponse], error) {
	j, err := s.requestCancel(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	s.Enqueue(j.ID)
	v, err := jobView(ctx, s.Store, j, false)
	return connect.NewResponse(&quarryv1.CancelJobResponse{Job: v}), toConnect(ctx, s.Logger, err)
}

// cancelAttempts is how often CancelJob reads and writes a job whose write
// conflicts before it gives up.
const cancelAttempts = 5

// requestCancel saves the cancel request of job id and returns the job as
// saved. A write conflicts when the job changed hands (its fence moved) or
// ended since it was read; each conflict reads the job again.
func (s *JobService) requestCancel(ctx context.Context, id string) (store.Job, error) {
	for range cancelAttempts {
		j, err := s.get(ctx, id)
		if err != nil {
			return j, err
		}
		if !j.State.Active() {
			return j, errclass.New(store.ErrInUse, "job %s already ended (%s); nothing to cancel", j.ID, strings.ToLower(string(j.State)))
		}
		j.CancelRequested, j.Message, j.UpdatedAt = true, "cancelling", s.Now()
		if err := s.Store.UpdateJob(ctx, j); !errors.Is(err, store.ErrConflict) {
			return j, err
		}
	}
	return store.Job{}, errclass.New(errclass.Unavailable,
		"job %s changed %d times while it was being cancelled, and the cancel was not saved; try again", id, cancelAttempts)
}

// WatchJob sends the job now and whenever it changes, until it ends.
func (s *JobService) WatchJob(ctx context.Context, req *connect.Request[quarryv1.WatchJobRequest], stream *connect.ServerStream[quarryv1.WatchJobResponse]) error {
	every := s.WatchEvery
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	// What a watcher sees change: progress is saved without touching
	// UpdatedAt, so it is compared too.
	type seen struct {
		state          store.JobState
		phase, message string
		done           int64
	}
	var last seen
	var lastUpdated time.Time
	t := time.NewTicker(every)
	defer t.Stop()
	for first := true; ; first = false {
		j, err := s.get(ctx, req.Msg.GetId())
		if err != nil {
			return toConnect(ctx, s.Logger, err)
		}
		now := seen{j.State, j.Phase, j.Message, j.BytesDone}
		if first || now != last || !j.UpdatedAt.Equal(lastUpdated) {
			last, lastUpdated = now, j.UpdatedAt
			v, err := jobView(ctx, s.Store, j, !j.State.Active())
			if err != nil {
				return toConnect(ctx, s.Logger, err)
			}
			if err := stream.Send(&quarryv1.WatchJobResponse{Job: v}); err != nil {
				return err
			}
		}
		if !j.State.Active() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
