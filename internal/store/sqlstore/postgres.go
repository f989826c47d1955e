package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/quarry-project/quarry/internal/store"
)

// PostgreSQL error codes (SQLSTATE) the store tells apart.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// migrationLockKey is the advisory lock every migration transaction takes:
// an arbitrary constant ("quarry" in ASCII) that only migrations use.
const migrationLockKey = 0x717561727279

// maxPostgresConns caps the connections one control plane opens (and one
// more for the leader lease: Store.leaseDB). Writers
// wait for a connection rather than exhausting the server's
// max_connections (100 by default) when several replicas share it.
const maxPostgresConns = 16

// IsPostgresURL reports whether url names a PostgreSQL database
// (postgres:// or postgresql://, as libpq and pgx accept them).
func IsPostgresURL(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// OpenPostgres connects to the PostgreSQL database at url (any URL pgx
// accepts: postgres://user:pass@host:port/db?sslmode=disable), migrates it
// and returns a Store over it. It goes through pgx's database/sql driver so
// that one implementation, sqlstore, serves both backends; pgx keeps its own
// pool underneath, capped here.
func OpenPostgres(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message leaves the password out.
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	// A replica paused in the middle of a transaction (SIGSTOP, a VM
	// frozen) would hold the leader lease's row lock and block every
	// takeover: the server ends such sessions. Every transaction of the
	// store is short and busy.
	if _, set := cfg.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "4000"
	}
	where := fmt.Sprintf("postgres %s", describe(cfg))
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxPostgresConns)
	db.SetMaxIdleConns(maxPostgresConns / 2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s, err := New(ctx, db, PostgresDialect())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s.leaseDB = database{DB: stdlib.OpenDB(*cfg)}
	s.leaseDB.SetMaxOpenConns(1)
	return s, nil
}

// describe names the database of cfg for messages, without the password.
func describe(cfg *pgx.ConnConfig) string {
	host := cfg.Host
	if !strings.HasPrefix(host, "/") {
		host = fmt.Sprintf("%s:%d", host, cfg.Port)
	}
	return fmt.Sprintf("database %q on %s as %q", cfg.Database, host, cfg.User)
}

// PostgresDialect describes PostgreSQL as spoken by pgx's database/sql
// driver: $n placeholders, SQLSTATE codes for constraint failures, identity
// columns, and an advisory lock around each migration so that control-plane
// replicas starting together apply every file once.
func PostgresDialect() store.Dialect {
	return store.Dialect{
		Name:             "postgres",
		Rebind:           RebindDollar,
		SerialPrimaryKey: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		NowMicros:        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
		ForKeyShare:      " FOR KEY SHARE",
		ForUpdate:        " FOR UPDATE",
		InJSON:           "= ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(? AS jsonb))))",
		// Transaction-scoped: released at commit or rollback, so a replica
		// that dies mid-migration cannot leave it held.
		MigrationLock: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", migrationLockKey),
		IsUniqueViolation: func(err error) bool {
			return pgCode(err) == pgUniqueViolation
		},
		IsForeignKeyViolation: func(err error) bool {
			return pgCode(err) == pgForeignKeyViolation
		},
	}
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
