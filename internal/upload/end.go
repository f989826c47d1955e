package upload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/quarry-project/quarry/internal/discovery"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/store"
)

// How uploads end: succeeded, failed, cancelled, expired.

// succeed records the image in place: READY, with what the node found.
func (s *Service) succeed(ctx context.Context, u upload, res *agentv1.UploadResult) error {
	im, err := s.cfg.Store.GetImage(ctx, u.j.ImageID)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	guessed := im.RelPath
	im = finished(im, res, now)
	j := u.j
	j.State, j.FinishedAt, j.UpdatedAt = store.JobSucceeded, now, now
	j.Phase, j.BytesDone, j.BytesPerSec = "finalizing", res.GetSize(), 0
	if res.GetVerified() {
		j.Message = fmt.Sprintf("uploaded to node %s and verified: sha256:%s", u.node.Name, res.GetSha256())
	} else {
		j.Message = fmt.Sprintf("uploaded to node %s and hashed (no expected checksum given): sha256:%s", u.node.Name, res.GetSha256())
	}
	if im.RelPath != guessed {
		j.Message += fmt.Sprintf("; its content is %s, so it is at %s", im.Format, im.RelPath)
	}
	if err := s.cfg.Store.FinishJob(ctx, j, im); err != nil {
		return err
	}
	s.event(ctx, j.ID, j.Message)
	s.log.Info("upload succeeded", "job", j.ID, "node", u.node.Name, "image", im.Name, "bytes", res.GetSize())
	return nil
}

// fail ends the upload: its job FAILED and its image ERROR with why, and
// its partial file removed (the node removed it already for a terminal
// error).
func (s *Service) fail(ctx context.Context, j store.Job, why error) {
	if pool, err := s.cfg.Store.GetPool(ctx, j.PoolID); err == nil && j.NodeID != "" {
		if err := s.cfg.Agents.CancelUpload(ctx, j.NodeID, j.ID, pool); err != nil {
			s.log.Info("removing a failed upload's partial file", "job", j.ID, "err", err)
		}
	}
	im, err := s.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		s.log.Warn("failing an upload", "job", j.ID, "err", err)
		return
	}
	now := s.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageError, why.Error(), now
	j.State, j.Message, j.FinishedAt, j.UpdatedAt, j.BytesPerSec = store.JobFailed, why.Error(), now, now, 0
	if err := s.cfg.Store.FinishJob(ctx, j, im, errclass.Failure(why)); err != nil {
		s.log.Warn("failing an upload", "job", j.ID, "err", err)
		return
	}
	s.log.Info("upload failed", "job", j.ID, "err", why)
}

// expire ends an upload nobody touched for Expiry.
func (s *Service) expire(ctx context.Context, j store.Job, pool store.Pool) {
	s.fail(context.WithoutCancel(ctx), j, errclass.New(errclass.Terminal, "the upload expired: nothing was sent for %v; its partial file is removed. Upload the file again", s.cfg.Expiry))
}

// Terminate cancels an upload: its partial file is removed, its job
// CANCELLED and its image record deleted.
func (s *Service) Terminate(ctx context.Context, id string) error {
	u, err := s.load(ctx, id)
	if err != nil {
		return err
	}
	if u.j.State == store.JobSucceeded {
		return errclass.New(ErrGone, "upload %s is complete: image %s is in pool %s; delete it with quarry image rm", id, u.im.Name, u.pool.Name)
	}
	return s.cancel(context.WithoutCancel(ctx), u.j, u.pool)
}

