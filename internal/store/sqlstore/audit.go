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
	const cols = `SELECT id, time, actor, role, procedure, target, result, message, remote_addr FROM audit_log`
	query, args := cols+` ORDER BY id DESC LIMIT ?`, []any{limit}
	if beforeID > 0 {
		query, args = cols+` WHERE id < ? ORDER BY id DESC LIMIT ?`, []any{beforeID, limit}
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var (
			e    store.AuditEntry
			at   int64
			role string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &role, &e.Procedure, &e.Target, &e.Result, &e.Message, &e.RemoteAddr); err != nil {
			return nil, err
		}
		e.Time, e.Role = fromMicros(at), store.Role(role)
		out = append(out, e)
	}
	return out, rows.Err()
}
