package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestSQLiteReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quarry.db")
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	node := store.Node{ID: "n1", Name: "kvm1", Address: "10.0.0.1:9090", State: store.NodeUnknown, CreatedAt: created}
	pool := store.Pool{ID: "p1", Name: "default", Type: "dir", Path: "/srv/pool", Shared: true,
		AssignedNodeIDs: []string{"n1"}, CreatedAt: created}
	mount := store.PoolMount{NodeID: "n1", PoolID: "p1", Mounted: true, FreeBytes: 1, TotalBytes: 2, CheckedAt: created}

	s := openSQLite(t, path)
	if err := s.CreateNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePool(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPoolInitialized(ctx, "p1", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordNodeCheck(ctx, "n1", store.NodeStatus{State: store.NodeReady, LastCheckedAt: created}, []store.PoolMount{mount}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openSQLite(t, path)
	defer s.Close()
	gotNode, err := s.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if gotNode.State != store.NodeReady || !gotNode.CreatedAt.Equal(created) || !gotNode.LastCheckedAt.Equal(created) {
		t.Errorf("node after reopen = %+v", gotNode)
	}
	gotPool, err := s.GetPool(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if gotPool.InitializedBy != "n1" || !gotPool.Shared || len(gotPool.AssignedNodeIDs) != 1 {
		t.Errorf("pool after reopen = %+v", gotPool)
	}
	ms, err := s.ListPoolMounts(ctx)
	if err != nil || len(ms) != 1 || ms[0] != mount {
		t.Errorf("mounts after reopen = %+v, %v", ms, err)
	}
	// The foreign keys must hold on the reopened file too: they are a
	// per-connection pragma in SQLite, not part of the schema.
	if err := s.DeleteNode(ctx, "n1"); !errors.Is(err, store.ErrInUse) {
		t.Errorf("DeleteNode of assigned node after reopen: %v, want ErrInUse", err)
	}
}

func TestSQLiteMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quarry.db")
	for range 3 {
		s := openSQLite(t, path)
		if err := store.Migrate(ctx, s.db, s.d); err != nil {
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
	if n != 1 || version != 1 {
		t.Errorf("schema_migrations holds %d rows up to version %d, want 1 row, version 1", n, version)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	for _, table := range []string{"nodes", "pools", "pool_assignments", "pool_mounts"} {
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
