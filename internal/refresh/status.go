package refresh

import (
	"context"
	"errors"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// Status is one entry in one pool, as GetCatalogStatus shows it.
type Status struct {
	store.CatalogRefresh
	PoolName string
	// Current is the current build, its image's name in CurrentName.
	Current     store.CatalogBuild
	CurrentName string
	// Builds are the builds kept, newest first.
	Builds []Build
}

// Build is a build with its image.
type Build struct {
	store.CatalogBuild
	Name  string
	State store.ImageState
}

// Status reports every entry the controller follows in a pool (or only
// catalogID), by entry then pool. It reads only the refresh state: a
// download from the catalog is followed as soon as it ends.
func (c *Controller) Status(ctx context.Context, catalogID string) ([]Status, error) {
	return ReadStatus(ctx, c.cfg.Store, c.cfg.Interval, catalogID)
}

// ReadStatus is Status as any control-plane replica reads it from the
// store: interval is the time between two checks (zero: only when asked).
func ReadStatus(ctx context.Context, db store.Store, interval time.Duration, catalogID string) ([]Status, error) {
	rows, err := db.ListCatalogRefresh(ctx)
	if err != nil {
		return nil, err
	}
	var out []Status
	for _, r := range rows {
		if catalogID != "" && r.CatalogID != catalogID {
			continue
		}
		pool, err := db.GetPool(ctx, r.PoolID)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted; the controller forgets it
		}
		if err != nil {
			return nil, err
		}
		st := Status{CatalogRefresh: r, PoolName: pool.Name}
		if interval <= 0 {
			st.NextCheckAt = time.Time{} // periodic checks are off
		}
		builds, err := db.ListCatalogBuilds(ctx, r.CatalogID, r.PoolID)
		if err != nil {
			return nil, err
		}
		for _, b := range builds {
			im, err := db.GetImage(ctx, b.ImageID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			st.Builds = append(st.Builds, Build{CatalogBuild: b, Name: im.Name, State: im.State})
			if b.ImageID == r.CurrentImageID {
				st.Current, st.CurrentName = b, im.Name
			}
		}
		out = append(out, st)
	}
	return out, nil
}
