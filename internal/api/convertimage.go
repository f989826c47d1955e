package api

import (
	"context"
	"path"
	"strings"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/convert"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/qemuimg"
	"github.com/quarry-project/quarry/internal/store"
)

// ConvertImage starts a conversion job: a node of the image's pool that
// has qemu-img writes the image in another format as a new image.
func (s *ImageService) ConvertImage(ctx context.Context, req *connect.Request[quarryv1.ConvertImageRequest]) (*connect.Response[quarryv1.ConvertImageResponse], error) {
	resp, err := s.convertImage(ctx, req.Msg)
	return connect.NewResponse(resp), toConnect(ctx, s.Logger, err)
}

func (s *ImageService) convertImage(ctx context.Context, m *quarryv1.ConvertImageRequest) (*quarryv1.ConvertImageResponse, error) {
	format := m.GetFormat()
	if format != "qcow2" && format != "raw" {
		return nil, invalidf("format %q: convert to qcow2 or raw", format)
	}
	src, err := s.get(ctx, m.GetId())
	if err != nil {
		return nil, err
	}
	if src.State != store.ImageReady {
		return nil, errclass.New(store.ErrInUse, "image %s is %s; only a READY image can be converted", src.Name, src.State)
	}
	if err := qemuimg.CheckPair(src.Format, format); err != nil {
		return nil, invalidf("image %s: %v", src.Name, err)
	}
	name := m.GetName()
	if name == "" {
		name = strings.TrimSuffix(src.Name, path.Ext(src.Name)) + "." + format
	}
	if err := names.Check("image", name); err != nil {
		return nil, invalidf("%s; give one with --name", err.Error())
	}
	pool, err := s.Store.GetPool(ctx, src.PoolID)
	if err != nil {
		return nil, err
	}
	kind := src.Kind
	if kind == store.KindISO {
		kind = store.KindDisk
	}
	now := s.Now()
	im := store.Image{
		ID: newID("img"), PoolID: pool.ID, Name: name, Kind: kind, State: store.ImagePending,
		RelPath: poolfs.ImagePath(name, false), Origin: store.OriginConverted, CreatedAt: now, UpdatedAt: now,
		OSDistro: src.OSDistro, OSVersion: src.OSVersion, OSArch: src.OSArch,
	}
	j := store.Job{
		ID: newID("job"), Kind: convert.Kind, State: store.JobQueued, ImageID: im.ID, PoolID: pool.ID,
		Source: convert.Source(src.ID, format), Message: "queued", CreatedAt: now, UpdatedAt: now,
	}
	// When the same conversion is running, that job is the answer.
	im, jv, _, err := s.createJob(ctx, pool, im, j, s.ConvertJobs)
	if err != nil {
		return nil, err
	}
	return &quarryv1.ConvertImageResponse{Image: imageView(im, pool.Name), Job: jv}, nil
}
