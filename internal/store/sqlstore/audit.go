package sqlstore

import (
	"context"
	"fmt"

	"github.com/quarry-project/quarry/internal/store"
)

// Page sizes of ListAudit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// AppendAudit stores e and returns the id the database assigned it; e.ID is
// ignored. The id column is the dialect's serial key (store.Dialect
// SerialPrimaryKey), read back with RETURNING, which every backend has.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, s.q(`INSERT INTO audit_log
		(time, actor, role, procedure, target, result, message, remote_addr)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		micros(e.Time), e.Actor, string(e.Role), e.Procedure, e.Target, e.Result, e.Message, e.RemoteAddr).
		Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append audit entry: %w", err)
	}
	return id, nil
}

// ListAudit returns up to limit entries with ids below beforeID, newest
// first. beforeID <= 0 means no bound; limit <= 0 means 100, and more than
// 1000 is cut to 1000.
func (s *Store) ListAudit(ctx context.Context, beforeID int64, limit int) ([]store.AuditEntry, error) {
	switch {
	case limit <= 0:
		limit = defaultAuditLimit
	case limit > maxAuditLimit:
		limit = maxAuditLimit
	}
	query, args := selectAudit+` ORDER BY id DESC LIMIT ?`, []any{limit}
	if beforeID > 0 {
		query, args = selectAudit+` WHERE id < ? ORDER BY id DESC LIMIT ?`, []any{beforeID, limit}
	}
	return queryAll(ctx, s.db, s.q(query), args, scanAudit)
}

const selectAudit = `SELECT id, time, actor, role, procedure, target, result, message, remote_addr FROM audit_log`

func scanAudit(r scanner) (store.AuditEntry, error) {
	var (
		e    store.AuditEntry
		at   int64
		role string
	)
	err := r.Scan(&e.ID, &at, &e.Actor, &role, &e.Procedure, &e.Target, &e.Result, &e.Message, &e.RemoteAddr)
	e.Time, e.Role = fromMicros(at), store.Role(role)
	return e, err
}

// auditPages pages the log newest first by id, its primary key (and, under
// a result filter, the index of migration 0011).
var auditPages = keyset[store.AuditEntry]{
	list: "audit", cols: `(id)`, desc: true, ints: 1,
	args:   func(c store.Cursor) []any { return []any{c.Ints[0]} },
	cursor: func(e store.AuditEntry) store.Cursor { return store.Cursor{Ints: []int64{e.ID}} },
}

// ListAuditPage returns one page of the entries matching f, newest first.
// f.BeforeID bounds the first page only: a token says where later ones
// start, so it is not part of what the token is bound to.
func (s *Store) ListAuditPage(ctx context.Context, f store.AuditFilter, p store.Page) ([]store.AuditEntry, string, error) {
	var w where
	switch f.Result {
	case "":
	case "error":
		w.add(`result <> 'ok'`)
	default:
		w.add(`result = ?`, f.Result)
	}
	w.search(f.Search, `actor`, `procedure`, `target`, `result`, `message`, `remote_addr`)
	if f.BeforeID > 0 && p.Token == "" {
		w.add(`id < ?`, f.BeforeID)
	}
	bound := f
	bound.BeforeID = 0
	return page(ctx, s, auditPages, selectAudit, w, bound, p, scanAudit)
}
