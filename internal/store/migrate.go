package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migrationFiles holds the schema as numbered files (NNNN_name.sql). They are
// written in the SQL subset SQLite and PostgreSQL share, so one history
// serves every backend and the backends cannot drift apart.
//
// Where that subset has no common spelling, a file names the construct with
// a placeholder that the Dialect expands before the file runs (see expand).
// There is one so far:
//
//	{{serial_pk}}  an integer primary key the database assigns, increasing
//	               with every insert: Dialect.SerialPrimaryKey.
//
// Such ids are read back with INSERT ... RETURNING id, which SQLite (3.35+)
// and PostgreSQL both support, so no LastInsertId (PostgreSQL drivers do not
// implement it) and no per-backend query is needed. An unknown placeholder,
// or one the dialect leaves empty, fails the migration rather than sending
// the braces to the database.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Dialect is everything a SQL backend does differently from another. The
// queries themselves are shared; keeping the differences this small is what
// lets a new backend be a driver plus one Dialect value.
type Dialect struct {
	// Name appears in error messages ("sqlite", "postgres").
	Name string
	// Rebind rewrites a query written with ? placeholders into the driver's
	// placeholder syntax. Nil means the driver accepts ? as is.
	Rebind func(query string) string
	// IsUniqueViolation reports whether err is a unique or primary-key
	// constraint failure.
	IsUniqueViolation func(err error) bool
	// IsForeignKeyViolation reports whether err is a foreign-key failure.
	IsForeignKeyViolation func(err error) bool
	// MigrationLock, when not empty, runs first in every migration
	// transaction. Backends whose transactions do not already exclude each
	// other (PostgreSQL: "SELECT pg_advisory_xact_lock(...)") need it so
	// two control-plane replicas starting at once do not both apply a file.
	MigrationLock string
	// SerialPrimaryKey is the column definition {{serial_pk}} expands to in
	// migrations: a 64-bit integer primary key that the database assigns on
	// insert, larger than every id assigned before and never reused, e.g.
	// "INTEGER PRIMARY KEY AUTOINCREMENT" (SQLite; without AUTOINCREMENT it
	// could reuse the id of a deleted last row) or "BIGINT GENERATED ALWAYS
	// AS IDENTITY PRIMARY KEY" (PostgreSQL). On PostgreSQL ids are handed
	// out at insert, not at commit, so concurrent transactions may commit
	// out of id order; readers paging backwards by id are unaffected.
	SerialPrimaryKey string
	// NowMicros is an SQL expression of the database's clock, in unix
	// microseconds: the leader lease's expiry goes by it, so replicas'
	// clocks need not agree.
	NowMicros string
	// ForKeyShare and ForUpdate, appended to a SELECT of one row, lock it
	// until the transaction ends (PostgreSQL " FOR KEY SHARE", " FOR
	// UPDATE"): the first against the second (and deletes) only, so plain
	// updates of the row go on beside it. Empty where a write transaction
	// already excludes every other (SQLite).
	ForKeyShare, ForUpdate string
	// InJSON follows a column in a condition that it is one of a list of
	// strings sent as one parameter, a JSON array: e.g. "IN (SELECT value
	// FROM json_each(?))". One statement text serves every length of
	// list, so it is parsed and prepared once, where a placeholder per
	// element made as many texts as lengths (each parsed anew: a page of a
	// thousand nodes' mounts was a thousand placeholders). On PostgreSQL
	// it is "= ANY(ARRAY(SELECT …))": the planner uses the column's index
	// for an array, and for the rows of a set-returning function scanned
	// the whole table (a full-cluster rescan took 22 s instead of 3).
	InJSON string
}

// Q returns query in the dialect's placeholder syntax.
func (d Dialect) Q(query string) string {
	if d.Rebind == nil {
		return query
	}
	return d.Rebind(query)
}

// migration is one embedded file.
type migration struct {
	version int64
	name    string
	sql     string
}

// The runner owns its bookkeeping table, so it creates it itself: it has to
// exist before the runner can ask which files were applied, including 0001.
const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT NOT NULL PRIMARY KEY,
	applied_at BIGINT NOT NULL
)`

// Migrate brings the schema of db up to date: it applies, in version order,
// every embedded migration not yet recorded in schema_migrations, each in its
// own transaction together with its record, so a failure leaves the schema at
// the last complete version. It refuses a database migrated by a newer
// binary, whose schema this code does not know.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) error {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return err
	}
	// Expanded up front so a dialect missing a value fails before anything
	// is applied, not halfway through the history.
	for i := range ms {
		if ms[i].sql, err = expand(ms[i].sql, d); err != nil {
			return fmt.Errorf("%s: migration %s: %w", d.Name, ms[i].name, err)
		}
	}
	if err := inTx(ctx, db, d, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, createMigrationsTable)
		return err
	}); err != nil {
		return fmt.Errorf("%s: create schema_migrations: %w", d.Name, err)
	}

	var current int64
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("%s: read schema version: %w", d.Name, err)
	}
	if latest := ms[len(ms)-1].version; current > latest {
		return fmt.Errorf("%s: database schema is at version %d but this build knows only up to %d; run a newer quarry", d.Name, current, latest)
	}

	for _, m := range ms {
		if err := inTx(ctx, db, d, func(tx *sql.Tx) error { return apply(ctx, tx, d, m) }); err != nil {
			return fmt.Errorf("%s: migration %s: %w", d.Name, m.name, err)
		}
	}
	return nil
}

func apply(ctx context.Context, tx *sql.Tx, d Dialect, m migration) error {
	// Checked inside the transaction, after the lock, because another
	// replica may have applied the file since this one last looked.
	var n int
	if err := tx.QueryRowContext(ctx, d.Q(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	// One Exec for the whole file: both drivers run multi-statement text
	// when the query has no arguments.
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, d.Q(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`),
		m.version, time.Now().UnixMicro())
	return err
}

func inTx(ctx context.Context, db *sql.DB, d Dialect, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if d.MigrationLock != "" {
		if _, err := tx.ExecContext(ctx, d.MigrationLock); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// placeholder matches {{name}} in a migration.
var placeholder = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_]*)\s*\}\}`)

// expand replaces the placeholders of a migration with d's spelling of them.
func expand(sqlText string, d Dialect) (string, error) {
	values := map[string]string{
		"serial_pk": d.SerialPrimaryKey,
	}
	var err error
	out := placeholder.ReplaceAllStringFunc(sqlText, func(m string) string {
		name := placeholder.FindStringSubmatch(m)[1]
		v, known := values[name]
		switch {
		case err != nil:
		case !known:
			err = fmt.Errorf("unknown placeholder %s", m)
		case v == "":
			err = fmt.Errorf("placeholder %s: the %s dialect does not define it", m, d.Name)
		}
		return v
	})
	if err != nil {
		return "", err
	}
	return out, nil
}

// loadMigrations reads and orders the files of fsys. A malformed name or a
// reused version is a build mistake, reported rather than skipped so it can
// never silently leave a table out.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int64]string{}
	for _, p := range names {
		name := path.Base(p)
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	if len(ms) == 0 {
		return nil, errors.New("no migrations embedded")
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}
