package sqlstore

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestStmtCache: a connection runs a statement it ran before without
// preparing it again; the same query run while its earlier rows are still
// read runs beside them; a failed statement leaves the next run right.
func TestStmtCache(t *testing.T) {
	db, err := sql.Open(cachingSQLiteDriver(), "file:"+filepath.Join(t.TempDir(), "c.db")+"?"+sqliteParams)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection: every statement meets its cache
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	insert := `INSERT INTO t (id, v) VALUES (?, ?)`
	before := stmtsPrepared.Load()
	for i := range 10 {
		if _, err := db.ExecContext(ctx, insert, i, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if got := stmtsPrepared.Load() - before; got != 1 {
		t.Errorf("10 runs of one insert prepared %d statements, want 1", got)
	}

	// The batches of a group of health checks are kept: parsing them for
	// every group took a tenth of a busy control plane's CPU.
	for _, q := range []string{updateNodeRowsSQL, updateMountsSQL} {
		if n := strings.Count(q, "?"); n > maxCachedParams {
			t.Errorf("a batch of %d parameters would not be kept (at most %d are)", n, maxCachedParams)
		}
	}

	// A statement of a long list of parameters runs, and is not kept.
	long := `SELECT count(*) FROM t WHERE id IN (` + strings.TrimSuffix(strings.Repeat("?, ", maxCachedParams+1), ", ") + `)`
	args := make([]any, maxCachedParams+1)
	for i := range args {
		args[i] = i
	}
	before = stmtsPrepared.Load()
	for range 3 {
		var n int
		if err := db.QueryRowContext(ctx, long, args...).Scan(&n); err != nil || n != 10 {
			t.Fatalf("a query of %d parameters: %d rows, %v; want 10", len(args), n, err)
		}
	}
	if got := stmtsPrepared.Load() - before; got != 0 {
		t.Errorf("a query of %d parameters was kept (%d prepared), want it run uncached", len(args), got)
	}

	// A duplicate key fails; the statement runs right after.
	if _, err := db.ExecContext(ctx, insert, 3, "dup"); err == nil {
		t.Fatal("a duplicate key was inserted")
	}
	if _, err := db.ExecContext(ctx, insert, 10, "v"); err != nil {
		t.Fatalf("the insert after a failed one: %v", err)
	}

	// Nested: the same query while its rows are open, in a transaction
	// (one connection for both).
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	count := `SELECT id FROM t WHERE id < ? ORDER BY id`
	outer, err := tx.QueryContext(ctx, count, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for outer.Next() {
		var id int
		if err := outer.Scan(&id); err != nil {
			t.Fatal(err)
		}
		inner, err := tx.QueryContext(ctx, count, 2)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for inner.Next() {
			n++
		}
		if err := inner.Close(); err != nil || n != 2 {
			t.Fatalf("inner query: %d rows, %v; want 2", n, err)
		}
		got = append(got, id)
	}
	if err := outer.Err(); err != nil || len(got) != 3 || got[2] != 2 {
		t.Fatalf("outer query: %v, %v; want 0 1 2", got, err)
	}
}
