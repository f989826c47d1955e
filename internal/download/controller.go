// Package download runs download jobs on the control plane: it picks the
// node through the node-choice helper, hands the job to that node's agent,
// follows its progress (persisted at most once a second), moves the job to
// another node that mounts a shared pool when its node is lost, re-adopts
// running jobs after a restart, and records how every job ended. No job
// stays RUNNING without an owner that is working on it or being waited for.
package download

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// Agents is what the controller needs of the node link.
type Agents interface {
	Start(ctx context.Context, nodeID string, req *agentv1.StartDownloadRequest) (*agentv1.DownloadStatus, error)
	// Watch calls f with every status until the download ends or the
	// stream breaks (the error says why).
	Watch(ctx context.Context, nodeID, jobID string, f func(*agentv1.DownloadStatus)) error
	Cancel(ctx context.Context, nodeID, jobID string, pool store.Pool) error
}

// Config configures a Controller.
type Config struct {
	Store   store.Store
	Chooser *placement.Chooser
	Agents  Agents
	// Policy is sent with every download; the agent enforces it.
	Policy *agentv1.URLPolicy
	// PerNode and Global bound downloads running at once (2 and 8).
	PerNode, Global int
	// Tick is how often every active job is looked at (1 s).
	Tick time.Duration
	// GiveUpAfter ends a job whose only node has been gone this long
	// (1 h), so no job waits RUNNING forever.
	GiveUpAfter time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Controller reconciles download jobs.
type Controller struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu sync.Mutex
	// watching: jobs whose progress stream is open, by job id → node id.
	watching map[string]string
	// base is Run's context: progress streams outlive the reconcile pass
	// that opened them and end with the controller.
	base context.Context
}

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.PerNode <= 0 {
		cfg.PerNode = 2
	}
	if cfg.Global <= 0 {
		cfg.Global = 8
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("component", "download"), kick: make(chan struct{}, 1),
		watching: map[string]string{}, base: context.Background()}
}

// Kick asks for every active job to be looked at now.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run reconciles active jobs on every tick and kick until ctx is done. At
// start it re-adopts the jobs a previous run left RUNNING.
func (c *Controller) Run(ctx context.Context) {
	c.mu.Lock()
	c.base = ctx
	c.mu.Unlock()
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		c.reconcileAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *Controller) reconcileAll(ctx context.Context) {
	jobs, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("listing active jobs", "err", err)
		}
		return
	}
	// Oldest first: jobs are served in the order they were asked for.
	for i := len(jobs) - 1; i >= 0; i-- {
		if ctx.Err() != nil {
			return
		}
		if err := c.reconcile(ctx, jobs[i]); err != nil && ctx.Err() == nil {
			c.log.Warn("reconciling a job", "job", jobs[i].ID, "err", err)
		}
	}
}

// reconcile moves one job one step toward its end.
func (c *Controller) reconcile(ctx context.Context, j store.Job) error {
	pool, err := c.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return err
	}
	switch {
	case j.CancelRequested:
		return c.cancel(ctx, j, pool)
	case j.State == store.JobQueued:
		return c.place(ctx, j, pool)
	case c.isWatched(j.ID):
		return nil // its stream reports; nothing to do
	default:
		return c.adopt(ctx, j, pool)
	}
}

func (c *Controller) isWatched(jobID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.watching[jobID]
	return ok
}

// load counts downloads being watched per node and in all.
func (c *Controller) load() (perNode map[string]int, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	perNode = map[string]int{}
	for _, n := range c.watching {
		perNode[n]++
	}
	return perNode, len(c.watching)
}

// place gives a queued job to the best node that has room.
func (c *Controller) place(ctx context.Context, j store.Job, pool store.Pool) error {
	perNode, total := c.load()
	if total >= c.cfg.Global {
		return nil // waits its turn
	}
	choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
	if errors.Is(err, placement.ErrNoNode) {
		return c.fail(ctx, j, err.Error())
	}
	if err != nil {
		return err
	}
	for _, cand := range choice.Kept {
		if perNode[cand.Node.ID] >= c.cfg.PerNode {
			continue
		}
		return c.startOn(ctx, j, pool, cand.Node, "started on node "+cand.Node.Name+" ("+cand.Reason+")")
	}
	return nil // every node that mounts the pool is busy: wait
}

