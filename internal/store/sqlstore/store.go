// Package sqlstore implements store.Store on database/sql.
//
// One implementation serves every SQL backend: queries are written once with
// ? placeholders in the SQL subset SQLite and PostgreSQL share, and a
// store.Dialect supplies the few differences (placeholder syntax, how
// constraint errors look, how migrations are serialized). Adding a backend
// means adding a driver and a Dialect, then calling New; OpenSQLite does that
// for SQLite, OpenPostgres for PostgreSQL (through pgx). Times are stored as UTC unix microseconds (0 for the zero time),
// so they come back truncated to the microsecond and in UTC.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// Store is a store.Store backed by a *sql.DB.
type Store struct {
	db database
	d  store.Dialect
	// statements counts the SQL statements run, transactions' included:
	// every one goes through q.
	statements atomic.Uint64
	// writer, when set (SQLite, which has one writer at a time), is held
	// by every write: writers queue here in order instead of polling the
	// file lock in SQLite's busy handler, where under a steady stream of
	// writes (thousands of nodes' health checks) one could lose every
	// retry for busy_timeout and fail with SQLITE_BUSY.
	writer chan struct{}
	// checkTurn is taken by whoever commits a group of health checks
	// (checks.go): the writer on SQLite, one of checkGroups on PostgreSQL.
	checkTurn chan struct{}
	// checks waiting for a group commit.
	checksMu sync.Mutex
	checks   []*nodeCheck
	// leaseDB, when set (PostgreSQL), is the leader lease's own
	// connection: renewing the lease must not wait for one of the pool's,
	// all of which a busy control plane's checks and requests may hold,
	// or the leader loses its lease for being busy.
	leaseDB database
}

var _ store.Store = (*Store)(nil)

// New migrates db with store.Migrate and returns a Store over it. The Store
// owns db from then on: Close closes it, also when New fails.
func New(ctx context.Context, db *sql.DB, d store.Dialect) (*Store, error) {
	if err := store.Migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: database{DB: db, detach: d.Name == "sqlite"}, d: d}
	if d.Name == "sqlite" {
		s.writer = make(chan struct{}, 1)
		s.checkTurn = s.writer
	} else {
		s.checkTurn = make(chan struct{}, checkGroups)
	}
	return s, nil
}

// lockWrite waits for the writer's turn (SQLite) or until ctx is done; the
// returned function ends the turn.
func (s *Store) lockWrite(ctx context.Context) (unlock func(), err error) {
	return take(ctx, s.writer)
}

