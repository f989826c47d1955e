// Package convert runs conversion jobs on the control plane: a job of kind
// "convert" has a node that mounts the image's pool and has qemu-img
// (Debian's qemu-utils) convert the image's file into another format next
// to it. The result is checked (qemu-img check for qcow2) and hashed on
// the node and registered as the job's image, READY, with the format and
// virtual size its header says. The source image is never changed.
//
// The job's image is created PENDING with the job (store.CreateDownload:
// one active conversion per source image and format). Jobs are reconciled
// and run by a jobrun.Runner: when created or cancelled, and at start for
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
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/jobrun"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/qemuimg"
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
	cfg  Config
	jobs *jobrun.Runner
}

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	c := &Controller{cfg: cfg}
	c.jobs = jobrun.New(jobrun.Config{Kind: Kind, Noun: "conversion", Store: cfg.Store, Start: c.start,
		ImageErrorPrefix: "conversion", Logger: cfg.Logger, Now: cfg.Now})
	return c
}

// Enqueue asks for a job to be looked at now: it was created, or a cancel
// was asked for. Jobs of other kinds are ignored.
func (c *Controller) Enqueue(jobID string) { c.jobs.Enqueue(jobID) }

// Run takes up the conversion jobs a previous run left unfinished and
// reconciles jobs until ctx is done; it returns once every goroutine it
// started has exited.
func (c *Controller) Run(ctx context.Context) { c.jobs.Run(ctx) }

// start reads what an active job converts and chooses the nodes to try.
func (c *Controller) start(ctx context.Context, j store.Job) (jobrun.Work, error) {
	srcID, format, ok := parseSource(j.Source)
	if !ok {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, "the job does not say what to convert (source "+j.Source+")", nil)
	}
	pool, err := c.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return nil, err
	}
	src, err := c.cfg.Store.GetImage(ctx, srcID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, "the source image was deleted; nothing to convert", nil)
	}
	if err != nil {
		return nil, err
	}
	if src.State != store.ImageReady {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, fmt.Sprintf("image %s is %s, not READY; convert it once it is", src.Name, src.State), nil)
	}
	dest, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, "the converted image was deleted before the conversion ran", nil)
	}
	if err != nil {
		return nil, err
	}
	choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
	if errors.Is(err, placement.ErrNoNode) {
		return nil, c.jobs.Finish(ctx, j, store.JobFailed, err.Error(), nil)
	}
	if err != nil {
		return nil, err
	}
	return func(ctx, base context.Context) { c.run(ctx, base, j, pool, src, dest, format, choice) }, nil
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
		claimed, ok := c.jobs.Claim(ctx, base, j.ID, n.ID)
		if !ok {
			return
		}
		j = claimed
		// The first claim has fence 1; any later one follows a run that
		// may have put the file in place without its result recorded.
		req.AdoptExisting = j.Fence > 1
		j.Phase, j.BytesDone, j.BytesTotal, j.BytesPerSec, j.UpdatedAt = "converting", 0, total, 0, c.jobs.Now()
		j.Message = fmt.Sprintf("converting %s (%s) to %s on node %s", src.RelPath, src.Format, format, n.Name)
		c.jobs.Save(ctx, j)
		with := "qemu-img"
		if version != "" {
			with += " " + version
		}
		c.jobs.Event(ctx, j.ID, fmt.Sprintf("started on node %s (%s) with %s", n.Name, cand.Reason, with))
		res, err := c.cfg.Converter.Convert(ctx, n.ID, pool, req, jobrun.Throttle(func(p Progress) {
			j.Phase, j.UpdatedAt = p.Phase, c.jobs.Now()
			if p.Phase == "hashing" {
				j.BytesDone, j.BytesTotal = p.BytesDone, p.BytesTotal
			} else {
				j.BytesDone, j.BytesTotal = int64(p.Percent/100*float64(total)), total
			}
			c.jobs.Save(ctx, j)
		}))
		switch {
		case err == nil:
			c.done(base, j, n.Name, res)
			return
		case c.jobs.Stopped(ctx, base, j.ID):
			return
		case errors.Is(err, errclass.Unavailable), errors.Is(err, errclass.FailedPrecondition) && !errors.Is(err, errclass.NotFound):
			// This node cannot (qemu-img missing after all, pool gone
			// from it, node lost): another may.
			failures = append(failures, fmt.Sprintf("%s: %v", n.Name, err))
			c.jobs.Event(base, j.ID, fmt.Sprintf("node %s could not convert: %v", n.Name, err))
			continue
		}
		msg := err.Error()
		if errors.Is(err, errclass.Conflict) {
			msg += "; or convert with another name (--name)"
		}
		c.jobs.Finish(base, j, store.JobFailed, msg, nil)
		return
	}
	c.jobs.Finish(base, j, store.JobFailed, fmt.Sprintf("no node that mounts pool %s can convert %s: %s", pool.Name, src.Name, strings.Join(failures, "; ")), nil)
}

// done ends the job with the converted file in place: its image READY.
func (c *Controller) done(ctx context.Context, j store.Job, node string, res Result) {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		c.jobs.Log().Warn("finishing a conversion job", "job", j.ID, "err", err)
		return
	}
	now := c.jobs.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageReady, "", now
	im.SHA256, im.SizeBytes, im.Format, im.VirtualSize, im.ModTime = res.SHA256, res.Size, res.Format, res.VirtualSize, res.ModTime
	j.BytesDone, j.BytesTotal = res.Size, res.Size
	msg := fmt.Sprintf("converted on node %s to %s (%d bytes, sha256:%s)", node, res.Format, res.Size, res.SHA256)
	if res.Check != "" {
		msg += "; " + res.Check
	}
	c.jobs.Finish(ctx, j, store.JobSucceeded, msg, &im)
}
