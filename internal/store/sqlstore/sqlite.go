package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/quarry-project/quarry/internal/store"
)

// sqliteParams configures every pooled connection, since pragmas are per
// connection: WAL lets readers run beside the writer, busy_timeout makes a
// writer wait for the lock instead of failing, foreign_keys is off by
// default in SQLite, and _txlock=immediate takes the write lock at BEGIN so
// a transaction that reads then writes cannot fail to upgrade its lock
// halfway (SQLITE_BUSY that busy_timeout cannot retry).
const sqliteParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// OpenSQLite opens (creating if needed) the SQLite database file at path,
// migrates it and returns a Store over it.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open sqlite: empty path")
	}
	// The driver hands a "file:" DSN to SQLite as a URI, so characters like
	// '?', '#' and '%' in the path must be escaped to reach the file name.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + sqliteParams
	db, err := sql.Open(cachingSQLiteDriver(), dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// Opening a connection costs more than most queries (the pragmas, the
	// schema, the statements it prepares and keeps); database/sql keeps 2
	// idle by default and so opened one for nearly every request under
	// concurrent load.
	db.SetMaxIdleConns(sqliteConns)
	db.SetMaxOpenConns(sqliteConns)
	db.SetConnMaxIdleTime(time.Minute)
	s, err := New(ctx, db, SQLiteDialect())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return s, nil
}

// sqliteConns is how many SQLite connections may be open, and stay open
// while idle. Each holds its own page cache (up to 2 MiB) and prepared
// statements, and its files: unbounded, 5,000 nodes enrolling at once
// (make bench-scale) had 210 open. Statements beyond them wait for one;
// with a few cores, more reads at once serve no more.
const sqliteConns = 64

// SQLiteDialect describes SQLite as spoken by modernc.org/sqlite. It needs
// no migration lock: with _txlock=immediate, migration transactions already
// exclude each other.
func SQLiteDialect() store.Dialect {
	return store.Dialect{
		Name:             "sqlite",
		SerialPrimaryKey: "INTEGER PRIMARY KEY AUTOINCREMENT",
		NowMicros:        "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
		InJSON:           "IN (SELECT value FROM json_each(?))",
		IsUniqueViolation: func(err error) bool {
			c := sqliteCode(err)
			return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
		},
		IsForeignKeyViolation: func(err error) bool {
			return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
		},
	}
}

// sqliteCode returns the extended result code of err, or 0. The driver
// turns extended codes on for every connection.
func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}
