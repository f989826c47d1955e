package sqlstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

const tokenColumns = `id, name, kind, role, secret_hash, created_at, expires_at, revoked_at, single_use, last_used_at, use_count, node_name`

func scanToken(r scanner) (store.Token, error) {
	var (
		t                                          store.Token
		kind, role, hash                           string
		created, expires, revoked, lastUsed, count int64
		singleUse                                  int
	)
	if err := r.Scan(&t.ID, &t.Name, &kind, &role, &hash, &created, &expires, &revoked,
		&singleUse, &lastUsed, &count, &t.NodeName); err != nil {
		return store.Token{}, err
	}
	t.Kind, t.Role = store.TokenKind(kind), store.Role(role)
	if hash != "" {
		b, err := hex.DecodeString(hash)
		if err != nil {
			return store.Token{}, fmt.Errorf("token %s: stored secret hash: %w", t.ID, err)
		}
		t.SecretHash = b
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = fromMicros(created), fromMicros(expires), fromMicros(revoked)
	t.SingleUse = singleUse != 0
	t.LastUsedAt = fromMicros(lastUsed)
	t.UseCount = int(count)
	return t, nil
}

// CreateToken inserts t. Its secret hash is stored as hex.
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	if t.ID == "" {
		return errors.New("create token: empty id")
	}
	_, err := s.exec(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, string(t.Kind), string(t.Role), hex.EncodeToString(t.SecretHash),
		micros(t.CreatedAt), micros(t.ExpiresAt), micros(t.RevokedAt), boolToDB(t.SingleUse),
		micros(t.LastUsedAt), int64(t.UseCount), t.NodeName)
	if s.isUnique(err) {
		return fmt.Errorf("token %s: %w", t.ID, store.ErrConflict)
	}
	return err
}

// GetToken returns the token with id.
func (s *Store) GetToken(ctx context.Context, id string) (store.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenColumns+` FROM tokens WHERE id = ?`), id))
	return t, notFound(err, "token "+id)
}

// ListTokens returns every token, oldest first; tokens created in the same
// microsecond are ordered by id.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	return queryAll(ctx, s.db, s.q(`SELECT `+tokenColumns+` FROM tokens ORDER BY created_at, id`), nil, scanToken)
}

// RevokeToken marks token id revoked at at, unless it already was, and
// deletes its sessions in the same transaction, so no session outlives the
// revocation.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("revoke token %s: zero time", id)
	}
	return s.tx(ctx, func(t *txn) error {
		// One statement keeps the first revocation time; a matched row
		// counts as affected on every backend even when it keeps its value.
		res, err := t.exec(ctx, `UPDATE tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END
			WHERE id = ?`, micros(at), id)
		if err != nil {
			return err
		}
		if err := mustAffect(res, "token "+id); err != nil {
			return err
		}
		_, err = t.exec(ctx, `DELETE FROM sessions WHERE token_id = ?`, id)
		return err
	})
}

// UseToken counts one use of token id at at and returns the token as
// counted. The condition sits in the UPDATE itself, so of concurrent uses of
// a single-use token exactly one changes the row; the others find nothing to
// change and get ErrConflict. It does not look at expiry or revocation:
// callers check those (auth.Lookup) before counting a use.
func (s *Store) UseToken(ctx context.Context, id string, at time.Time) (store.Token, error) {
	var tok store.Token
	err := s.tx(ctx, func(t *txn) error {
		var err error
		tok, err = t.useToken(ctx, id, at)
		return err
	})
	if err != nil {
		return store.Token{}, err
	}
	return tok, nil
}

// useToken counts one use of token id inside a transaction (UseToken).
func (t *txn) useToken(ctx context.Context, id string, at time.Time) (store.Token, error) {
	var tok store.Token
	err := func() error {
		res, err := t.exec(ctx, `UPDATE tokens SET use_count = use_count + 1, last_used_at = ?
			WHERE id = ? AND (single_use = 0 OR use_count = 0)`, micros(at), id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			ok, err := t.exists(ctx, `SELECT 1 FROM tokens WHERE id = ?`, id)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("token %s: %w", id, store.ErrNotFound)
			}
			return fmt.Errorf("single-use token %s was used already: %w", id, store.ErrConflict)
		}
		// Read inside the transaction, which holds the row since the
		// UPDATE, so this is the use just counted and not a later one.
		tok, err = scanToken(t.queryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
		return err
	}()
	if err != nil {
		return store.Token{}, err
	}
	return tok, nil
}

const sessionColumns = `id, token_id, csrf, created_at, expires_at`

// CreateSession inserts sess; ErrNotFound when its token does not exist,
// ErrConflict when the id is taken.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	if sess.ID == "" {
		return errors.New("create session: empty id")
	}
	_, err := s.exec(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES (?, ?, ?, ?, ?)`,
		sess.ID, sess.TokenID, sess.CSRF, micros(sess.CreatedAt), micros(sess.ExpiresAt))
	switch {
	case s.isForeignKey(err):
		return fmt.Errorf("create session: token %s: %w", sess.TokenID, store.ErrNotFound)
	case s.isUnique(err):
		return fmt.Errorf("session %s: %w", sess.ID, store.ErrConflict)
	}
	return err
}

// GetSession returns the session with id, expired or not.
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	var (
		sess             store.Session
		created, expires int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT `+sessionColumns+` FROM sessions WHERE id = ?`), id).
		Scan(&sess.ID, &sess.TokenID, &sess.CSRF, &created, &expires)
	if err != nil {
		return store.Session{}, notFound(err, "session "+id)
	}
	sess.CreatedAt, sess.ExpiresAt = fromMicros(created), fromMicros(expires)
	return sess, nil
}

// DeleteSession removes session id; removing a missing session is no error
// (logging out twice is not a failure).
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	_, err := s.exec(ctx, `DELETE FROM sessions WHERE id = ?`, id)
	return err
}

// DeleteExpiredSessions removes sessions whose expiry is before t. A session
// stored without an expiry (the zero time, 0) never expires, in keeping
// with what 0 means in every other time column.
func (s *Store) DeleteExpiredSessions(ctx context.Context, t time.Time) error {
	_, err := s.exec(ctx, `DELETE FROM sessions WHERE expires_at <> 0 AND expires_at < ?`, micros(t))
	return err
}

// DeleteExpiredSSOTokens removes tokens of kind sso whose expiry is before
// t, and their sessions, in one transaction. An SSO token always has an
// expiry (its session's); one stored without (0) is kept, like a session.
func (s *Store) DeleteExpiredSSOTokens(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *txn) error {
		const expired = `kind = ? AND expires_at <> 0 AND expires_at < ?`
		// The foreign key cascades too; deleting them first does not lean on it.
		if _, err := tx.exec(ctx, `DELETE FROM sessions WHERE token_id IN (SELECT id FROM tokens WHERE `+expired+`)`,
			string(store.TokenSSO), micros(t)); err != nil {
			return err
		}
		res, err := tx.exec(ctx, `DELETE FROM tokens WHERE `+expired, string(store.TokenSSO), micros(t))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}
