package store

import (
	"context"
	"time"
)

// TokenKind tells API tokens from join tokens and single sign-on logins.
type TokenKind string

const (
	TokenAPI  TokenKind = "api"
	TokenJoin TokenKind = "join"
	// TokenSSO stands for one single sign-on login: its role comes from the
	// identity provider, its secret is never handed out, and only the
	// dashboard session made with it can use it.
	TokenSSO TokenKind = "sso"
)

// Role is what an API token may do; each role includes the ones before it.
type Role string

const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// Token is an API or join token. Only a hash of its secret is stored.
type Token struct {
	ID         string
	Name       string
	Kind       TokenKind
	Role       Role   // API tokens
	SecretHash []byte // SHA-256 of the secret
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	RevokedAt  time.Time // zero: not revoked
	SingleUse  bool
	LastUsedAt time.Time
	UseCount   int
	// NodeName binds a join token to one node: it enrolls only an agent of
	// that name ("": any name).
	NodeName string
}

// Session is a dashboard login: a cookie that stands for a token.
type Session struct {
	// ID is the SHA-256 (hex) of the cookie value, never the value itself.
	ID        string
	TokenID   string
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// TokenStore keeps tokens and sessions.
type TokenStore interface {
	// CreateToken inserts t; ErrConflict when the id is taken.
	CreateToken(ctx context.Context, t Token) error
	GetToken(ctx context.Context, id string) (Token, error)
	// ListTokens returns every token, oldest first.
	ListTokens(ctx context.Context) ([]Token, error)
	// RevokeToken sets RevokedAt (once: revoking again keeps the first
	// time) and deletes the token's sessions.
	RevokeToken(ctx context.Context, id string, at time.Time) error
	// UseToken counts one use of the token, atomically: a single-use token
	// that was used already returns ErrConflict and is not counted again.
	UseToken(ctx context.Context, id string, at time.Time) (Token, error)

	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, id string) (Session, error)
	DeleteSession(ctx context.Context, id string) error
	// DeleteExpiredSessions removes sessions that expired before t.
	DeleteExpiredSessions(ctx context.Context, t time.Time) error
	// DeleteExpiredSSOTokens removes the single sign-on tokens that expired
	// before t, with their sessions, and returns how many it removed. Every
	// sign-in makes one, so without this they would pile up for ever. API
	// and join tokens stay: an admin made them, and `token ls` shows them
	// as expired until revoked.
	DeleteExpiredSSOTokens(ctx context.Context, t time.Time) (int, error)
}

// AuditEntry records one mutating API call.
type AuditEntry struct {
	ID         int64 // assigned by the store, increasing
	Time       time.Time
	Actor      string
	Role       Role
	Procedure  string
	Target     string
	Result     string // "ok" or the Connect code
	Message    string
	RemoteAddr string
}

// AuditStore keeps the audit log. Entries are never changed or removed.
type AuditStore interface {
	// AppendAudit stores e and returns its id.
	AppendAudit(ctx context.Context, e AuditEntry) (int64, error)
	// ListAudit returns up to limit entries with ids below beforeID (0: no
	// bound), newest first.
	ListAudit(ctx context.Context, beforeID int64, limit int) ([]AuditEntry, error)
	// ListAuditPage returns one page of the entries matching f, newest
	// first, and the token of the next page ("" after the last).
	ListAuditPage(ctx context.Context, f AuditFilter, p Page) ([]AuditEntry, string, error)
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	// Search matches entries whose actor, procedure, target, result,
	// message or remote address contains it; ASCII letters match either
	// case.
	Search string
	// Result: "ok", "error" (every result but ok), or one Connect code.
	Result string
	// BeforeID starts the first page below this id (0: at the newest); a
	// page token replaces it.
	BeforeID int64
}
