package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync"
	"sync/atomic"
)

// The SQLite driver parses every statement it runs anew: under a steady
// load (thousands of nodes' health checks, clients listing images) the
// parser took a seventh of the control plane's CPU. Each connection of
// the store's SQLite driver keeps the statements it prepared, by query
// text, and runs them again.

const stmtCacheDriver = "quarry-sqlite-stmtcache"

var registerStmtCache sync.Once

// cachingSQLiteDriver registers, once, the SQLite driver whose connections
// cache their statements, and returns its name for sql.Open.
func cachingSQLiteDriver() string {
	registerStmtCache.Do(func() {
		db, err := sql.Open("sqlite", "") // connects to nothing
		if err != nil {
			panic(err) // the driver is linked in: cannot happen
		}
		sql.Register(stmtCacheDriver, cachingDriver{db.Driver()})
		db.Close()
	})
	return stmtCacheDriver
}

// maxCachedStmts bounds the statements one connection keeps: queries built
// with a list of n placeholders are as many texts as lists' lengths.
const maxCachedStmts = 256

// maxCachedParams is the most parameters a statement kept may have: the
// batches of a group of health checks (updateFromValues, rowsBatch rows of
// 7 columns) run many times a second and are kept. A statement of more is
// built for one length of a list, seldom run twice, and holds a large
// program (lists of ids are one JSON parameter for that reason: with a
// placeholder per id, such statements kept by every connection held about
// a hundred MiB outside Go's heap at 5,000 nodes).
const maxCachedParams = 256

// stmtsPrepared counts the statements the connections prepared and kept.
var stmtsPrepared atomic.Int64

type cachingDriver struct{ driver.Driver }

// sqliteConn is what database/sql uses of a SQLite connection.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

func (d cachingDriver) Open(name string) (driver.Conn, error) {
	c, err := d.Driver.Open(name)
	if err != nil {
		return nil, err
	}
	sc, ok := c.(sqliteConn)
	if !ok {
		return c, nil // a driver that changed: run it as it is
	}
	return &cachingConn{sqliteConn: sc, stmts: map[string]*cachedStmt{}}, nil
}

// cachingConn runs statements through prepared statements it keeps. A
// statement whose rows are still open (a query run again while its
// earlier rows are read) runs uncached.
type cachingConn struct {
	sqliteConn
	mu    sync.Mutex
	stmts map[string]*cachedStmt
}

type cachedStmt struct {
	st interface {
		driver.Stmt
		driver.StmtExecContext
		driver.StmtQueryContext
	}
	reading bool // its rows are open
}

// take returns the cached statement of query, preparing it, or nil when
// query must run uncached.
func (c *cachingConn) take(ctx context.Context, query string) (*cachedStmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs, ok := c.stmts[query]; ok {
		if cs.reading {
			return nil, nil
		}
		return cs, nil
	}
	if len(c.stmts) >= maxCachedStmts || strings.Count(query, "?") > maxCachedParams {
		return nil, nil
	}
	st, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	stmtsPrepared.Add(1)
	s, ok := st.(interface {
		driver.Stmt
		driver.StmtExecContext
		driver.StmtQueryContext
	})
	if !ok {
		st.Close()
		return nil, nil
	}
	cs := &cachedStmt{st: s}
	c.stmts[query] = cs
	return cs, nil
}

// drop forgets a statement that failed: the next run prepares it anew.
func (c *cachingConn) drop(query string, cs *cachedStmt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stmts[query] == cs {
		delete(c.stmts, query)
		cs.st.Close()
	}
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	res, err := cs.st.ExecContext(ctx, args)
	if err != nil {
		c.drop(query, cs)
	}
	return res, err
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	c.mu.Lock()
	cs.reading = true
	c.mu.Unlock()
	rows, err := cs.st.QueryContext(ctx, args)
	if err != nil {
		c.mu.Lock()
		cs.reading = false
		c.mu.Unlock()
		c.drop(query, cs)
		return nil, err
	}
	return &cachedRows{Rows: rows, c: c, cs: cs}, nil
}

func (c *cachingConn) Close() error {
	c.mu.Lock()
	for q, cs := range c.stmts {
		cs.st.Close()
		delete(c.stmts, q)
	}
	c.mu.Unlock()
	return c.sqliteConn.Close()
}

// cachedRows gives its statement back when closed.
type cachedRows struct {
	driver.Rows
	c  *cachingConn
	cs *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.c.mu.Lock()
	r.cs.reading = false
	r.c.mu.Unlock()
	return err
}
