package api

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/refresh"
)

// CatalogRefresher is the catalog auto-refresh controller, as the API
// needs it.
type CatalogRefresher interface {
	Status(ctx context.Context, catalogID string) ([]refresh.Status, error)
	Trigger(ctx context.Context, catalogID string) ([]refresh.Status, error)
	Interval() time.Duration
	Keep() int
}

func (s *ImageService) GetCatalogStatus(ctx context.Context, req *connect.Request[quarryv1.GetCatalogStatusRequest]) (*connect.Response[quarryv1.GetCatalogStatusResponse], error) {
	id := req.Msg.GetCatalogId()
	if id != "" {
		if _, err := s.Downloads.Catalog.Get(id); err != nil {
			return nil, toConnect(ctx, s.Logger, errclass.New(errclass.NotFound, "%s", err.Error()))
		}
	}
	sts, err := s.Refresh.Status(ctx, id)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.GetCatalogStatusResponse{Interval: durationpb.New(s.Refresh.Interval()), Keep: uint32(s.Refresh.Keep())}
	for _, st := range sts {
		resp.Statuses = append(resp.Statuses, catalogStatusView(st))
	}
	return connect.NewResponse(resp), nil
}

func (s *ImageService) RefreshCatalog(ctx context.Context, req *connect.Request[quarryv1.RefreshCatalogRequest]) (*connect.Response[quarryv1.RefreshCatalogResponse], error) {
	sts, err := s.Refresh.Trigger(ctx, req.Msg.GetCatalogId())
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.RefreshCatalogResponse{}
	for _, st := range sts {
		resp.Statuses = append(resp.Statuses, catalogStatusView(st))
	}
	return connect.NewResponse(resp), nil
}

func catalogStatusView(st refresh.Status) *quarryv1.CatalogStatus {
	v := &quarryv1.CatalogStatus{
		CatalogId: st.CatalogID, StoragePoolId: st.PoolID, StoragePoolName: st.PoolName,
		CurrentImageId: st.CurrentImageID, CurrentImageName: st.CurrentName,
		CurrentBuild: st.Current.Build, CurrentBuiltAt: ts(st.Current.BuiltAt),
		LastCheckAt: ts(st.LastCheckAt), NextCheckAt: ts(st.NextCheckAt),
		Result: st.Result, Error: st.Error, JobId: st.JobID,
	}
	for _, b := range st.Builds {
		v.Builds = append(v.Builds, &quarryv1.CatalogBuild{
			ImageId: b.ImageID, ImageName: b.Name, Build: b.Build, BuiltAt: ts(b.BuiltAt),
			State: imageStates[b.State], Current: b.ImageID == st.CurrentImageID, Digest: b.Digest,
		})
	}
	return v
}
