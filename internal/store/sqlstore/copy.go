package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// copyTables is every table of the schema but schema_migrations, parents
// before children so that foreign keys hold as rows arrive. A test checks
// it against the migrated schema, so a new table cannot be left out.
var copyTables = []string{
	"nodes", "pools", "pool_assignments", "pool_mounts",
	"tokens", "sessions", "audit_log",
	"images", "jobs", "job_events", "secrets",
	"catalog_refresh", "catalog_builds",
}

// notCopied are the tables of one running installation that a copy leaves
// behind: the leader lease (the target's first replica takes it anew) and
// requests between replicas.
var notCopied = []string{"leader_lease", "leader_requests"}

// serialTables have a {{serial_pk}} id, which is copied as is; the target's
// counter then continues after the largest.
var serialTables = map[string]bool{"audit_log": true, "job_events": true}

// TableCount is how many rows one table holds.
type TableCount struct {
	Table string
	Rows  int64
}

// CopyTo copies every record of s into dst, which must be migrated and
// empty, and returns the number of rows of each table, which it has checked
// are the same in both. It reads s in one transaction, so a control plane
// writing to it meanwhile waits (SQLite) or is not seen (PostgreSQL), and
// writes dst in one, so a failure leaves it empty. A dst that holds any
// record is refused before anything is written.
func (s *Store) CopyTo(ctx context.Context, dst *Store) ([]TableCount, error) {
	src, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: s.d.Name != "sqlite"})
	if err != nil {
		return nil, err
	}
	defer src.Rollback() //nolint:errcheck // read only
	out, err := dst.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer out.Rollback() //nolint:errcheck // no-op after Commit

	for _, table := range copyTables {
		var n int64
		if err := out.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		if n > 0 {
			return nil, fmt.Errorf("the target database is not empty (%s holds %d rows); copy only into a new database", table, n)
		}
	}
	var counts []TableCount
	for _, table := range copyTables {
		n, err := copyTable(ctx, src, out, dst.d.Q, dst.d.Name, table)
		if err != nil {
			return nil, fmt.Errorf("copying %s: %w", table, err)
		}
		var have int64
		if err := src.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&have); err != nil {
			return nil, err
		}
		var got int64
		if err := out.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&got); err != nil {
			return nil, err
		}
		if got != have || n != have {
			return nil, fmt.Errorf("copying %s: the source holds %d rows, %d were copied and the target holds %d", table, have, n, got)
		}
		if serialTables[table] && dst.d.Name == "postgres" && n > 0 {
			// Identity columns do not notice ids written past them.
			if _, err := out.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+table+`', 'id'), (SELECT MAX(id) FROM `+table+`))`); err != nil {
				return nil, fmt.Errorf("copying %s: moving its id counter: %w", table, err)
			}
		}
		counts = append(counts, TableCount{Table: table, Rows: n})
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	return counts, nil
}

// copyTable copies the rows of table, every column by name, and returns
// how many it wrote.
func copyTable(ctx context.Context, src, out *sql.Tx, rebind func(string) string, dstName, table string) (int64, error) {
	rows, err := src.QueryContext(ctx, `SELECT * FROM `+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	overriding := ""
	if serialTables[table] && dstName == "postgres" {
		overriding = " OVERRIDING SYSTEM VALUE"
	}
	insert, err := out.PrepareContext(ctx, rebind(fmt.Sprintf(`INSERT INTO %s (%s)%s VALUES (%s)`,
		table, strings.Join(cols, ", "), overriding, strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", "))))
	if err != nil {
		return 0, err
	}
	defer insert.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		if _, err := insert.ExecContext(ctx, vals...); err != nil {
			return n, err
		}
		n++
	}
	return n, errors.Join(rows.Err(), rows.Close())
}
