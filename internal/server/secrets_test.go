package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// TestSharedCA: the first replica seals the CA of its data directory (an
// installation moved from SQLite keeps its agents) into the store with a
// key file it creates; another replica with a copy of the key opens the
// same CA; without the key, or with another, it is refused and told what
// to do.
func TestSharedCA(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "shared.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)

	first := t.TempDir()
	old, _, err := pki.LoadOrCreateCA(filepath.Join(first, "ca"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := openSharedCA(ctx, Config{DataDir: first, Logger: log}, st)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Hash() != old.Hash() {
		t.Fatalf("the shared CA %s is not the data directory's %s", ca.Hash(), old.Hash())
	}
	key := filepath.Join(first, "secret.key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret key: %v, %v; want a 0600 file", fi, err)
	}

	second := t.TempDir()
	again, err := openSharedCA(ctx, Config{DataDir: second, SecretKeyFile: key, Logger: log}, st)
	if err != nil || again.Hash() != ca.Hash() {
		t.Fatalf("the second replica's CA: %v, %v; want %s", again, err, ca.Hash())
	}
	if _, err := os.Stat(filepath.Join(second, "ca")); err == nil {
		t.Errorf("the second replica made a CA directory")
	}

	_, err = openSharedCA(ctx, Config{DataDir: t.TempDir(), Logger: log}, st)
	if err == nil || !strings.Contains(err.Error(), "copy that replica's key file") {
		t.Errorf("without the key: %v", err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	if err := os.WriteFile(wrong, []byte(strings.Repeat("0f", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openSharedCA(ctx, Config{DataDir: t.TempDir(), SecretKeyFile: wrong, Logger: log}, st)
	if err == nil || !strings.Contains(err.Error(), "does not open the CA") {
		t.Errorf("with another key: %v", err)
	}
	if err := os.WriteFile(wrong, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openSharedCA(ctx, Config{DataDir: t.TempDir(), SecretKeyFile: wrong, Logger: log}, st)
	if err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("with a file that holds no key: %v", err)
	}
}
