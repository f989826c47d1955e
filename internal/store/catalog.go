package store

import (
	"context"
	"time"
)

// CatalogRefresh is the refresh state of one catalog entry in one pool.
type CatalogRefresh struct {
	CatalogID string
	PoolID    string
	// CurrentImageID is the build that is the entry's image in the pool.
	CurrentImageID string
	// LastCheckAt is when upstream was last asked (zero: never);
	// NextCheckAt when it is asked next.
	LastCheckAt time.Time
	NextCheckAt time.Time
	// Result says what the last check or refresh found, for people; Error
	// why it failed ("" when it did not).
	Result string
	Error  string
	// JobID is the download of a new build in flight; "" for none.
	JobID string
}

// CatalogBuild is one build of a catalog entry in a pool: an image.
type CatalogBuild struct {
	ImageID   string
	CatalogID string
	PoolID    string
	// Build labels it ("20250101-010000"); BuiltAt is when upstream made it
	// (its Last-Modified), or when it was fetched if upstream did not say.
	Build   string
	BuiltAt time.Time
	// The upstream validators and expected digest it was fetched with.
	ETag         string
	LastModified string
	Digest       string
	CreatedAt    time.Time
}

// CatalogStore keeps the catalog auto-refresh state.
type CatalogStore interface {
	// ListCatalogRefresh returns every entry's state in every pool,
	// ordered by catalog id, then pool id.
	ListCatalogRefresh(ctx context.Context) ([]CatalogRefresh, error)
	// GetCatalogRefresh returns ErrNotFound when the pair has no state.
	GetCatalogRefresh(ctx context.Context, catalogID, poolID string) (CatalogRefresh, error)
	// PutCatalogRefresh inserts or replaces the pair's state.
	PutCatalogRefresh(ctx context.Context, r CatalogRefresh) error
	// DeleteCatalogRefresh removes the pair's state and its builds.
	DeleteCatalogRefresh(ctx context.Context, catalogID, poolID string) error
	// PutCatalogBuild inserts or replaces the build of image b.ImageID.
	PutCatalogBuild(ctx context.Context, b CatalogBuild) error
	// ListCatalogBuilds returns the pair's builds, newest first.
	ListCatalogBuilds(ctx context.Context, catalogID, poolID string) ([]CatalogBuild, error)
	// DeleteCatalogBuild forgets the build of an image (not the image).
	DeleteCatalogBuild(ctx context.Context, imageID string) error
}
