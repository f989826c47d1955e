// Package convert runs conversion jobs on the control plane: a job of kind
// "convert" has a node that mounts the image's pool and has qemu-img
// (Debian's qemu-utils) convert the image's file into another format next
// to it. The result is checked (qemu-img check for qcow2) and hashed on
// the node and registered as the job's image, READY, with the format and
// virtual size its header says. The source image is never changed.
//
// The job's image is created PENDING with the job (store.CreateDownload:
// one active conversion per source image and format). Jobs are reconciled
// by id on a reconcile.Queue: when created or cancelled, and at start for
// the jobs a previous run left unfinished (a conversion has no checkpoint:
// it starts over, the node replacing the partial file, or taking over the
// file an earlier run put in place when only its result was lost). A
// cancel ends the node's call, which kills qemu-img and removes the
// partial file.
package convert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/qemuimg"
	"github.com/quarry-project/quarry/internal/reconcile"
	"github.com/quarry-project/quarry/internal/store"
)

// Kind is the Job.Kind of conversion jobs.
const Kind = "convert"

// Source is the Job.Source of the conversion of an image into format: one
// active conversion per (image, format).
func Source(imageID, format string) string { return "convert:" + imageID + ":" + format }

// parseSource returns the source image and target format of a job.
func parseSource(src string) (imageID, format string, ok bool) {
	rest, ok := strings.CutPrefix(src, "convert:")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ":")
}

// Request is what a node is asked to convert.
type Request struct {
	JobID     string
	Src, Dest string
	SrcFormat string
	Format    string
	// AdoptExisting: an earlier run of the job may have put Dest in place
	// before its result was recorded; the node takes that file (checked
	// and hashed) instead of refusing it.
	AdoptExisting bool
}

// Progress is what a node reports while it converts.
type Progress struct {
	Phase string
	// Percent of the conversion; then bytes of the hashing.
	Percent               float64
	BytesDone, BytesTotal int64
}

// Result is the converted file, in place.
type Result struct {
	SHA256      string
	Size        int64
	Format      string
	VirtualSize int64
	ModTime     time.Time
	Check       string
}

// Converter has nodes convert files, and says which nodes can.
type Converter interface {
	Convert(ctx context.Context, nodeID string, pool store.Pool, r Request, progress func(Progress)) (Result, error)
	// QemuImgVersion is what the node last reported; known is false when
	// it has not reported since the control plane started.
	QemuImgVersion(nodeID string) (version string, known bool)
}

// Config configures a Controller.
type Config struct {
	Store     store.Store
	Chooser   *placement.Chooser
	Converter Converter
	Logger    *slog.Logger
	Now       func() time.Time
}

// Controller runs conversion jobs.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	queue *reconcile.Queue
	// runs owns the conversion goroutines; Run waits for them.
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
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "convert"), running: map[string]context.CancelFunc{}}
	c.queue = reconcile.New(reconcile.Config{Name: "convert", Reconcile: c.reconcile, Logger: cfg.Logger})
	return c
}

// Enqueue asks for a job to be looked at now: it was created, or a cancel
// was asked for. Jobs of other kinds are ignored.
func (c *Controller) Enqueue(jobID string) { c.queue.Add(jobID) }

// Run takes up the conversion jobs a previous run left unfinished and
// reconciles jobs until ctx is done; it returns once every goroutine it
// started has exited.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.queue.Run(ctx) })
	jobs, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("listing unfinished conversion jobs", "err", err)
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
		return reconcile.Result{}, c.finish(ctx, j, store.JobCancelled, "cancelled", nil)
	case running:
		return reconcile.Result{}, nil
	}
	srcID, format, ok := parseSource(j.Source)
	if !ok {
		return reconcile.Result{}, c.finish(ctx, j, store.JobFailed, "the job does not say what to convert (source "+j.Source+")", nil)
	}
	pool, err := c.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return reconcile.Result{}, err
	}
	src, err := c.cfg.Store.GetImage(ctx, srcID)
	if errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, c.finish(ctx, j, store.JobFailed, "the source image was deleted; nothing to convert", nil)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if src.State != store.ImageReady {
		return reconcile.Result{}, c.finish(ctx, j, store.JobFailed, fmt.Sprintf("image %s is %s, not READY; convert it once it is", src.Name, src.State), nil)
	}
	dest, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, c.finish(ctx, j, store.JobFailed, "the converted image was deleted before the conversion ran", nil)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
	if errors.Is(err, placement.ErrNoNode) {
		return reconcile.Result{}, c.finish(ctx, j, store.JobFailed, err.Error(), nil)
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
		c.run(rctx, ctx, j, pool, src, dest, format, choice)
	})
	return reconcile.Result{}, nil
}

