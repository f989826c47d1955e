package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/storetest"
)

func openSQLite(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := openSQLite(t, filepath.Join(t.TempDir(), "quarry.db"))
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

// sqliteAt opens the SQLite database at path on every call, for the reopen
// tests every backend runs.
func sqliteAt(path string) func(t *testing.T) *Store {
	return func(t *testing.T) *Store { return openSQLite(t, path) }
}

func TestSQLiteReopenKeepsState(t *testing.T) {
	testReopenKeepsState(t, sqliteAt(filepath.Join(t.TempDir(), "quarry.db")))
}

func TestSQLiteReopenKeepsTrustState(t *testing.T) {
	testReopenKeepsTrustState(t, sqliteAt(filepath.Join(t.TempDir(), "quarry.db")))
}

func TestSQLiteReopenKeepsImages(t *testing.T) {
	testReopenKeepsImages(t, sqliteAt(filepath.Join(t.TempDir(), "quarry.db")))
}

func TestSQLiteReopenKeepsJobs(t *testing.T) {
	testReopenKeepsJobs(t, sqliteAt(filepath.Join(t.TempDir(), "quarry.db")))
}

// TestSQLiteUpgradeFromV1 opens a database written before the trust
// migration: existing nodes must come through with no certificate and the
// new tables must work.
func TestSQLiteUpgradeFromV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quarry.db")
	v1, err := os.ReadFile(filepath.Join("..", "migrations", "0001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		string(v1),
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)`,
		`INSERT INTO nodes (id, name, address, state, created_at) VALUES ('n1', 'kvm1', '10.0.0.1:9090', 'READY', 1)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openSQLite(t, path)
	defer s.Close()
	n, err := s.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "kvm1" || n.State != store.NodeReady || n.Certificate != (store.NodeCertificate{}) {
		t.Errorf("node after upgrade = %+v", n)
	}
	if err := s.SetNodeCertificate(ctx, "n1", store.NodeCertificate{Serial: "01"}); err != nil {
		t.Error(err)
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t1", Kind: store.TokenAPI}); err != nil {
		t.Error(err)
	}
	if id, err := s.AppendAudit(ctx, store.AuditEntry{Actor: "a"}); err != nil || id <= 0 {
		t.Errorf("AppendAudit after upgrade = %d, %v", id, err)
	}
	if err := s.CreatePool(ctx, store.Pool{ID: "p1", Name: "isos", Type: "dir", Path: "/srv/isos"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, store.Image{ID: "im1", PoolID: "p1", RelPath: "a.iso"}); err != nil {
		t.Errorf("CreateImage after upgrade: %v", err)
	}
	if _, err := s.CreateDownload(ctx, store.Image{ID: "im2", PoolID: "p1", RelPath: "b.iso"},
		store.Job{ID: "j1", Source: "https://example.com/b.iso"}); err != nil {
		t.Errorf("CreateDownload after upgrade: %v", err)
	}
}

func TestSQLiteMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quarry.db")
	for range 3 {
		s := openSQLite(t, path)
		if err := store.Migrate(ctx, s.db.DB, s.d); err != nil {
			t.Fatalf("Migrate on a migrated database: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, version int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "migrations", "*.sql"))
	if err != nil || len(files) < 2 {
		t.Fatalf("migration files: %v, %v", files, err)
	}
	// Numbers may have gaps (migrations are numbered by the issue that
	// needs them): the newest is the highest-numbered file.
	if last := lastMigration(t, files); n != len(files) || version != last {
		t.Errorf("schema_migrations holds %d rows up to version %d, want %d rows, version %d", n, version, len(files), last)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	for _, table := range []string{"nodes", "pools", "pool_assignments", "pool_mounts", "tokens", "sessions", "audit_log", "images",
		"jobs", "job_events"} {
		if err := db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quarry.db")
	s := openSQLite(t, path)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := OpenSQLite(ctx, path); err == nil || !strings.Contains(err.Error(), "9999") {
		if s != nil {
			s.Close()
		}
		t.Errorf("OpenSQLite on a newer schema: %v, want an error naming version 9999", err)
	}
}

func TestSQLitePathNeedsEscaping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd ?#% name.db")
	s := openSQLite(t, path)
	defer s.Close()
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The file must exist under its literal name, not a truncated one.
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// lastMigration is the version of the highest-numbered migration file.
func lastMigration(t *testing.T, files []string) int {
	t.Helper()
	last := 0
	for _, f := range files {
		var v int
		if _, err := fmt.Sscanf(filepath.Base(f), "%d_", &v); err != nil {
			t.Fatalf("migration file %s: %v", f, err)
		}
		last = max(last, v)
	}
	return last
}

// TestSQLiteDetachedStatements: on SQLite a statement runs detached from
// its context's end, so neither the driver nor database/sql starts a
// goroutine to watch it; a context that has ended fails the next
// statement, and a transaction whose context ended before its commit
// writes nothing.
func TestSQLiteDetachedStatements(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "d.db"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	before := runtime.NumGoroutine()
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM pools`)
	if err != nil {
		t.Fatal(err)
	}
	during := runtime.NumGoroutine()
	rows.Close()
	if during != before {
		t.Errorf("%d goroutines while a query's rows were open, %d before; want no more", during, before)
	}

	err = s.tx(ctx, func(tx *txn) error {
		if _, err := tx.exec(ctx, `INSERT INTO pools (id, name, type, path) VALUES ('p1', 'a', 'dir', '/a')`); err != nil {
			return err
		}
		cancel()
		if _, err := tx.exec(ctx, `INSERT INTO pools (id, name, type, path) VALUES ('p2', 'b', 'dir', '/b')`); !errors.Is(err, context.Canceled) {
			t.Errorf("a statement after its context ended: %v, want context.Canceled", err)
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("a transaction whose context ended: %v, want context.Canceled", err)
	}
	if ps, err := s.ListPools(context.Background()); err != nil || len(ps) != 0 {
		t.Errorf("pools after the transaction ended without commit: %v, %v; want none", ps, err)
	}
}

// TestSQLiteCountsReadOneIndex: a metrics scrape's counts of the library
// read an index that holds pool, kind and state, not every image's row,
// and its sums of the pools' mounts an index that holds what they sum, not
// every mount's row.
func TestSQLiteCountsReadOneIndex(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "q.db"))
	for _, q := range []struct{ name, query, index string }{
		{"CountImages", countImagesSQL, "images_pool_kind_state"},
		{"PoolUsages", poolUsagesSQL, "pool_mounts_usage"},
	} {
		rows, err := s.db.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+q.query)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		if p := strings.Join(plan, "\n"); !strings.Contains(p, "COVERING INDEX "+q.index) || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%s reads more than its index:\n%s", q.name, p)
		}
	}
}
