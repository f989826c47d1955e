package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/quarry-project/quarry/internal/store"
)

// poolSelect reads pools with their assignments in one statement, so a pool
// and its node list always come from the same snapshot. Pools without
// assignments yield one row with an empty node id.
const poolSelect = `SELECT p.id, p.name, p.type, p.path, p.shared, p.initialized_by, p.created_at,
	COALESCE(a.node_id, '')
	FROM pools p LEFT JOIN pool_assignments a ON a.pool_id = p.id`

// scanPools folds poolSelect rows, which must be ordered by pool and then
// position, into pools.
func scanPools(rows *sql.Rows) ([]store.Pool, error) {
	defer rows.Close()
	var out []store.Pool
	// Every row scans into the same variables: declared in the loop, they
	// escaped to the heap at every row (a pool and its nodes are a row
	// each: 10,000 rows for 1,000 pools and 5,000 nodes).
	var (
		p         store.Pool
		shared    int
		createdAt int64
		nodeID    string
	)
	for rows.Next() {
		if err := rows.Scan(&p.ID, &p.Name, &p.Type, &p.Path, &shared, &p.InitializedBy, &createdAt, &nodeID); err != nil {
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].ID != p.ID {
			p.Shared = shared != 0
			p.CreatedAt = fromMicros(createdAt)
			out = append(out, p)
		}
		if nodeID != "" {
			last := &out[len(out)-1]
			last.AssignedNodeIDs = append(last.AssignedNodeIDs, nodeID)
		}
	}
	return out, rows.Err()
}

