// Package verify runs verify jobs on the control plane: a job of kind
// "verify" has a node that mounts the image's pool re-hash the image's file
// and compares the digest with the one recorded when the image was
// verified. Equal: the image is READY again. Otherwise it is (or stays)
// ERROR, and both the job and the image say both digests.
//
// Jobs are reconciled by id on a reconcile.Queue: when one is created or
// cancelled, and at start for the jobs a previous run left unfinished (a
// verify interrupted by a restart starts over: hashing has no checkpoint).
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/reconcile"
	"github.com/quarry-project/quarry/internal/store"
)

// Kind is the Job.Kind of verify jobs.
const Kind = "verify"

// Source is the Job.Source of the verify job of an image: one active
// verify per image.
func Source(imageID string) string { return "verify:" + imageID }

// Progress is what a node reports while it hashes.
type Progress struct {
	BytesDone, BytesTotal int64
	BytesPerSec           float64
}

// Hasher has a node re-read a file of a pool and returns its SHA-256 (hex).
type Hasher interface {
	HashFile(ctx context.Context, nodeID string, pool store.Pool, relPath string, progress func(Progress)) (string, error)
}

// Config configures a Controller.
type Config struct {
	Store   store.Store
	Chooser *placement.Chooser
	Hasher  Hasher
	Logger  *slog.Logger
	Now     func() time.Time
}

// Controller runs verify jobs.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	queue *reconcile.Queue
	// runs owns the hashing goroutines; Run waits for them.
	runs sync.WaitGroup

	mu      sync.Mutex
	running map[string]context.CancelFunc // by job id
}

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "verify"), running: map[string]context.CancelFunc{}}
	c.queue = reconcile.New(reconcile.Config{Name: "verify", Reconcile: c.reconcile, Logger: cfg.Logger})
	return c
}

// Enqueue asks for a job to be looked at now: it was created, or a cancel
// was asked for. Jobs of other kinds are ignored.
func (c *Controller) Enqueue(jobID string) { c.queue.Add(jobID) }

// Run takes up the verify jobs a previous run left unfinished and
// reconciles jobs until ctx is done; it returns once every goroutine it
// started has exited.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.queue.Run(ctx) })
	jobs, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("listing unfinished verify jobs", "err", err)
	}
	for _, j := range jobs {
		if j.Kind == Kind {
			c.queue.Add(j.ID)
		}
	}
	wg.Wait()
	c.runs.Wait()
}

func (c *Controller) reconcile(ctx context.Context, id string) (reconcile.Result, error) {
	j, err := c.cfg.Store.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if j.Kind != Kind || !j.State.Active() {
		return reconcile.Result{}, nil
	}
	c.mu.Lock()
	stop, running := c.running[id]
	c.mu.Unlock()
	switch {
	case j.CancelRequested && running:
		stop() // the run ends the job
		return reconcile.Result{}, nil
	case j.CancelRequested:
		return reconcile.Result{}, c.finish(ctx, j, nil, store.JobCancelled, "cancelled")
	case running:
		return reconcile.Result{}, nil
	}
	pool, err := c.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return reconcile.Result{}, err
	}
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, c.finish(ctx, j, nil, store.JobFailed, "the image was deleted; nothing to verify")
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if im.SHA256 == "" {
		return reconcile.Result{}, c.finish(ctx, j, nil, store.JobFailed, fmt.Sprintf("image %s has no recorded digest to verify against", im.Name))
	}
	choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
	if errors.Is(err, placement.ErrNoNode) {
		return reconcile.Result{}, c.finish(ctx, j, nil, store.JobFailed, err.Error())
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	c.running[id] = cancel
	c.mu.Unlock()
	c.runs.Go(func() {
		defer func() {
			cancel()
			c.mu.Lock()
			delete(c.running, id)
			c.mu.Unlock()
		}()
		c.run(rctx, ctx, j, pool, im, choice.Kept)
	})
	return reconcile.Result{}, nil
}

