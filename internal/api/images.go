package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/quarry-project/quarry/internal/discovery"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/store"
)

// Scanner runs ISO scans (the discovery controller).
type Scanner interface {
	Scan(ctx context.Context, poolIDs ...string) ([]discovery.Result, error)
	Status() ([]discovery.Running, []discovery.Result)
}

// FileDeleter removes a file from a pool through a node that mounts it.
type FileDeleter interface {
	DeleteFile(ctx context.Context, pool store.Pool, relPath string) error
}

// ImageService implements quarry.v1.ImageService.
type ImageService struct {
	quarryv1connect.UnimplementedImageServiceHandler
	Store   store.Store
	Scanner Scanner
	Files   FileDeleter
	// Downloads serves ListCatalog and DownloadImage.
	Downloads Downloads
	// VerifyJobs hands a new verify job to the verify controller.
	VerifyJobs func(jobID string)
	// Refresh serves GetCatalogStatus and RefreshCatalog.
	Refresh CatalogRefresher
	// ConvertJobs hands a new conversion job to the conversion controller.
	ConvertJobs func(jobID string)
	Logger      *slog.Logger
	Now         func() time.Time
}

var imageKinds = map[store.ImageKind]quarryv1.ImageKind{
	store.KindCloudImage: quarryv1.ImageKind_IMAGE_KIND_CLOUD_IMAGE,
	store.KindISO:        quarryv1.ImageKind_IMAGE_KIND_ISO,
	store.KindDisk:       quarryv1.ImageKind_IMAGE_KIND_DISK,
}

var imageStates = map[store.ImageState]quarryv1.ImageState{
	store.ImagePending:     quarryv1.ImageState_IMAGE_STATE_PENDING,
	store.ImageDownloading: quarryv1.ImageState_IMAGE_STATE_DOWNLOADING,
	store.ImageVerifying:   quarryv1.ImageState_IMAGE_STATE_VERIFYING,
	store.ImageReady:       quarryv1.ImageState_IMAGE_STATE_READY,
	store.ImageError:       quarryv1.ImageState_IMAGE_STATE_ERROR,
	store.ImageMissing:     quarryv1.ImageState_IMAGE_STATE_MISSING,
	store.ImageDeleting:    quarryv1.ImageState_IMAGE_STATE_DELETING,
	store.ImageUploading:   quarryv1.ImageState_IMAGE_STATE_UPLOADING,
}

func imageView(im store.Image, poolName string) *quarryv1.Image {
	v := &quarryv1.Image{
		Id:               im.ID,
		Name:             im.Name,
		StoragePoolId:    im.PoolID,
		StoragePoolName:  poolName,
		Kind:             imageKinds[im.Kind],
		Format:           im.Format,
		State:            imageStates[im.State],
		StateReason:      im.StateReason,
		Path:             im.RelPath,
		SizeBytes:        uint64(max(im.SizeBytes, 0)),
		ModifiedAt:       ts(im.ModTime),
		VolumeLabel:      im.VolumeLabel,
		Bootable:         im.Bootable,
		Origin:           string(im.Origin),
		CreatedAt:        ts(im.CreatedAt),
		UpdatedAt:        ts(im.UpdatedAt),
		MissingSince:     ts(im.MissingSince),
		VirtualSizeBytes: uint64(max(im.VirtualSize, 0)),
		Verified:         im.Verified && im.SHA256 != "",
	}
	if im.OSDistro != "" || im.OSVersion != "" || im.OSArch != "" {
		v.Os = &quarryv1.OSInfo{Distro: im.OSDistro, Version: im.OSVersion, Arch: im.OSArch}
	}
	if im.SHA256 != "" {
		v.Digest = "sha256:" + im.SHA256
	}
	return v
}

