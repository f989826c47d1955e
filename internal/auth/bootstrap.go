package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/quarry-project/quarry/internal/atomicfile"
	"github.com/quarry-project/quarry/internal/store"
)

// AdminTokenPath is where the control plane with data directory dataDir
// writes its first admin token.
func AdminTokenPath(dataDir string) string { return filepath.Join(dataDir, "admin.token") }

// EnsureAdmin makes sure someone can use a new control plane: when the store
// holds no usable admin token, it creates one named "admin" and writes its
// secret to path, readable by the owner only. It reports whether it did.
// With an admin token in the store it leaves path alone, so a restart never
// replaces a token someone already uses.
func EnsureAdmin(ctx context.Context, st store.TokenStore, path string, now time.Time) (bool, error) {
	tokens, err := st.ListTokens(ctx)
	if err != nil {
		return false, err
	}
	for _, t := range tokens {
		if t.Kind == store.TokenAPI && t.Role == store.RoleAdmin && Usable(t, now) == nil {
			return false, nil
		}
	}
	t, secret := New(store.TokenAPI)
	t.Name, t.Role, t.CreatedAt = "admin", store.RoleAdmin, now

	// The file is complete on disk before the token exists, and in place
	// before this returns: a crash leaves no admin token nobody knows.
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return false, fmt.Errorf("writing the admin token: %w", err)
	}
	defer root.Close()
	pending, err := atomicfile.Prepare(root, filepath.Base(path), []byte(secret+"\n"), 0o600)
	if err != nil {
		return false, fmt.Errorf("writing the admin token: %w", err)
	}
	if err := st.CreateToken(ctx, t); err != nil {
		pending.Abort()
		return false, fmt.Errorf("storing the admin token: %w", err)
	}
	if err := pending.Commit(); err != nil {
		err = fmt.Errorf("writing the admin token to %s: %w", path, err)
		if rerr := st.RevokeToken(context.WithoutCancel(ctx), t.ID, now); rerr != nil {
			err = errors.Join(err, fmt.Errorf("revoking the unwritten admin token %s: %w", t.ID, rerr))
		}
		return false, err
	}
	return true, nil
}