// adopt takes care of a RUNNING job nobody is watching: after a control
// plane restart, or when its stream broke because the node was lost.
func (c *Controller) adopt(ctx context.Context, j store.Job, pool store.Pool) error {
	owner, err := c.cfg.Store.GetNode(ctx, j.NodeID)
	if err == nil {
		// Resume on the owner if it answers: the agent is still at it,
		// or picks the job up from its checkpoint.
		if err := c.startOn(ctx, j, pool, owner, ""); err == nil {
			return nil
		}
	}
	choice, cerr := c.cfg.Chooser.Choose(ctx, pool.ID)
	if cerr == nil {
		for _, cand := range choice.Kept {
			if cand.Node.ID == j.NodeID {
				continue
			}
			// Another node that mounts the (shared) pool resumes from the
			// partial file; the higher fence stops the old owner if it
			// comes back.
			return c.startOn(ctx, j, pool, cand.Node, fmt.Sprintf("node %s was lost; moved to node %s, resuming from the partial file", owner.Name, cand.Node.Name))
		}
	}
	msg := fmt.Sprintf("waiting for node %s to come back: pool %s is only reachable through it", owner.Name, pool.Name)
	if j.Message == msg && c.cfg.Now().Sub(j.UpdatedAt) > c.cfg.GiveUpAfter {
		return c.fail(ctx, j, fmt.Sprintf("node %s has been unreachable for %v and pool %s is only reachable through it; the partial file stays on its disk — download again once it is back, or into another pool",
			owner.Name, c.cfg.GiveUpAfter, pool.Name))
	}
	if j.Message != msg {
		j.Message, j.UpdatedAt = msg, c.cfg.Now()
		if err := c.cfg.Store.UpdateJob(ctx, j); err != nil {
			return err
		}
		c.event(ctx, j.ID, msg)
	}
	return nil
}

// startOn claims the job for node n (a new fence when the owner changes)
// and hands it to n's agent, then follows its progress.
func (c *Controller) startOn(ctx context.Context, j store.Job, pool store.Pool, n store.Node, event string) error {
	if j.State == store.JobQueued || j.NodeID != n.ID {
		claimed, err := c.cfg.Store.ClaimJob(ctx, j.ID, n.ID, c.cfg.Now())
		if err != nil {
			return err
		}
		j = claimed
		if err := c.setImageState(ctx, j, store.ImageDownloading, ""); err != nil {
			return err
		}
	}
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	req := &agentv1.StartDownloadRequest{
		JobId: j.ID, Fence: j.Fence,
		Pool: &agentv1.PoolRef{Id: pool.ID, Name: pool.Name, Path: pool.Path},
		Url:  j.URL, Checksum: j.Checksum, ChecksumUrl: j.ChecksumURL,
		Dest:     im.RelPath,
		Policy:   c.cfg.Policy,
		Describe: fmt.Sprintf("pool %s on node %s", pool.Name, n.Name),
	}
	st, err := c.cfg.Agents.Start(ctx, n.ID, req)
	if err != nil {
		return fmt.Errorf("starting on node %s: %w", n.Name, err)
	}
	if event != "" {
		c.event(ctx, j.ID, event)
	}
	c.mu.Lock()
	c.watching[j.ID] = n.ID
	base := c.base
	c.mu.Unlock()
	go c.follow(base, j, n, st)
	return nil
}