// ListImages answers a page in one query of the store when the page has
// images: they come with their pools' names, and a pool with images exists.
func (s *ImageService) ListImages(ctx context.Context, req *connect.Request[quarryv1.ListImagesRequest]) (*connect.Response[quarryv1.ListImagesResponse], error) {
	m := req.Msg
	f := store.ImageFilter{PoolID: m.GetStoragePoolId(), Search: m.GetSearch()}
	if k := m.GetKind(); k != quarryv1.ImageKind_IMAGE_KIND_UNSPECIFIED {
		if f.Kind = enumKey(imageKinds, k); f.Kind == "" {
			return nil, toConnect(ctx, s.Logger, invalidf("image kind %v is not known", k))
		}
	}
	if st := m.GetState(); st != quarryv1.ImageState_IMAGE_STATE_UNSPECIFIED {
		if f.State = enumKey(imageStates, st); f.State == "" {
			return nil, toConnect(ctx, s.Logger, invalidf("image state %v is not known", st))
		}
	}
	ims, next, err := s.Store.ListImagesPage(ctx, f, pageOf(m))
	if err == nil && len(ims) == 0 && f.PoolID != "" {
		// A page of a pool's images says the pool exists; an empty one
		// may be of no pool.
		var names map[string]string
		if names, err = s.Store.PoolNames(ctx, f.PoolID); err == nil && names[f.PoolID] == "" {
			err = errclass.New(store.ErrNotFound, "no pool has id %q; see quarry pool ls", f.PoolID)
		}
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ListImagesResponse{NextPageToken: next}
	for _, im := range ims {
		resp.Images = append(resp.Images, imageView(im, im.PoolName))
	}
	return connect.NewResponse(resp), nil
}

func (s *ImageService) GetImage(ctx context.Context, req *connect.Request[quarryv1.GetImageRequest]) (*connect.Response[quarryv1.GetImageResponse], error) {
	im, err := s.get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	names, err := s.Store.PoolNames(ctx, im.PoolID)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	return connect.NewResponse(&quarryv1.GetImageResponse{Image: imageView(im, names[im.PoolID])}), nil
}

func (s *ImageService) get(ctx context.Context, id string) (store.Image, error) {
	if strings.TrimSpace(id) == "" {
		return store.Image{}, invalidf("image id is empty")
	}
	im, err := s.Store.GetImage(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return im, errclass.New(store.ErrNotFound, "no image has id %q; see quarry image ls", id)
	}
	return im, err
}

// DeleteImage removes the file through a node that mounts the pool, then
// the record. While it runs the image is DELETING, so scans leave it alone;
// if the file cannot be removed the image returns to its state with the
// reason.
func (s *ImageService) DeleteImage(ctx context.Context, req *connect.Request[quarryv1.DeleteImageRequest]) (*connect.Response[quarryv1.DeleteImageResponse], error) {
	im, err := s.get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	switch im.State {
	case store.ImagePending, store.ImageDownloading, store.ImageVerifying, store.ImageUploading:
		return nil, toConnect(ctx, s.Logger, errclass.New(store.ErrInUse, "image %s is being downloaded or uploaded; cancel its job first (quarry job ls)", im.Name))
	case store.ImageMissing:
		// No file to remove: forget the record.
	default:
		if err := s.deleteFile(ctx, im); err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
	}
	// The file is gone: the record must go too, even if the caller left.
	if err := s.Store.DeleteImage(context.WithoutCancel(ctx), im.ID); err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	return connect.NewResponse(&quarryv1.DeleteImageResponse{}), nil
}

func (s *ImageService) deleteFile(ctx context.Context, im store.Image) error {
	pool, err := s.Store.GetPool(ctx, im.PoolID)
	if err != nil {
		return err
	}
	before := im
	im.State, im.UpdatedAt = store.ImageDeleting, s.Now()
	if err := s.Store.UpdateImage(ctx, im); err != nil {
		return err
	}
	if err := s.Files.DeleteFile(ctx, pool, im.RelPath); err != nil {
		before.StateReason = "deleting the file failed: " + err.Error()
		before.UpdatedAt = s.Now()
		if uerr := s.Store.UpdateImage(context.WithoutCancel(ctx), before); uerr != nil {
			s.Logger.ErrorContext(ctx, "restoring an image after a failed delete", "image", im.ID, "err", uerr)
		}
		return err
	}
	return nil
}

func (s *ImageService) ScanISOs(ctx context.Context, req *connect.Request[quarryv1.ScanISOsRequest]) (*connect.Response[quarryv1.ScanISOsResponse], error) {
	var ids []string
	if id := req.Msg.GetStoragePoolId(); id != "" {
		if _, err := getPool(ctx, s.Store, id); err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
		ids = append(ids, id)
	}
	results, err := s.Scanner.Scan(ctx, ids...)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ScanISOsResponse{}
	for _, r := range results {
		resp.Results = append(resp.Results, scanResultView(r))
		resp.DiscoveredCount += uint32(r.Discovered)
	}
	return connect.NewResponse(resp), nil
}

func (s *ImageService) GetScanStatus(ctx context.Context, _ *connect.Request[quarryv1.GetScanStatusRequest]) (*connect.Response[quarryv1.GetScanStatusResponse], error) {
	pools, err := s.Store.ListPools(ctx)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	running, last := s.Scanner.Status()
	resp := &quarryv1.GetScanStatusResponse{PoolsTotal: uint32(len(pools))}
	for _, r := range running {
		resp.Running = append(resp.Running, &quarryv1.RunningScan{
			StoragePoolId: r.PoolID, StoragePoolName: r.PoolName, NodeName: r.NodeName,
			FilesSeen: uint32(r.FilesSeen), StartedAt: ts(r.StartedAt), Trigger: r.Trigger,
		})
	}
	for _, r := range last {
		resp.Last = append(resp.Last, scanResultView(r))
	}
	return connect.NewResponse(resp), nil
}

func scanResultView(r discovery.Result) *quarryv1.PoolScanResult {
	return &quarryv1.PoolScanResult{
		StoragePoolId:   r.PoolID,
		StoragePoolName: r.PoolName,
		NodeId:          r.NodeID,
		NodeName:        r.NodeName,
		DiscoveredCount: uint32(r.Discovered),
		UpdatedCount:    uint32(r.Updated),
		MissingCount:    uint32(r.Missing),
		DeferredCount:   uint32(r.Deferred),
		ChangedCount:    uint32(r.Changed),
		MovedCount:      uint32(r.Moved),
		Duration:        durationpb.New(r.Duration),
		Skipped:         r.Skipped,
		SkipReason:      r.SkipReason,
		FinishedAt:      ts(r.FinishedAt),
		Trigger:         r.Trigger,
	}
}
