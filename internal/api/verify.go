package api

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/verify"
)

// VerifyImage starts a verify job: a node re-hashes the image's file and
// the digest is compared with the recorded one.
func (s *ImageService) VerifyImage(ctx context.Context, req *connect.Request[quarryv1.VerifyImageRequest]) (*connect.Response[quarryv1.VerifyImageResponse], error) {
	resp, err := s.verifyImage(ctx, req.Msg.GetId())
	return connect.NewResponse(resp), toConnect(ctx, s.Logger, err)
}

func (s *ImageService) verifyImage(ctx context.Context, id string) (*quarryv1.VerifyImageResponse, error) {
	im, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case im.SHA256 == "":
		return nil, errclass.New(store.ErrInUse, "image %s has no recorded digest to verify against (only downloaded images have one)", im.Name)
	case im.State == store.ImagePending || im.State == store.ImageDownloading || im.State == store.ImageVerifying || im.State == store.ImageUploading:
		return nil, errclass.New(store.ErrInUse, "image %s is being downloaded or uploaded; its job verifies it", im.Name)
	case im.State == store.ImageDeleting:
		return nil, errclass.New(store.ErrInUse, "image %s is being deleted", im.Name)
	case im.State == store.ImageMissing:
		return nil, errclass.New(store.ErrInUse, "the file of image %s is missing; put %s back, then verify it", im.Name, im.RelPath)
	}
	pool, err := s.Store.GetPool(ctx, im.PoolID)
	if err != nil {
		return nil, err
	}
	now := s.Now()
	j := store.Job{ID: newID("job"), Kind: verify.Kind, State: store.JobQueued, ImageID: im.ID, PoolID: im.PoolID,
		Source: verify.Source(im.ID), Message: "queued", CreatedAt: now, UpdatedAt: now}
	created, err := s.Store.CreateJob(ctx, j)
	existing := errors.Is(err, store.ErrConflict) && created.ID != ""
	if err != nil && !existing {
		return nil, err
	}
	s.VerifyJobs(created.ID)
	jv, err := jobView(ctx, s.Store, created, false)
	if err != nil {
		return nil, err
	}
	return &quarryv1.VerifyImageResponse{Image: imageView(im, pool.Name), Job: jv, Existing: existing}, nil
}