// run hashes the image's file through the first candidate node that can,
// then ends the job. ctx ends with a cancel; base only with the controller.
func (c *Controller) run(ctx, base context.Context, j store.Job, pool store.Pool, im store.Image, cands []placement.Candidate) {
	var failures []string
	for _, cand := range cands {
		n := cand.Node
		claimed, err := c.cfg.Store.ClaimJob(ctx, j.ID, n.ID, c.cfg.Now())
		if err != nil {
			if ctx.Err() != nil && base.Err() == nil {
				c.endCancelled(base, j.ID) // cancelled before it started
				return
			}
			c.log.Info("claiming a verify job; trying again", "job", j.ID, "err", err)
			c.queue.AddAfter(j.ID, 5*time.Second) // reconciled once this run has ended
			return
		}
		j = claimed
		j.Phase, j.Message, j.BytesDone, j.BytesPerSec, j.UpdatedAt = "verifying", "hashing "+im.RelPath+" on node "+n.Name, 0, 0, c.cfg.Now()
		c.save(ctx, j)
		c.event(ctx, j.ID, "started on node "+n.Name+" ("+cand.Reason+")")
		var last time.Time
		sum, err := c.cfg.Hasher.HashFile(ctx, n.ID, pool, im.RelPath, func(p Progress) {
			if time.Since(last) < time.Second {
				return
			}
			last = time.Now()
			j.BytesDone, j.BytesTotal, j.BytesPerSec, j.UpdatedAt = p.BytesDone, p.BytesTotal, p.BytesPerSec, c.cfg.Now()
			c.save(ctx, j)
		})
		switch {
		case err == nil:
			c.compare(base, j, n.Name, sum)
			return
		case ctx.Err() != nil:
			if base.Err() == nil {
				// Cancelled: not the controller stopping, which leaves the
				// job RUNNING for the next start to take up.
				c.endCancelled(base, j.ID)
			}
			return
		case errors.Is(err, errclass.NotFound):
			c.finish(base, j, nil, store.JobFailed, fmt.Sprintf("%v; the next scan marks the image MISSING — put the file back, then verify again", err))
			return
		}
		failures = append(failures, fmt.Sprintf("%s: %v", n.Name, err))
	}
	c.finish(base, j, nil, store.JobFailed, fmt.Sprintf("no node could hash %s in pool %s: %v; try again with quarry image verify %s",
		im.RelPath, pool.Name, failures, im.ID))
}

// compare ends the job with the digest a node computed.
func (c *Controller) compare(ctx context.Context, j store.Job, node, sum string) {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		c.finish(ctx, j, nil, store.JobFailed, "the image was deleted while its file was hashed")
		return
	}
	if err != nil {
		c.log.Warn("finishing a verify job", "job", j.ID, "err", err)
		return
	}
	j.BytesDone, j.BytesPerSec = j.BytesTotal, 0
	im.UpdatedAt = c.cfg.Now()
	if sum == im.SHA256 {
		im.State, im.StateReason, im.MissingSince = store.ImageReady, "", time.Time{}
		if j.BytesTotal > 0 {
			im.SizeBytes = j.BytesTotal
		}
		c.finish(ctx, j, &im, store.JobSucceeded, fmt.Sprintf("re-hashed on node %s: sha256:%s matches the recorded digest", node, sum))
		return
	}
	msg := fmt.Sprintf("file changed on disk since it was verified: recorded sha256:%s, re-hashed on node %s: sha256:%s; download it again, or delete it with quarry image rm %s",
		im.SHA256, node, sum, im.ID)
	im.State, im.StateReason = store.ImageError, msg
	c.finish(ctx, j, &im, store.JobFailed, msg)
}

// endCancelled ends a job whose run was stopped by a cancel.
func (c *Controller) endCancelled(ctx context.Context, id string) {
	j, err := c.cfg.Store.GetJob(ctx, id)
	if err == nil && j.State.Active() {
		c.finish(ctx, j, nil, store.JobCancelled, "cancelled")
	}
}

// finish ends the job with state and msg and, when im is set, replaces the
// image in the same transaction.
func (c *Controller) finish(ctx context.Context, j store.Job, im *store.Image, state store.JobState, msg string) error {
	now := c.cfg.Now()
	j.State, j.Message, j.FinishedAt, j.UpdatedAt, j.BytesPerSec = state, msg, now, now, 0
	var err error
	if im != nil {
		err = c.cfg.Store.FinishJob(ctx, j, *im)
	} else {
		err = c.cfg.Store.UpdateJob(ctx, j)
	}
	if err != nil {
		c.log.Warn("finishing a verify job", "job", j.ID, "err", err)
		return err
	}
	c.event(ctx, j.ID, msg)
	c.log.Info("verify job ended", "job", j.ID, "image", j.ImageID, "state", state, "message", msg)
	return nil
}

func (c *Controller) save(ctx context.Context, j store.Job) {
	if err := c.cfg.Store.UpdateJob(ctx, j); err != nil && ctx.Err() == nil {
		c.log.Info("saving a verify job's progress", "job", j.ID, "err", err)
	}
}

func (c *Controller) event(ctx context.Context, jobID, msg string) {
	if err := c.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: jobID, Time: c.cfg.Now(), Message: msg}); err != nil && ctx.Err() == nil {
		c.log.Warn("recording a job event", "job", jobID, "err", err)
	}
}
