package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/quarry-project/quarry/internal/store"
)

// CreateJob inserts j, a job on image j.ImageID of pool j.PoolID, unless an
// active job already works on j.Source in the pool: then it returns that job
// with ErrConflict and inserts nothing. An empty j.State is QUEUED; others
// are refused, as are an empty id, kind, source or image.
func (s *Store) CreateJob(ctx context.Context, j store.Job) (store.Job, error) {
	if j.State == "" {
		j.State = store.JobQueued
	}
	switch {
	case j.ID == "":
		return store.Job{}, errors.New("create job: empty id")
	case j.Kind == "" || j.Source == "" || j.ImageID == "":
		return store.Job{}, fmt.Errorf("create job %s: kind, source and image are required", j.ID)
	case j.State != store.JobQueued:
		return store.Job{}, fmt.Errorf("create job: job %s is %s, want %s", j.ID, j.State, store.JobQueued)
	}
	var created, existing store.Job
	err := s.tx(ctx, func(t *txn) error {
		poolName, err := t.poolName(ctx, j.PoolID)
		if err != nil {
			return err
		}
		found, err := t.exists(ctx, `SELECT 1 FROM images WHERE id = ? AND pool_id = ?`, j.ImageID, j.PoolID)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("image %s in pool %q: %w", j.ImageID, poolName, store.ErrNotFound)
		}
		if existing, err = s.activeJob(ctx, t, j.Source, j.PoolID); err != nil {
			return err
		}
		if existing.ID != "" {
			return fmt.Errorf("job %s (%s) already works on %s in pool %q: %w", existing.ID, existing.Kind, j.Source, poolName, store.ErrConflict)
		}
		if err := t.insertJob(ctx, poolName, j); err != nil {
			return err
		}
		created, err = scanJob(t.queryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, j.ID))
		return err
	})
	switch {
	case err == nil:
		return created, nil
	case existing.ID != "":
		return existing, err
	case errors.Is(err, store.ErrConflict):
		// A concurrent CreateJob of the same source won where writers do
		// not serialize (PostgreSQL): the answer is its job.
		if w, werr := s.activeJob(ctx, s.db, j.Source, j.PoolID); werr == nil && w.ID != "" {
			return w, err
		}
	}
	return store.Job{}, err
}
