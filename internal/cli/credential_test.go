package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The dev data directory is per user, and the CLI finds the admin token a
// dev server wrote there: both use devDataDir.
func TestDevDataDirPerUser(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("QUARRY_TOKEN", "")
	want := filepath.Join(tmp, "quarry-dev-"+strconv.Itoa(os.Getuid()))
	if got := devDataDir(); got != want {
		t.Fatalf("devDataDir() = %s, want %s", got, want)
	}
	if err := os.MkdirAll(want, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(want, "admin.token"), []byte("qk_dev\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &globals{}
	c, err := g.credential("http://127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "qk_dev" || c.source != filepath.Join(want, "admin.token") {
		t.Errorf("credential = %q from %q, want qk_dev from the per-user dev directory", c.token, c.source)
	}
}
