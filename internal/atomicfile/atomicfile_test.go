package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func openRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteAndAbort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	if err := Write(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := openRoot(t, dir)
	p, err := Prepare(root, "key.pem", []byte("two"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" {
		t.Fatalf("before Commit the file reads %q; want the old content", b)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if b, _ := os.ReadFile(path); string(b) != "two" || err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after Commit: %q, %v, %v", b, fi.Mode(), err)
	}
	q, err := Prepare(root, "key.pem", []byte("three"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	q.Abort()
	if b, _ := os.ReadFile(path); string(b) != "two" || !slices.Equal(names(t, dir), []string{"key.pem"}) {
		t.Fatalf("after Abort: %q and %v; want the file alone, unchanged", b, names(t, dir))
	}
}

// TestFailureLeavesNoTemp: whichever step fails, the old file stays and no
// temporary file is left behind.
func TestFailureLeavesNoTemp(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, dir string) // makes the write fail
		write func(root *os.Root) error
	}{
		{"rename onto a directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "sub", "f"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, func(root *os.Root) error { return WriteFile(root, "sub/f", []byte("new"), 0o644) }},
		{"create over an existing file", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, func(root *os.Root) error {
			err := CreateFile(root, "sub/f", []byte("new"), 0o644)
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("CreateFile over a file: %v; want fs.ErrExist", err)
			}
			return err
		}},
		{"missing directory", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "sub")); err != nil {
				t.Fatal(err)
			}
		}, func(root *os.Root) error { return WriteFile(root, "sub/f", []byte("new"), 0o644) }},
		{"name escapes the root", func(t *testing.T, dir string) {},
			func(root *os.Root) error { return WriteFile(root, "../f", []byte("new"), 0o644) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "root")
			if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, dir)
			before := names(t, dir)
			var sub []string
			if _, err := os.Stat(filepath.Join(dir, "sub")); err == nil {
				sub = names(t, filepath.Join(dir, "sub"))
			}
			if err := tt.write(openRoot(t, dir)); err == nil {
				t.Fatal("the write succeeded; want an error")
			}
			if got := names(t, dir); !slices.Equal(got, before) {
				t.Errorf("the root holds %v after the failure; want %v", got, before)
			}
			if sub != nil {
				if got := names(t, filepath.Join(dir, "sub")); !slices.Equal(got, sub) {
					t.Errorf("sub/ holds %v after the failure; want %v", got, sub)
				}
			}
			if got := names(t, parent); !slices.Equal(got, []string{"root"}) {
				t.Errorf("the parent holds %v; want the root alone", got)
			}
		})
	}
}

func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	root := openRoot(t, dir)
	if err := CreateFile(root, "m.json", []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CreateFile(root, "m.json", []byte("second"), 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateFile: %v; want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "m.json")); string(b) != "first" || !slices.Equal(names(t, dir), []string{"m.json"}) {
		t.Fatalf("after two creates: %q in %v; want the first alone", b, names(t, dir))
	}
}

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..", filepath.Join(dir, "up")); err != nil {
		t.Fatal(err)
	}
	root := openRoot(t, dir)
	for _, tt := range []struct {
		dir string
		ok  bool
	}{
		{".", true},
		{"d", true},
		{"missing", false},
		{"..", false},
		{"up", false}, // a symlink out of the root
	} {
		t.Run(tt.dir, func(t *testing.T) {
			if err := SyncDir(root, tt.dir); (err == nil) != tt.ok {
				t.Fatalf("SyncDir(%q) = %v; want success %v", tt.dir, err, tt.ok)
			}
		})
	}
}

// TestDirSyncError: a filesystem that cannot fsync a directory (EINVAL)
// is not a failure; every other error is.
func TestDirSyncError(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"success", nil, true},
		{"EINVAL", &os.PathError{Op: "sync", Path: "d", Err: syscall.EINVAL}, true},
		{"EIO", &os.PathError{Op: "sync", Path: "d", Err: syscall.EIO}, false},
		{"EROFS", &os.PathError{Op: "sync", Path: "d", Err: syscall.EROFS}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := dirSyncError(tt.err); (err == nil) != tt.ok {
				t.Fatalf("dirSyncError(%v) = %v; want success %v", tt.err, err, tt.ok)
			}
		})
	}
}
