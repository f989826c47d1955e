package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// leaseName is the one lease there is: the leader's.
const leaseName = "leader"

// checkFence refuses the transaction with store.ErrFenced when the lease's
// epoch is not f's, and tells f so.
func (t *txn) checkFence(ctx context.Context, f store.Fence) error {
	var epoch int64
	// A key share lock: a change of leader (TryLease takes the row FOR
	// UPDATE first) waits for this transaction, and this one for it, but
	// the leader's renewals, which only move the expiry, wait for neither.
	// With FOR SHARE, renewals queued behind a busy leader's stream of
	// fenced writes, timed out, and the leader lost its lease for being
	// busy.
	err := t.queryRow(ctx, `SELECT epoch FROM leader_lease WHERE name = ?`+t.s.d.ForKeyShare, leaseName).Scan(&epoch)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if epoch != f.Epoch {
		if f.Lost != nil {
			f.Lost()
		}
		return fmt.Errorf("write for epoch %d refused, the lease is at epoch %d: %w", f.Epoch, epoch, store.ErrFenced)
	}
	return nil
}

// TryLease renews, takes or reports the leader lease; the expiry goes by
// the database's clock.
func (s *Store) TryLease(ctx context.Context, req store.LeaseRequest) (store.Lease, error) {
	if req.Holder == "" || req.TTL <= 0 {
		return store.Lease{}, errors.New("lease: a holder and a positive TTL are required")
	}
	now, ttl := s.d.NowMicros, req.TTL.Microseconds()
	var l store.Lease
	err := s.leaseTx(ctx, func(tx *txn) error {
		var err error
		if req.Epoch > 0 && !req.Steal {
			var exp int64
			err = tx.queryRow(ctx, `UPDATE leader_lease SET expires_at = `+now+` + ?
				WHERE name = ? AND holder = ? AND epoch = ? RETURNING expires_at`,
				ttl, leaseName, req.Holder, req.Epoch).Scan(&exp)
			if err == nil {
				l = store.Lease{Held: true, Holder: req.Holder, Epoch: req.Epoch, ExpiresAt: fromMicros(exp)}
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		cond := ` AND expires_at < ` + now
		if req.Steal {
			cond = ""
		}
		// A change of epoch waits for the fenced transactions under way
		// (checkFence), and holds new ones until it commits. A lease that
		// cannot change hands is not locked: followers ask every second.
		if _, err := tx.exec(ctx, `SELECT 1 FROM leader_lease WHERE name = ?`+cond+s.d.ForUpdate, leaseName); err != nil {
			return err
		}
		var epoch, exp int64
		err = tx.queryRow(ctx, `UPDATE leader_lease SET holder = ?, epoch = epoch + 1, expires_at = `+now+` + ?
			WHERE name = ?`+cond+` RETURNING epoch, expires_at`, req.Holder, ttl, leaseName).Scan(&epoch, &exp)
		if err == nil {
			l = store.Lease{Held: true, Holder: req.Holder, Epoch: epoch, ExpiresAt: fromMicros(exp)}
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err = tx.queryRow(ctx, `INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES (?, ?, 1, `+now+` + ?)
			ON CONFLICT (name) DO NOTHING RETURNING epoch, expires_at`, leaseName, req.Holder, ttl).Scan(&epoch, &exp)
		if err == nil {
			l = store.Lease{Held: true, Holder: req.Holder, Epoch: epoch, ExpiresAt: fromMicros(exp)}
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var holder string
		if err := tx.queryRow(ctx, `SELECT holder, epoch, expires_at FROM leader_lease WHERE name = ?`, leaseName).
			Scan(&holder, &epoch, &exp); err != nil {
			return err
		}
		l = store.Lease{Holder: holder, Epoch: epoch, ExpiresAt: fromMicros(exp)}
		return nil
	})
	return l, err
}

// leaseTx runs fn in a transaction on the lease's own connection when the
// store has one (PostgreSQL), and as any write otherwise.
func (s *Store) leaseTx(ctx context.Context, fn func(tx *txn) error) error {
	if s.leaseDB.DB == nil {
		return s.tx(ctx, fn)
	}
	return s.txOn(ctx, s.leaseDB, fn)
}

// ReleaseLease lets the lease expire now when holder still holds it.
func (s *Store) ReleaseLease(ctx context.Context, holder string, epoch int64) error {
	db := cmp.Or(s.leaseDB, s.db)
	_, err := db.ExecContext(ctx, s.q(`UPDATE leader_lease SET expires_at = 0 WHERE name = ? AND holder = ? AND epoch = ?`),
		leaseName, holder, epoch)
	return err
}

// LeaderEpoch reads the lease's epoch.
func (s *Store) LeaderEpoch(ctx context.Context) (int64, error) {
	var epoch int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT epoch FROM leader_lease WHERE name = ?`), leaseName).Scan(&epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return epoch, err
}

func (s *Store) CreateLeaderRequest(ctx context.Context, r store.LeaderRequest) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO leader_requests (id, kind, request, created_at) VALUES (?, ?, ?, ?)`),
		r.ID, r.Kind, r.Request, micros(r.Created))
	if s.isUnique(err) {
		return fmt.Errorf("leader request %s: %w", r.ID, store.ErrConflict)
	}
	return err
}

func (s *Store) AnswerLeaderRequest(ctx context.Context, id, response string) error {
	return s.tx(ctx, func(tx *txn) error {
		var answered int
		if err := tx.queryRow(ctx, `SELECT answered FROM leader_requests WHERE id = ?`, id).Scan(&answered); err != nil {
			return notFound(err, "leader request "+id)
		}
		if answered != 0 {
			return fmt.Errorf("leader request %s: answered already: %w", id, store.ErrConflict)
		}
		_, err := tx.exec(ctx, `UPDATE leader_requests SET response = ?, answered = 1 WHERE id = ?`, response, id)
		return err
	})
}

func (s *Store) GetLeaderRequest(ctx context.Context, id string) (store.LeaderRequest, error) {
	var r store.LeaderRequest
	var answered int
	var created int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, kind, request, response, answered, created_at FROM leader_requests WHERE id = ?`), id).
		Scan(&r.ID, &r.Kind, &r.Request, &r.Response, &answered, &created)
	if err != nil {
		return r, notFound(err, "leader request "+id)
	}
	r.Answered, r.Created = answered != 0, fromMicros(created)
	return r, nil
}

func (s *Store) DeleteLeaderRequest(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM leader_requests WHERE id = ?`), id)
	return err
}

// GetSecret reads a secret.
func (s *Store) GetSecret(ctx context.Context, name string) ([]byte, error) {
	var v string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT value FROM secrets WHERE name = ?`), name).Scan(&v)
	if err != nil {
		return nil, notFound(err, "secret "+name)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return b, nil
}

// CreateSecret stores a secret once.
func (s *Store) CreateSecret(ctx context.Context, name string, value []byte, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)`),
		name, base64.StdEncoding.EncodeToString(value), micros(at))
	if s.isUnique(err) {
		return fmt.Errorf("secret %s: %w", name, store.ErrConflict)
	}
	return err
}
