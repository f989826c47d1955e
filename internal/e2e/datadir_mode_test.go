package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestDatabaseFilesPrivate: the database and the files SQLite keeps beside
// it are 0600 from the first start, and a data directory opened to every
// user, or database files made readable, are closed again at the next one.
func TestDatabaseFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m&0o007 != 0 {
			t.Errorf("%s: data directory mode %04o, want no access for others", when, m)
		}
		for _, name := range []string{"quarry.db", "quarry.db-wal", "quarry.db-shm"} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("%s: %v", when, err)
				continue
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: %s mode %04o, want 0600", when, name, m)
			}
		}
	}
	srv := quarrytest.StartServer(t, quarrytest.WithDataDir(dir))
	check("first start")
	srv.Stop()

	for _, name := range []string{".", "quarry.db", "quarry.db-wal", "quarry.db-shm"} {
		mode := os.FileMode(0o644)
		if name == "." {
			mode = 0o755
		}
		// -wal and -shm may be gone after a clean stop; what is there is opened.
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	quarrytest.StartServer(t, quarrytest.WithDataDir(dir))
	check("restart")
}
