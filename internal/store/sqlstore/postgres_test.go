package sqlstore

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/pgtest"
	"github.com/quarry-project/quarry/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openPostgres opens a store on the database at url, closed when t ends.
func openPostgres(t *testing.T, url string) *Store {
	t.Helper()
	s, err := OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openPostgres(t, pgtest.NewSchema(t))
	})
}

// postgresAt opens the database at url on every call.
func postgresAt(url string) func(t *testing.T) *Store {
	return func(t *testing.T) *Store { return openPostgres(t, url) }
}

func TestPostgresReopenKeepsState(t *testing.T) {
	testReopenKeepsState(t, postgresAt(pgtest.NewDatabase(t)))
}

func TestPostgresReopenKeepsTrustState(t *testing.T) {
	testReopenKeepsTrustState(t, postgresAt(pgtest.NewDatabase(t)))
}

func TestPostgresReopenKeepsImages(t *testing.T) {
	testReopenKeepsImages(t, postgresAt(pgtest.NewDatabase(t)))
}

func TestPostgresReopenKeepsJobs(t *testing.T) {
	testReopenKeepsJobs(t, postgresAt(pgtest.NewDatabase(t)))
}

// TestPostgresMigrateConcurrently starts several stores on one empty
// database at once, as replicas starting together do: the advisory lock
// must let every one of them through and apply each file exactly once.
func TestPostgresMigrateConcurrently(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	for range replicas {
		wg.Go(func() {
			s, err := OpenPostgres(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	s := openPostgres(t, url)
	files, err := filepath.Glob(filepath.Join("..", "migrations", "*.sql"))
	if err != nil || len(files) < 2 {
		t.Fatalf("migration files: %v, %v", files, err)
	}
	var n, version int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	// Numbers may have gaps (migrations are numbered by the issue that
	// needs them): the newest is the highest-numbered file.
	if last := lastMigration(t, files); n != len(files) || version != last {
		t.Errorf("schema_migrations holds %d rows up to version %d, want %d rows, version %d", n, version, len(files), last)
	}
	// Migrating a migrated database changes nothing.
	if err := store.Migrate(ctx, s.db.DB, s.d); err != nil {
		t.Fatalf("Migrate on a migrated database: %v", err)
	}
}

func TestPostgresRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	s := openPostgres(t, url)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := OpenPostgres(ctx, url); err == nil || !strings.Contains(err.Error(), "9999") {
		if s != nil {
			s.Close()
		}
		t.Errorf("OpenPostgres on a newer schema: %v, want an error naming version 9999", err)
	}
}

// TestPostgresTypes checks the column types the portable schema gives
// PostgreSQL: the values the store writes must come back unchanged at the
// edges of their ranges, not only in the middle the suite uses.
func TestPostgresTypes(t *testing.T) {
	ctx := context.Background()
	s := openPostgres(t, pgtest.NewSchema(t))
	created := time.Date(2262, 4, 11, 23, 47, 16, 854775000, time.UTC) // near the int64-nanosecond edge
	if err := s.CreatePool(ctx, store.Pool{ID: "p1", Name: "isos", Type: "dir", Path: "/srv/isos", Shared: true, CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	im := store.Image{ID: "im1", PoolID: "p1", Name: "big", Kind: store.KindDisk, Format: "raw", State: store.ImageReady,
		RelPath: "disk/big.raw", SizeBytes: math.MaxInt64, VirtualSize: 1 << 62, ModTime: time.UnixMicro(1).UTC(),
		Bootable: true, Verified: true, CreatedAt: created, UpdatedAt: created}
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetImage(ctx, "im1"); err != nil || got != im {
		t.Errorf("image = %+v, %v\nwant %+v", got, err, im)
	}
	if p, err := s.GetPool(ctx, "p1"); err != nil || !p.Shared || !p.CreatedAt.Equal(created) || p.CreatedAt.Location() != time.UTC {
		t.Errorf("pool = %+v, %v", p, err)
	}
	var types []string
	rows, err := s.db.QueryContext(ctx, `SELECT column_name || ' ' || data_type FROM information_schema.columns
		WHERE table_name = 'jobs' AND column_name IN ('bytes_per_sec', 'bytes_done', 'cancel_requested', 'id') ORDER BY column_name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		types = append(types, s)
	}
	want := []string{"bytes_done bigint", "bytes_per_sec double precision", "cancel_requested integer", "id text"}
	if strings.Join(types, ", ") != strings.Join(want, ", ") {
		t.Errorf("jobs column types = %v, want %v", types, want)
	}
}

// TestPostgresConstraintErrors checks the SQLSTATE classification below
// the store's own checks.
func TestPostgresConstraintErrors(t *testing.T) {
	ctx := context.Background()
	s := openPostgres(t, pgtest.NewSchema(t))
	if _, err := s.db.ExecContext(ctx, `INSERT INTO pools (id, name, type, path) VALUES ('p1', 'a', 'dir', '/a')`); err != nil {
		t.Fatal(err)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO pools (id, name, type, path) VALUES ('p2', 'a', 'dir', '/b')`)
	if !s.isUnique(err) || s.isForeignKey(err) {
		t.Errorf("duplicate pool name: %v, want a unique violation only", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO pool_assignments (pool_id, node_id, position) VALUES ('p1', 'nx', 0)`)
	if !s.isForeignKey(err) || s.isUnique(err) {
		t.Errorf("assignment to an unknown node: %v, want a foreign-key violation only", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO pools (id, name, type, path, shared) VALUES ('p3', 'c', 'dir', '/c', 2)`)
	if err == nil || s.isUnique(err) || s.isForeignKey(err) {
		t.Errorf("check violation: %v, want an error of neither class", err)
	}
}

// TestPostgresGroupedChecks: as on SQLite, health checks are committed in
// groups, each caller learning its own outcome.
func TestPostgresGroupedChecks(t *testing.T) {
	s := openPostgres(t, pgtest.NewSchema(t))
	groupedChecks(t, s)
	sameNodeTwiceInAGroup(t, s)
	groupsKeepFences(t, s)
}

// TestPostgresLeaseWhilePoolBusy: with every connection of the pool taken
// (a busy control plane's checks and requests), the leader still renews
// its lease, and can give it up, at once: on its own connection.
func TestPostgresLeaseWhilePoolBusy(t *testing.T) {
	s := openPostgres(t, pgtest.NewSchema(t))
	ctx := context.Background()
	l, err := s.TryLease(ctx, store.LeaseRequest{Holder: "a", TTL: time.Minute})
	if err != nil || !l.Held {
		t.Fatalf("TryLease = %+v, %v; want it held", l, err)
	}
	for range maxPostgresConns {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	busy, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.CountImages(busy); err == nil {
		t.Fatal("a read got a connection: the pool is not all taken")
	}
	ctx, cancel = context.WithTimeout(ctx, 10*time.Second) // without its own connection, it waits
	defer cancel()
	renewed, err := s.TryLease(ctx, store.LeaseRequest{Holder: "a", Epoch: l.Epoch, TTL: time.Minute})
	if err != nil || !renewed.Held || renewed.Epoch != l.Epoch {
		t.Fatalf("renewal with the pool taken = %+v, %v; want epoch %d held", renewed, err, l.Epoch)
	}
	if err := s.ReleaseLease(ctx, "a", l.Epoch); err != nil {
		t.Fatalf("ReleaseLease with the pool taken: %v", err)
	}
}

// TestPostgresFencedWriteAndLease: while a fenced transaction is open, the
// leader renews its lease without waiting for it, and a change of leader
// waits for it to end; after the change, the old epoch's writes are
// refused.
func TestPostgresFencedWriteAndLease(t *testing.T) {
	s := openPostgres(t, pgtest.NewSchema(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := s.TryLease(ctx, store.LeaseRequest{Holder: "a", TTL: time.Minute})
	if err != nil || !a.Held {
		t.Fatalf("TryLease = %+v, %v", a, err)
	}
	fenced := store.WithFence(ctx, store.Fence{Epoch: a.Epoch})
	taken := make(chan store.Lease, 1)
	err = s.txOn(fenced, s.db, func(tx *txn) error {
		// Inside the fenced transaction, which holds its lock on the
		// lease until it commits.
		renewed, err := s.TryLease(ctx, store.LeaseRequest{Holder: "a", Epoch: a.Epoch, TTL: time.Minute})
		if err != nil || !renewed.Held {
			t.Errorf("renewal beside a fenced write = %+v, %v; want it held at once", renewed, err)
		}
		go func() {
			l, err := s.TryLease(ctx, store.LeaseRequest{Holder: "b", TTL: time.Minute, Steal: true})
			if err != nil {
				t.Error(err)
			}
			taken <- l
		}()
		select {
		case l := <-taken:
			t.Errorf("b took the lease (%+v) while a's fenced write was under way", l)
		case <-time.After(500 * time.Millisecond):
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the fenced transaction: %v", err)
	}
	if b := <-taken; !b.Held || b.Epoch != a.Epoch+1 {
		t.Fatalf("b's takeover after the fenced write = %+v; want epoch %d", b, a.Epoch+1)
	}
	p := store.Pool{ID: "p1", Name: "p1", Type: "dir", Path: "/srv/p1", CreatedAt: time.Now()}
	if err := s.CreatePool(fenced, p); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a write at the old epoch after the takeover = %v; want ErrFenced", err)
	}
}

// TestPostgresListUsesIndex: a condition on a list of ids sent as one
// parameter reads the column's index, not the whole table (written as IN
// over the rows of jsonb_array_elements_text, the planner scanned every
// mount row for each pool's: a full-cluster rescan of 1,000 pools took
// 22 s instead of 3).
func TestPostgresListUsesIndex(t *testing.T) {
	s := openPostgres(t, pgtest.NewSchema(t))
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO nodes (id, name, address) SELECT 'n' || g, 'node-' || g, '10.0.0.1:' || g FROM generate_series(1, 2000) g`,
		`INSERT INTO pools (id, name, type, path) SELECT 'p' || g, 'pool-' || g, 'dir', '/p/' || g FROM generate_series(1, 500) g`,
		`INSERT INTO pool_mounts (node_id, pool_id) SELECT 'n' || n, 'p' || ((n + k * 37) % 500 + 1)
			FROM generate_series(1, 2000) n, generate_series(1, 10) k ON CONFLICT DO NOTHING`,
		`ANALYZE pool_mounts`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, col := range []string{"pool_id", "node_id"} {
		in, args := s.in([]string{"p5", "n5"})
		rows, err := s.db.QueryContext(ctx, s.q(`EXPLAIN SELECT node_id FROM pool_mounts WHERE `+col+` `+in), args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		rows.Close()
		if p := strings.Join(plan, "\n"); strings.Contains(p, "Seq Scan on pool_mounts") || !strings.Contains(p, "Index") {
			t.Errorf("mounts by %s read without an index:\n%s", col, p)
		}
	}
}
