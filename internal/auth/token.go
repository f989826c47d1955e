// Package auth holds the control plane's credentials logic: token secrets
// (generated, parsed, hashed, checked), roles and which RPC needs which
// (policy.go, the one table), dashboard session secrets, the limit on
// failed authentications, and the first admin token. Secrets are never
// stored; only their SHA-256 is.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// Token strings look like "qk_<id>_<secret>" (API) or "qj_<id>_<secret>"
// (join): the id finds the record, the secret proves possession.
const (
	apiPrefix  = "qk"
	joinPrefix = "qj"
	idBytes    = 6
	secretLen  = 32 // bytes of randomness
)

// ErrInvalid classes every reason a presented token is refused. Callers
// show its message; it never says whether the id exists.
var ErrInvalid = errors.New("invalid token")

// New makes a token of kind and returns the record to store (SecretHash
// and ID set) and the string to hand out once.
func New(kind store.TokenKind) (store.Token, string) {
	id := make([]byte, idBytes)
	rand.Read(id)
	secret := make([]byte, secretLen)
	rand.Read(secret)
	t := store.Token{ID: hex.EncodeToString(id), Kind: kind}
	s := hex.EncodeToString(secret)
	t.SecretHash = hash(s)
	return t, prefix(kind) + "_" + t.ID + "_" + s
}

func prefix(kind store.TokenKind) string {
	if kind == store.TokenJoin {
		return joinPrefix
	}
	return apiPrefix
}

func hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Parse splits a token string into its kind, id and secret.
func Parse(s string) (kind store.TokenKind, id, secret string, err error) {
	parts := strings.Split(strings.TrimSpace(s), "_")
	if len(parts) != 3 || len(parts[1]) != 2*idBytes || len(parts[2]) != 2*secretLen || !isHex(parts[1]) || !isHex(parts[2]) {
		return "", "", "", fmt.Errorf("%w: not a Quarry token", ErrInvalid)
	}
	switch parts[0] {
	case apiPrefix:
		kind = store.TokenAPI
	case joinPrefix:
		kind = store.TokenJoin
	default:
		return "", "", "", fmt.Errorf("%w: not a Quarry token", ErrInvalid)
	}
	return kind, parts[1], parts[2], nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// Lookup finds the token s stands for and checks its secret, kind, expiry
// and revocation. It does not count a use (see store.UseToken).
func Lookup(ctx context.Context, st store.TokenStore, s string, want store.TokenKind, now time.Time) (store.Token, error) {
	kind, id, secret, err := Parse(s)
	if err != nil {
		return store.Token{}, err
	}
	if kind != want {
		return store.Token{}, fmt.Errorf("%w: a %s token cannot be used here", ErrInvalid, kind)
	}
	t, err := st.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Token{}, fmt.Errorf("%w: unknown or wrong token", ErrInvalid)
	}
	if err != nil {
		return store.Token{}, err
	}
	if subtle.ConstantTimeCompare(t.SecretHash, hash(secret)) != 1 || t.Kind != want {
		return store.Token{}, fmt.Errorf("%w: unknown or wrong token", ErrInvalid)
	}
	if err := Usable(t, now); err != nil {
		return store.Token{}, err
	}
	return t, nil
}

// Usable checks what can end a genuine token's life: revocation, expiry,
// and the one use of a single-use token. Sessions, which stand for a token
// without its secret, are checked with it on every call.
func Usable(t store.Token, now time.Time) error {
	switch {
	case !t.RevokedAt.IsZero():
		return fmt.Errorf("%w: token %s was revoked at %s", ErrInvalid, t.ID, t.RevokedAt.UTC().Format(time.RFC3339))
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return fmt.Errorf("%w: token %s expired at %s", ErrInvalid, t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
	case t.SingleUse && t.UseCount > 0:
		return fmt.Errorf("%w: token %s was single-use and has been used", ErrInvalid, t.ID)
	}
	return nil
}
