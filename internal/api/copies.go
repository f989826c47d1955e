package api

import (
	"context"
	"strings"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/download"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/store"
)

func (s *ImageService) CopyImage(ctx context.Context, req *connect.Request[quarryv1.CopyImageRequest]) (*connect.Response[quarryv1.CopyImageResponse], error) {
	resp, err := s.copyImage(ctx, req.Msg)
	return connect.NewResponse(resp), toConnect(ctx, s.Logger, err)
}

func (s *ImageService) copyImage(ctx context.Context, m *quarryv1.CopyImageRequest) (*quarryv1.CopyImageResponse, error) {
	from, err := s.get(ctx, m.GetImageId())
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(m.GetStoragePoolId()) == "" {
		return nil, invalidf("target storage pool id is empty; see quarry pool ls")
	}
	pool, err := getPool(ctx, s.Store, m.GetStoragePoolId())
	if err != nil {
		return nil, err
	}
	if from.State != store.ImageReady || from.SHA256 == "" {
		return nil, errclass.New(errclass.FailedPrecondition, "image %s is %s without a recorded digest; only a READY image with a digest can be copied (quarry image verify %s records one)",
			from.Name, from.State, from.ID)
	}
	name := from.Name
	if m.GetName() != "" {
		name = m.GetName()
	}
	if err := names.Check("image", name); err != nil {
		return nil, invalidf("%s; give one with --name", err.Error())
	}
	if pool.ID == from.PoolID && name == from.Name {
		return nil, invalidf("image %s is already in pool %s under that name; copy it into another pool, or give the copy another name with --name", from.Name, pool.Name)
	}
	if err := s.Downloads.Reachable(ctx, pool.ID); err != nil {
		return nil, err
	}
	now := s.Now()
	im := store.Image{
		ID: newID("img"), PoolID: pool.ID, Name: name, Kind: from.Kind, Format: from.Format, State: store.ImagePending,
		RelPath: poolfs.ImagePath(name, from.Kind == store.KindISO), Origin: store.OriginCopied, CreatedAt: now, UpdatedAt: now,
		OSDistro: from.OSDistro, OSVersion: from.OSVersion, OSArch: from.OSArch, VolumeLabel: from.VolumeLabel, Bootable: from.Bootable,
	}
	j := store.Job{
		ID: newID("job"), Kind: download.KindCopy, State: store.JobQueued, ImageID: im.ID, PoolID: pool.ID,
		Source: download.CopySource(from.ID, name), Checksum: "sha256:" + from.SHA256,
		Message: "queued: copy of image " + from.Name, CreatedAt: now, UpdatedAt: now,
	}
	im, jv, existing, err := s.createJob(ctx, pool, im, j, s.Downloads.Enqueue)
	if err != nil {
		return nil, err
	}
	return &quarryv1.CopyImageResponse{Image: imageView(im, pool.Name), Job: jv, Existing: existing}, nil
}