// take waits for a place in turn (none to wait for when it is nil) or
// until ctx is done.
func take(ctx context.Context, turn chan struct{}) (unlock func(), err error) {
	if turn == nil {
		return func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err // a select would take a free turn half the time
	}
	select {
	case turn <- struct{}{}:
		return func() { <-turn }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// DB is the store's pool of database connections, for its statistics.
func (s *Store) DB() *sql.DB { return s.db.DB }

// Close closes the database.
func (s *Store) Close() error {
	if s.leaseDB.DB != nil {
		s.leaseDB.Close()
	}
	return s.db.Close()
}

// q rebinds query for the dialect and counts it.
func (s *Store) q(query string) string {
	s.statements.Add(1)
	return s.d.Q(query)
}

// Statements reports how many SQL statements the store has run: what an
// idle control plane costs its database.
func (s *Store) Statements() uint64 { return s.statements.Load() }

// exec runs a single statement outside a transaction, or inside one that
// checks the fence when ctx carries one (a leader's controller writes).
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if _, fenced := store.FenceFrom(ctx); fenced {
		var res sql.Result
		err := s.tx(ctx, func(tx *txn) error {
			var err error
			res, err = tx.exec(ctx, query, args...)
			return err
		})
		return res, err
	}
	unlock, err := s.lockWrite(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.db.ExecContext(ctx, s.q(query), args...)
}

// tx runs fn in a transaction and commits when it returns nil. Writes that
// check before they change go through here so the check and the change see
// the same state. When ctx carries a fence, the transaction first checks
// that the lease is still at the fence's epoch, and holds the lease row
// shared so that no takeover commits before it does.
func (s *Store) tx(ctx context.Context, fn func(tx *txn) error) error {
	unlock, err := s.lockWrite(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return s.txLocked(ctx, fn)
}

// txLocked is tx for a caller that holds the writer's turn.
func (s *Store) txLocked(ctx context.Context, fn func(tx *txn) error) error {
	return s.txOn(ctx, s.db, fn)
}

// txOn runs fn in a transaction on db, one of the store's.
func (s *Store) txOn(ctx context.Context, db database, fn func(tx *txn) error) error {
	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer sqlTx.Rollback() //nolint:errcheck // no-op after Commit
	t := &txn{Tx: sqlTx, s: s}
	if f, fenced := store.FenceFrom(ctx); fenced {
		if err := t.checkFence(ctx, f); err != nil {
			return err
		}
	}
	if err := fn(t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // a detached transaction (database) ends here
	}
	return sqlTx.Commit()
}

// database is one of the store's pools of connections. On SQLite its
// calls, and its transactions' statements, run with their context
// detached from its end (context.WithoutCancel) unless it has ended
// already: for a context that can end, the SQLite driver starts a
// goroutine per statement, and database/sql one per set of rows, to
// interrupt it then. Under load (thousands of nodes' checks, clients
// listing) that was thousands of goroutines a second, each scheduled
// twice, which API requests queued behind for a core. A statement on a
// local file does not wait on a network, and a lock wait is bounded by
// busy_timeout: a context that ends fails the next statement (and the
// transaction's commit) instead of interrupting the one running.
type database struct {
	*sql.DB
	detach bool
}

// ctx is the context a statement runs with.
func (d database) ctx(ctx context.Context) context.Context {
	if d.detach && ctx.Err() == nil {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

func (d database) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(d.ctx(ctx), query, args...)
}

func (d database) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(d.ctx(ctx), query, args...)
}

func (d database) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return d.DB.ExecContext(d.ctx(ctx), query, args...)
}

func (d database) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	return d.DB.BeginTx(d.ctx(ctx), opts)
}

// txn is a transaction whose helpers rebind queries.
type txn struct {
	*sql.Tx
	s *Store
	// mountWrites are the pool mount rows recorded checks rewrite, for
	// writeMounts.
	mountWrites []store.PoolMount
}

// QueryContext, QueryRowContext and ExecContext run a statement of the
// transaction with the context the store's database gives it.
func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(t.s.db.ctx(ctx), query, args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(t.s.db.ctx(ctx), query, args...)
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(t.s.db.ctx(ctx), query, args...)
}

func (t *txn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.ExecContext(ctx, t.s.q(query), args...)
}

func (t *txn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return t.QueryRowContext(ctx, t.s.q(query), args...)
}

// exists reports whether query returns a row.
func (t *txn) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var one int
	err := t.queryRow(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// isUnique and isForeignKey classify driver errors through the dialect.
func (s *Store) isUnique(err error) bool {
	return err != nil && s.d.IsUniqueViolation != nil && s.d.IsUniqueViolation(err)
}

func (s *Store) isForeignKey(err error) bool {
	return err != nil && s.d.IsForeignKeyViolation != nil && s.d.IsForeignKeyViolation(err)
}

// mustAffect turns "no row changed" into ErrNotFound for what.
func mustAffect(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// notFound maps sql.ErrNoRows to ErrNotFound for what; other errors pass.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return err
}

// micros encodes t; the zero time is 0 so "never" needs no NULL.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros decodes what micros encoded.
func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// Byte counts are BIGINT, which is signed on every backend; no real
// filesystem reaches 2^63 bytes, so clamping only guards against garbage.
func bytesToDB(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func bytesFromDB(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

func boolToDB(b bool) int {
	if b {
		return 1
	}
	return 0
}
