package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/quarry-project/quarry/internal/store"
)

var _ store.CatalogStore = (*Store)(nil)

const catalogRefreshColumns = `catalog_id, pool_id, current_image_id, last_check_at, next_check_at, result, error, job_id`

func scanCatalogRefresh(r scanner) (store.CatalogRefresh, error) {
	var (
		c          store.CatalogRefresh
		last, next int64
	)
	err := r.Scan(&c.CatalogID, &c.PoolID, &c.CurrentImageID, &last, &next, &c.Result, &c.Error, &c.JobID)
	c.LastCheckAt, c.NextCheckAt = fromMicros(last), fromMicros(next)
	return c, err
}

const catalogBuildColumns = `image_id, catalog_id, pool_id, build, built_at, etag, last_modified, digest, created_at`

func scanCatalogBuild(r scanner) (store.CatalogBuild, error) {
	var (
		b              store.CatalogBuild
		built, created int64
	)
	err := r.Scan(&b.ImageID, &b.CatalogID, &b.PoolID, &b.Build, &built, &b.ETag, &b.LastModified, &b.Digest, &created)
	b.BuiltAt, b.CreatedAt = fromMicros(built), fromMicros(created)
	return b, err
}

// ListCatalogRefresh returns every pair's state by catalog id, then pool.
func (s *Store) ListCatalogRefresh(ctx context.Context) ([]store.CatalogRefresh, error) {
	return queryAll(ctx, s.db, s.q(`SELECT `+catalogRefreshColumns+` FROM catalog_refresh ORDER BY catalog_id, pool_id`), nil, scanCatalogRefresh)
}

// GetCatalogRefresh returns one pair's state.
func (s *Store) GetCatalogRefresh(ctx context.Context, catalogID, poolID string) (store.CatalogRefresh, error) {
	c, err := scanCatalogRefresh(s.db.QueryRowContext(ctx, s.q(`SELECT `+catalogRefreshColumns+` FROM catalog_refresh
		WHERE catalog_id = ? AND pool_id = ?`), catalogID, poolID))
	return c, notFound(err, fmt.Sprintf("catalog entry %s in pool %s", catalogID, poolID))
}

// PutCatalogRefresh inserts or replaces one pair's state.
func (s *Store) PutCatalogRefresh(ctx context.Context, c store.CatalogRefresh) error {
	if c.CatalogID == "" || c.PoolID == "" {
		return errors.New("put catalog refresh: empty catalog or pool id")
	}
	_, err := s.exec(ctx, `INSERT INTO catalog_refresh (`+catalogRefreshColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (catalog_id, pool_id) DO UPDATE SET current_image_id = excluded.current_image_id,
		last_check_at = excluded.last_check_at, next_check_at = excluded.next_check_at, result = excluded.result,
		error = excluded.error, job_id = excluded.job_id`,
		c.CatalogID, c.PoolID, c.CurrentImageID, micros(c.LastCheckAt), micros(c.NextCheckAt), c.Result, c.Error, c.JobID)
	return err
}

// DeleteCatalogRefresh removes one pair's state and its builds at once.
func (s *Store) DeleteCatalogRefresh(ctx context.Context, catalogID, poolID string) error {
	return s.tx(ctx, func(t *txn) error {
		if _, err := t.exec(ctx, `DELETE FROM catalog_builds WHERE catalog_id = ? AND pool_id = ?`, catalogID, poolID); err != nil {
			return err
		}
		_, err := t.exec(ctx, `DELETE FROM catalog_refresh WHERE catalog_id = ? AND pool_id = ?`, catalogID, poolID)
		return err
	})
}

// PutCatalogBuild inserts or replaces one build.
func (s *Store) PutCatalogBuild(ctx context.Context, b store.CatalogBuild) error {
	if b.ImageID == "" || b.CatalogID == "" || b.PoolID == "" {
		return errors.New("put catalog build: empty image, catalog or pool id")
	}
	_, err := s.exec(ctx, `INSERT INTO catalog_builds (`+catalogBuildColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (image_id) DO UPDATE SET catalog_id = excluded.catalog_id, pool_id = excluded.pool_id,
		build = excluded.build, built_at = excluded.built_at, etag = excluded.etag,
		last_modified = excluded.last_modified, digest = excluded.digest, created_at = excluded.created_at`,
		b.ImageID, b.CatalogID, b.PoolID, b.Build, micros(b.BuiltAt), b.ETag, b.LastModified, b.Digest, micros(b.CreatedAt))
	return err
}

// ListCatalogBuilds returns one pair's builds, newest first.
func (s *Store) ListCatalogBuilds(ctx context.Context, catalogID, poolID string) ([]store.CatalogBuild, error) {
	return queryAll(ctx, s.db, s.q(`SELECT `+catalogBuildColumns+` FROM catalog_builds WHERE catalog_id = ? AND pool_id = ?
		ORDER BY created_at DESC, image_id DESC`), []any{catalogID, poolID}, scanCatalogBuild)
}

// DeleteCatalogBuild forgets the build of image imageID.
func (s *Store) DeleteCatalogBuild(ctx context.Context, imageID string) error {
	_, err := s.exec(ctx, `DELETE FROM catalog_builds WHERE image_id = ?`, imageID)
	return err
}
