// Package verify runs verify jobs on the control plane: a job of kind
// "verify" has a node that mounts the image's pool re-hash the image's file
// and compares the digest with the one recorded when the image was
// verified. Equal: the image is READY again. Otherwise it is (or stays)
// ERROR, and both the job and the image say both digests.
//
// Jobs are reconciled and run by a jobrun.Runner: when one is created or
// cancelled, and at start for the jobs a previous run left unfinished (a
// verify interrupted by a restart starts over: hashing has no checkpoint).
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/jobrun"
	"github.com/quarry-project/quarry/internal/placement"
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
	cfg  Config
	jobs *jobrun.Runner
}

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	c := &Controller{cfg: cfg}
	c.jobs = jobrun.New(jobrun.Config{Kind: Kind, Noun: "verify", Store: cfg.Store, Start: c.start, Logger: cfg.Logger, Now: cfg.Now})
	return c
}

// Enqueue asks for a job to be looked at now: it was created, or a cancel
// was asked for. Jobs of other kinds are ignored.
func (c *Controller) Enqueue(jobID string) { c.jobs.Enqueue(jobID) }

// Run takes up the verify jobs a previous run left unfinished and
// reconciles jobs until ctx is done; it returns once every goroutine it
// started has exited.
func (c *Controller) Run(ctx context.Context) { c.jobs.Run(ctx) }

// start reads the image an active job verifies and chooses the nodes to
// try.
func (c *Controller) start(ctx context.Context, j store.Job) (jobrun.Work, error) {
	pool, err := c.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return nil, err
	}
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, "the image was deleted; nothing to verify", nil)
	}
	if err != nil {
		return nil, err
	}
	if im.SHA256 == "" {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, fmt.Sprintf("image %s has no recorded digest to verify against", im.Name), nil)
	}
	choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
	if errors.Is(err, placement.ErrNoNode) {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, err.Error(), nil)
	}
	if err != nil {
		return nil, err
	}
	return func(ctx, base context.Context) { c.run(ctx, base, j, pool, im, choice.Kept) }, nil
}

// run hashes the image's file through the first candidate node that can,
// then ends the job. ctx ends with a cancel; base only with the controller.
func (c *Controller) run(ctx, base context.Context, j store.Job, pool store.Pool, im store.Image, cands []placement.Candidate) {
	var failures []string
	for _, cand := range cands {
		n := cand.Node
		claimed, ok := c.jobs.Claim(ctx, base, j.ID, n.ID)
		if !ok {
			return
		}
		j = claimed
		j.Phase, j.Message, j.BytesDone, j.BytesPerSec, j.UpdatedAt = "verifying", "hashing "+im.RelPath+" on node "+n.Name, 0, 0, c.jobs.Now()
		c.jobs.Save(ctx, j)
		c.jobs.Event(ctx, j.ID, "started on node "+n.Name+" ("+cand.Reason+")")
		sum, err := c.cfg.Hasher.HashFile(ctx, n.ID, pool, im.RelPath, jobrun.Throttle(func(p Progress) {
			j.BytesDone, j.BytesTotal, j.BytesPerSec, j.UpdatedAt = p.BytesDone, p.BytesTotal, p.BytesPerSec, c.jobs.Now()
			c.jobs.Save(ctx, j)
		}))
		switch {
		case err == nil:
			c.compare(base, j, n.Name, sum)
			return
		case c.jobs.Stopped(ctx, base, j.ID):
			return
		case errors.Is(err, errclass.NotFound):
			c.jobs.Finish(base, j, store.JobFailed, fmt.Sprintf("%v; the next scan marks the image MISSING — put the file back, then verify again", err), nil)
			return
		}
		failures = append(failures, fmt.Sprintf("%s: %v", n.Name, err))
	}
	c.jobs.Finish(base, j, store.JobFailed, fmt.Sprintf("no node could hash %s in pool %s: %v; try again with quarry image verify %s",
		im.RelPath, pool.Name, failures, im.ID), nil)
}

// compare ends the job with the digest a node computed.
func (c *Controller) compare(ctx context.Context, j store.Job, node, sum string) {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		c.jobs.Finish(ctx, j, store.JobFailed, "the image was deleted while its file was hashed", nil)
		return
	}
	if err != nil {
		c.jobs.Log().Warn("finishing a verify job", "job", j.ID, "err", err)
		return
	}
	j.BytesDone, j.BytesPerSec = j.BytesTotal, 0
	im.UpdatedAt = c.jobs.Now()
	if sum == im.SHA256 {
		im.State, im.StateReason, im.MissingSince = store.ImageReady, "", time.Time{}
		if j.BytesTotal > 0 {
			im.SizeBytes = j.BytesTotal
		}
		c.jobs.Finish(ctx, j, store.JobSucceeded, fmt.Sprintf("re-hashed on node %s: sha256:%s matches the recorded digest", node, sum), &im)
		return
	}
	msg := fmt.Sprintf("file changed on disk since it was verified: recorded sha256:%s, re-hashed on node %s: sha256:%s; download it again, or delete it with quarry image rm %s",
		im.SHA256, node, sum, im.ID)
	im.State, im.StateReason = store.ImageError, msg
	c.jobs.Finish(ctx, j, store.JobFailed, msg, &im)
}