func (s *Service) cancel(ctx context.Context, j store.Job, pool store.Pool) error {
	// A write in progress is cut first: it holds the upload on its node.
	s.mu.Lock()
	if w := s.writing[j.ID]; w != nil {
		w.stop()
	}
	s.mu.Unlock()
	if err := s.cfg.Agents.CancelUpload(ctx, j.NodeID, j.ID, pool); err != nil {
		s.log.Info("removing a cancelled upload's partial file", "job", j.ID, "err", err)
	}
	now := s.cfg.Now()
	j.State, j.Message, j.FinishedAt, j.UpdatedAt, j.BytesPerSec = store.JobCancelled, "cancelled", now, now, 0
	return s.cfg.Store.DiscardJob(ctx, j, "cancelled; the partial file is removed")
}

// Enqueue looks at a job whose cancel was asked for through the
// JobService: an upload's is carried out at once, in the background.
func (s *Service) Enqueue(id string) { go s.cancelRequested(id) }

func (s *Service) cancelRequested(id string) {
	ctx, done := context.WithTimeout(context.Background(), time.Minute)
	defer done()
	j, err := s.cfg.Store.GetJob(ctx, id)
	if err != nil || j.Kind != Kind || !j.State.Active() || !j.CancelRequested {
		return
	}
	pool, err := s.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return
	}
	if err := s.cancel(ctx, j, pool); err != nil {
		s.log.Warn("cancelling an upload", "job", id, "err", err)
	}
}

// Run expires uploads not touched for Expiry until ctx is done.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(min(s.cfg.Expiry/10, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		jobs, err := s.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
		if err != nil {
			continue
		}
		for _, j := range jobs {
			if j.Kind != Kind || s.cfg.Now().Sub(j.UpdatedAt) <= s.cfg.Expiry || s.busy(j.ID) {
				continue
			}
			if pool, err := s.cfg.Store.GetPool(ctx, j.PoolID); err == nil {
				s.expire(ctx, j, pool)
			}
		}
	}
}

// finished is the uploaded image in place, READY with what its node found:
// at the path the node put it (its content may have moved it between iso/
// and images/), an ISO described as discovery describes the ISOs it finds.
func finished(im store.Image, res *agentv1.UploadResult, now time.Time) store.Image {
	if d := res.GetDest(); d != "" && d != im.RelPath {
		im.RelPath, im.Kind, im.Format = d, store.KindDisk, ""
		if poolfs.IsISOPath(d) {
			im.Kind, im.Format = store.KindISO, "iso"
		}
	}
	if im.Kind == store.KindISO {
		im = discovery.Describe(im, discovery.File{RelPath: im.RelPath, Size: res.GetSize(), ModTime: res.GetModTime().AsTime(),
			Label: res.GetLabel(), Bootable: res.GetBootable(), Problem: res.GetProblem()}, now)
	}
	im.State, im.UpdatedAt = store.ImageReady, now
	if im.Kind == store.KindISO && res.GetProblem() != "" {
		im.StateReason = "no ISO 9660 volume label: " + res.GetProblem()
	} else {
		im.StateReason = ""
	}
	im.SHA256, im.Verified, im.SizeBytes = res.GetSha256(), res.GetVerified(), res.GetSize()
	im.ModTime, im.VirtualSize = res.GetModTime().AsTime(), res.GetVirtualSize()
	if f := res.GetFormat(); f != "" {
		im.Format = f
	}
	return im
}

// Status maps the service's errors to HTTP statuses for the tus handler.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrGone):
		return http.StatusGone
	case errors.Is(err, errclass.ChecksumMismatch):
		return http.StatusUnprocessableEntity
	case errors.Is(err, errclass.NoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, errclass.RateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, errclass.Fenced), errors.Is(err, errclass.Unavailable), errors.Is(err, errclass.Transient):
		return http.StatusServiceUnavailable
	case errors.Is(err, errclass.NotFound):
		return http.StatusNotFound
	case errors.Is(err, errclass.PermissionDenied):
		return http.StatusForbidden
	case errors.Is(err, errclass.Unauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, errclass.Conflict):
		return http.StatusConflict
	case errors.Is(err, errclass.InvalidArgument), errors.Is(err, errclass.FailedPrecondition), errors.Is(err, errclass.Terminal):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