func (s *Store) getPool(ctx context.Context, where, what string, arg any) (store.Pool, error) {
	rows, err := s.db.QueryContext(ctx, s.q(poolSelect+` WHERE `+where+` ORDER BY a.position`), arg)
	if err != nil {
		return store.Pool{}, err
	}
	ps, err := scanPools(rows)
	if err != nil {
		return store.Pool{}, err
	}
	if len(ps) == 0 {
		return store.Pool{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return ps[0], nil
}

// GetPool returns the pool with id.
func (s *Store) GetPool(ctx context.Context, id string) (store.Pool, error) {
	return s.getPool(ctx, `p.id = ?`, "pool "+id, id)
}

// GetPoolByName returns the pool called name.
func (s *Store) GetPoolByName(ctx context.Context, name string) (store.Pool, error) {
	return s.getPool(ctx, `p.name = ?`, fmt.Sprintf("pool %q", name), name)
}

// ListPools returns every pool ordered by name.
func (s *Store) ListPools(ctx context.Context) ([]store.Pool, error) {
	rows, err := s.db.QueryContext(ctx, s.q(poolSelect+` ORDER BY p.name, p.id, a.position`))
	if err != nil {
		return nil, err
	}
	return scanPools(rows)
}

// PoolNames returns the names of the pools with these ids, by id.
func (s *Store) PoolNames(ctx context.Context, ids ...string) (map[string]string, error) {
	names := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return names, nil
	}
	in, args := s.in(ids)
	_, err := queryAll(ctx, s.db, s.q(`SELECT id, name FROM pools WHERE id `+in), args, func(r scanner) (string, error) {
		var id, name string
		if err := r.Scan(&id, &name); err != nil {
			return "", err
		}
		names[id] = name
		return id, nil
	})
	return names, err
}

// PoolsAssignedTo returns the ids of the pools assigned to each of the
// nodes, by node id.
func (s *Store) PoolsAssignedTo(ctx context.Context, nodeIDs ...string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(nodeIDs) == 0 {
		return out, nil
	}
	in, args := s.in(nodeIDs)
	_, err := queryAll(ctx, s.db, s.q(`SELECT node_id, pool_id FROM pool_assignments WHERE node_id `+in+` ORDER BY node_id, pool_id`), args,
		func(r scanner) (string, error) {
			var node, pool string
			if err := r.Scan(&node, &pool); err != nil {
				return "", err
			}
			out[node] = append(out[node], pool)
			return pool, nil
		})
	return out, err
}

// CreatePool inserts p with its assigned nodes.
func (s *Store) CreatePool(ctx context.Context, p store.Pool) error {
	if p.ID == "" {
		return errors.New("create pool: empty id")
	}
	return s.tx(ctx, func(t *txn) error {
		// Looked up first so the error can say which key collided; the
		// unique constraints remain the guarantee.
		if err := t.poolTaken(ctx, p, true); err != nil {
			return err
		}
		_, err := t.exec(ctx, `INSERT INTO pools (id, name, type, path, shared, initialized_by, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			p.ID, p.Name, p.Type, p.Path, boolToDB(p.Shared), p.InitializedBy, micros(p.CreatedAt))
		if s.isUnique(err) {
			return fmt.Errorf("pool %q at %s: %w", p.Name, p.Path, store.ErrConflict)
		}
		if err != nil {
			return err
		}
		return t.assign(ctx, p.ID, p.AssignedNodeIDs)
	})
}

// UpdatePool replaces the name, shared flag and assigned nodes of pool p.ID.
func (s *Store) UpdatePool(ctx context.Context, p store.Pool) error {
	return s.tx(ctx, func(t *txn) error {
		ok, err := t.exists(ctx, `SELECT 1 FROM pools WHERE id = ?`, p.ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("pool %s: %w", p.ID, store.ErrNotFound)
		}
		if err := t.poolTaken(ctx, p, false); err != nil {
			return err
		}
		_, err = t.exec(ctx, `UPDATE pools SET name = ?, shared = ? WHERE id = ?`, p.Name, boolToDB(p.Shared), p.ID)
		if s.isUnique(err) {
			return fmt.Errorf("pool name %q: %w", p.Name, store.ErrConflict)
		}
		if err != nil {
			return err
		}
		if _, err := t.exec(ctx, `DELETE FROM pool_assignments WHERE pool_id = ?`, p.ID); err != nil {
			return err
		}
		return t.assign(ctx, p.ID, p.AssignedNodeIDs)
	})
}

// poolTaken returns ErrConflict naming what of p another pool already has:
// its name, and when creating also its path and id.
func (t *txn) poolTaken(ctx context.Context, p store.Pool, creating bool) error {
	query := `SELECT id, name, path FROM pools WHERE name = ? AND id <> ?`
	args := []any{p.Name, p.ID}
	if creating {
		query = `SELECT id, name, path FROM pools WHERE id = ? OR name = ? OR path = ?`
		args = []any{p.ID, p.Name, p.Path}
	}
	rows, err := t.QueryContext(ctx, t.s.q(query), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, name, path string
		if err := rows.Scan(&id, &name, &path); err != nil {
			return err
		}
		switch {
		case name == p.Name:
			return fmt.Errorf("pool name %q: %w", p.Name, store.ErrConflict)
		case path == p.Path:
			return fmt.Errorf("pool path %s is already pool %q: %w", p.Path, name, store.ErrConflict)
		default:
			return fmt.Errorf("pool id %s: %w", p.ID, store.ErrConflict)
		}
	}
	return rows.Err()
}

// assign stores nodeIDs as the assigned nodes of pool poolID, in order.
func (t *txn) assign(ctx context.Context, poolID string, nodeIDs []string) error {
	seen := make(map[string]bool, len(nodeIDs))
	for i, nodeID := range nodeIDs {
		if seen[nodeID] {
			return fmt.Errorf("node %s is assigned to pool %s twice: %w", nodeID, poolID, store.ErrConflict)
		}
		seen[nodeID] = true
		_, err := t.exec(ctx, `INSERT INTO pool_assignments (pool_id, node_id, position) VALUES (?, ?, ?)`, poolID, nodeID, i)
		if t.s.isForeignKey(err) {
			// The pool row was written in this transaction, so the
			// missing side is the node.
			return fmt.Errorf("assigned node %s: %w", nodeID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// MarkPoolInitialized records that nodeID wrote pool poolID's marker.
func (s *Store) MarkPoolInitialized(ctx context.Context, poolID, nodeID string) error {
	if nodeID == "" {
		return errors.New("mark pool initialized: empty node id")
	}
	// One conditional UPDATE is the whole decision, so two nodes racing to
	// initialize the same pool cannot both win. The same node again is
	// success, because an agent retrying after a lost reply must not fail.
	res, err := s.exec(ctx, `UPDATE pools SET initialized_by = ? WHERE id = ? AND (initialized_by = '' OR initialized_by = ?)`,
		nodeID, poolID, nodeID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	var by string
	err = s.db.QueryRowContext(ctx, s.q(`SELECT initialized_by FROM pools WHERE id = ?`), poolID).Scan(&by)
	if err != nil {
		return notFound(err, "pool "+poolID)
	}
	return fmt.Errorf("pool %s was already initialized by node %s: %w", poolID, by, store.ErrConflict)
}

// DeletePool removes pool id; assignments and mounts go with it by cascade,
// and so do its finished jobs, removed here since jobs have no cascade.
// A pool that still holds images is in use: images have no cascade, since
// dropping their records would orphan the files. So is a pool with an
// active job, which must be cancelled first.
func (s *Store) DeletePool(ctx context.Context, id string) error {
	return s.tx(ctx, func(t *txn) error {
		// Counted first so the error can say how many remain; the foreign
		// keys from images and jobs remain the guarantee.
		var (
			name   string
			images int
		)
		err := t.queryRow(ctx, `SELECT p.name, COUNT(i.id) FROM pools p LEFT JOIN images i ON i.pool_id = p.id
			WHERE p.id = ? GROUP BY p.name`, id).Scan(&name, &images)
		if err != nil {
			return notFound(err, "pool "+id)
		}
		var active int
		if err := t.queryRow(ctx, `SELECT COUNT(*) FROM jobs WHERE pool_id = ? AND state IN `+activeStates, id).
			Scan(&active); err != nil {
			return err
		}
		switch {
		case active == 1:
			return fmt.Errorf("pool %q has 1 download running; cancel it first: %w", name, store.ErrInUse)
		case active > 1:
			return fmt.Errorf("pool %q has %d downloads running; cancel them first: %w", name, active, store.ErrInUse)
		case images > 0:
			return fmt.Errorf("pool %q still holds %d image(s); delete them first: %w", name, images, store.ErrInUse)
		}
		// Finished jobs are history of a pool that is going away; their
		// events go with them by cascade. An active job that slipped in
		// after the count is left for the foreign key to refuse.
		if _, err := t.exec(ctx, `DELETE FROM jobs WHERE pool_id = ? AND state NOT IN `+activeStates, id); err != nil {
			return err
		}
		res, err := t.exec(ctx, `DELETE FROM pools WHERE id = ?`, id)
		if s.isForeignKey(err) {
			// Only when an image or job was added concurrently after the
			// counts.
			return fmt.Errorf("pool %q still holds images or downloads; delete or cancel them first: %w", name, store.ErrInUse)
		}
		if err != nil {
			return err
		}
		return mustAffect(res, "pool "+id)
	})
}
