package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// SessionCookie is the name of the dashboard's session cookie.
const SessionCookie = "quarry_session"

// CSRFHeader must carry a session's CSRF token on every request that a
// session cookie authenticates: a cross-site form can send the cookie but
// cannot set a header.
const CSRFHeader = "X-CSRF-Token"

// NewSession starts a session for the API token tokenID, ending at
// expires, and returns the record to store and the cookie value that
// stands for it. Only the value's hash is stored.
func NewSession(tokenID string, now, expires time.Time) (store.Session, string) {
	cookie := randomHex(32)
	return store.Session{
		ID:        SessionID(cookie),
		TokenID:   tokenID,
		CSRF:      randomHex(32),
		CreatedAt: now,
		ExpiresAt: expires,
	}, cookie
}

// SessionID is the stored id of a session cookie value.
func SessionID(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	return hex.EncodeToString(h[:])
}

// CSRFMatches reports whether header is the session's CSRF token.
func CSRFMatches(s store.Session, header string) bool {
	return s.CSRF != "" && subtle.ConstantTimeCompare([]byte(s.CSRF), []byte(header)) == 1
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