// follow streams the job's status from its node until the download ends or
// the stream breaks; then the next reconcile decides.
func (c *Controller) follow(ctx context.Context, j store.Job, n store.Node, first *agentv1.DownloadStatus) {
	defer func() {
		c.mu.Lock()
		delete(c.watching, j.ID)
		c.mu.Unlock()
		c.Kick()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lastSave time.Time
	handle := func(st *agentv1.DownloadStatus) {
		if st.GetFence() != 0 && st.GetFence() != j.Fence {
			return
		}
		switch st.GetState() {
		case agentv1.DownloadState_DOWNLOAD_STATE_RUNNING:
			if time.Since(lastSave) < time.Second {
				return
			}
			lastSave = time.Now()
			j.Phase, j.BytesDone, j.BytesTotal, j.BytesPerSec = st.GetPhase(), st.GetBytesDone(), st.GetBytesTotal(), st.GetBytesPerSecond()
			j.UpdatedAt = c.cfg.Now()
			if err := c.cfg.Store.UpdateJob(ctx, j); errors.Is(err, store.ErrConflict) {
				cancel() // taken over
			}
		case agentv1.DownloadState_DOWNLOAD_STATE_SUCCEEDED:
			c.succeed(ctx, j, n, st)
			cancel()
		case agentv1.DownloadState_DOWNLOAD_STATE_FAILED:
			c.fail(ctx, j, st.GetError())
			cancel()
		case agentv1.DownloadState_DOWNLOAD_STATE_FENCED, agentv1.DownloadState_DOWNLOAD_STATE_CANCELLED,
			agentv1.DownloadState_DOWNLOAD_STATE_UNKNOWN:
			cancel()
		}
	}
	handle(first)
	if ctx.Err() != nil {
		return
	}
	err := c.cfg.Agents.Watch(ctx, n.ID, j.ID, handle)
	if err != nil && ctx.Err() == nil {
		c.log.Info("lost the download's progress stream", "job", j.ID, "node", n.Name, "err", err)
	}
}

func (c *Controller) succeed(ctx context.Context, j store.Job, n store.Node, st *agentv1.DownloadStatus) {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		c.log.Warn("finishing a job", "job", j.ID, "err", err)
		return
	}
	now := c.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageReady, "", now
	im.SHA256, im.SizeBytes, im.ModTime, im.VirtualSize = st.GetSha256(), st.GetSize(), now, st.GetVirtualSize()
	if f := st.GetFormat(); f != "" {
		im.Format = f
	}
	j.State, j.FinishedAt, j.UpdatedAt = store.JobSucceeded, now, now
	j.Phase, j.BytesDone, j.BytesTotal = "finalizing", st.GetSize(), st.GetSize()
	j.Message = fmt.Sprintf("downloaded on node %s and verified: sha256:%s", n.Name, st.GetSha256())
	if err := c.cfg.Store.FinishJob(ctx, j, im); err != nil {
		c.log.Warn("finishing a job", "job", j.ID, "err", err)
		return
	}
	c.event(ctx, j.ID, j.Message)
	c.log.Info("download succeeded", "job", j.ID, "node", n.Name, "image", im.Name, "bytes", st.GetSize(), "fetched", st.GetFetchedBytes())
}

// fail ends the job and marks its image ERROR with msg, which says what to
// do.
func (c *Controller) fail(ctx context.Context, j store.Job, msg string) error {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	now := c.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageError, msg, now
	j.State, j.Message, j.FinishedAt, j.UpdatedAt = store.JobFailed, msg, now, now
	if err := c.cfg.Store.FinishJob(ctx, j, im); err != nil {
		return err
	}
	c.event(ctx, j.ID, "failed: "+msg)
	c.log.Info("download failed", "job", j.ID, "err", msg)
	return nil
}

// cancel stops the job on its node (removing the partial file), ends it and
// deletes its image record.
func (c *Controller) cancel(ctx context.Context, j store.Job, pool store.Pool) error {
	if j.State == store.JobRunning && j.NodeID != "" {
		if err := c.cfg.Agents.Cancel(ctx, j.NodeID, j.ID, pool); err != nil {
			c.log.Info("cancelling on the node failed; its partial file is left for cleanup", "job", j.ID, "err", err)
		}
	}
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	now := c.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageError, "download cancelled", now
	j.State, j.Message, j.FinishedAt, j.UpdatedAt = store.JobCancelled, "cancelled", now, now
	if err := c.cfg.Store.FinishJob(ctx, j, im); err != nil {
		return err
	}
	c.event(ctx, j.ID, "cancelled")
	return c.cfg.Store.DeleteImage(ctx, im.ID)
}

func (c *Controller) setImageState(ctx context.Context, j store.Job, s store.ImageState, reason string) error {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	im.State, im.StateReason, im.UpdatedAt = s, reason, c.cfg.Now()
	return c.cfg.Store.UpdateImage(ctx, im)
}

func (c *Controller) event(ctx context.Context, jobID, msg string) {
	if err := c.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: jobID, Time: c.cfg.Now(), Message: msg}); err != nil {
		c.log.Warn("recording a job event", "job", jobID, "err", err)
	}
}