// run converts through the first candidate node that has qemu-img and can,
// then ends the job. ctx ends with a cancel; base only with the controller.
func (c *Controller) run(ctx, base context.Context, j store.Job, pool store.Pool, src, dest store.Image, format string, choice *placement.Choice) {
	var failures []string
	for _, cand := range choice.Rejected {
		failures = append(failures, fmt.Sprintf("%s: %s", cand.Node.Name, cand.Reason))
	}
	req := Request{JobID: j.ID, Src: src.RelPath, Dest: dest.RelPath, SrcFormat: src.Format, Format: format}
	total := src.VirtualSize
	if total <= 0 {
		total = src.SizeBytes
	}
	for _, cand := range choice.Kept {
		n := cand.Node
		version, known := c.cfg.Converter.QemuImgVersion(n.ID)
		if known && version == "" {
			failures = append(failures, fmt.Sprintf("%s: %s", n.Name, qemuimg.Missing))
			continue
		}
		claimed, err := c.cfg.Store.ClaimJob(ctx, j.ID, n.ID, c.cfg.Now())
		if err != nil {
			if ctx.Err() != nil && base.Err() == nil {
				c.endCancelled(base, j.ID) // cancelled before it started
				return
			}
			c.log.Info("claiming a conversion job; trying again", "job", j.ID, "err", err)
			c.queue.AddAfter(j.ID, 5*time.Second) // reconciled once this run has ended
			return
		}
		j = claimed
		// The first claim has fence 1; any later one follows a run that
		// may have put the file in place without its result recorded.
		req.AdoptExisting = j.Fence > 1
		j.Phase, j.BytesDone, j.BytesTotal, j.BytesPerSec, j.UpdatedAt = "converting", 0, total, 0, c.cfg.Now()
		j.Message = fmt.Sprintf("converting %s (%s) to %s on node %s", src.RelPath, src.Format, format, n.Name)
		c.save(ctx, j)
		with := "qemu-img"
		if version != "" {
			with += " " + version
		}
		c.event(ctx, j.ID, fmt.Sprintf("started on node %s (%s) with %s", n.Name, cand.Reason, with))
		var last time.Time
		res, err := c.cfg.Converter.Convert(ctx, n.ID, pool, req, func(p Progress) {
			if time.Since(last) < time.Second {
				return
			}
			last = time.Now()
			j.Phase, j.UpdatedAt = p.Phase, c.cfg.Now()
			if p.Phase == "hashing" {
				j.BytesDone, j.BytesTotal = p.BytesDone, p.BytesTotal
			} else {
				j.BytesDone, j.BytesTotal = int64(p.Percent/100*float64(total)), total
			}
			c.save(ctx, j)
		})
		switch {
		case err == nil:
			c.done(base, j, n.Name, res)
			return
		case ctx.Err() != nil:
			if base.Err() == nil {
				// Cancelled: not the controller stopping, which leaves the
				// job RUNNING for the next start to take up.
				c.endCancelled(base, j.ID)
			}
			return
		case errors.Is(err, errclass.Unavailable), errors.Is(err, errclass.FailedPrecondition) && !errors.Is(err, errclass.NotFound):
			// This node cannot (qemu-img missing after all, pool gone
			// from it, node lost): another may.
			failures = append(failures, fmt.Sprintf("%s: %v", n.Name, err))
			c.event(base, j.ID, fmt.Sprintf("node %s could not convert: %v", n.Name, err))
			continue
		}
		msg := err.Error()
		if errors.Is(err, errclass.Conflict) {
			msg += "; or convert with another name (--name)"
		}
		c.finish(base, j, store.JobFailed, msg, nil)
		return
	}
	c.finish(base, j, store.JobFailed, fmt.Sprintf("no node that mounts pool %s can convert %s: %s", pool.Name, src.Name, strings.Join(failures, "; ")), nil)
}

// done ends the job with the converted file in place: its image READY.
func (c *Controller) done(ctx context.Context, j store.Job, node string, res Result) {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		c.log.Warn("finishing a conversion job", "job", j.ID, "err", err)
		return
	}
	now := c.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageReady, "", now
	im.SHA256, im.SizeBytes, im.Format, im.VirtualSize, im.ModTime = res.SHA256, res.Size, res.Format, res.VirtualSize, res.ModTime
	j.BytesDone, j.BytesTotal = res.Size, res.Size
	msg := fmt.Sprintf("converted on node %s to %s (%d bytes, sha256:%s)", node, res.Format, res.Size, res.SHA256)
	if res.Check != "" {
		msg += "; " + res.Check
	}
	c.finish(ctx, j, store.JobSucceeded, msg, &im)
}

// endCancelled ends a job whose run was stopped by a cancel.
func (c *Controller) endCancelled(ctx context.Context, id string) {
	j, err := c.cfg.Store.GetJob(ctx, id)
	if err == nil && j.State.Active() {
		c.finish(ctx, j, store.JobCancelled, "cancelled", nil)
	}
}

// finish ends the job with state and msg and replaces its image in the
// same transaction: im when given, else the image marked ERROR with msg.
func (c *Controller) finish(ctx context.Context, j store.Job, state store.JobState, msg string, im *store.Image) error {
	now := c.cfg.Now()
	if im == nil {
		cur, err := c.cfg.Store.GetImage(ctx, j.ImageID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil {
			cur.State, cur.StateReason, cur.UpdatedAt = store.ImageError, "conversion "+strings.ToLower(string(state))+": "+msg, now
			im = &cur
		}
	}
	j.State, j.Message, j.FinishedAt, j.UpdatedAt, j.BytesPerSec = state, msg, now, now, 0
	var err error
	if im != nil {
		err = c.cfg.Store.FinishJob(ctx, j, *im)
	} else {
		err = c.cfg.Store.UpdateJob(ctx, j)
	}
	if err != nil {
		c.log.Warn("finishing a conversion job", "job", j.ID, "err", err)
		return err
	}
	c.event(ctx, j.ID, msg)
	c.log.Info("conversion job ended", "job", j.ID, "image", j.ImageID, "state", state, "message", msg)
	return nil
}

func (c *Controller) save(ctx context.Context, j store.Job) {
	if err := c.cfg.Store.UpdateJob(ctx, j); err != nil && ctx.Err() == nil {
		c.log.Info("saving a conversion job's progress", "job", j.ID, "err", err)
	}
}

func (c *Controller) event(ctx context.Context, jobID, msg string) {
	if err := c.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: jobID, Time: c.cfg.Now(), Message: msg}); err != nil && ctx.Err() == nil {
		c.log.Warn("recording a job event", "job", jobID, "err", err)
	}
}
