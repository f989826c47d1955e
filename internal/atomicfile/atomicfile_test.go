package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndAbort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	if err := Write(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Prepare(path, []byte("two"), 0o600)
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
	q, err := Prepare(path, []byte("three"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	q.Abort()
	entries, _ := os.ReadDir(dir)
	if b, _ := os.ReadFile(path); string(b) != "two" || len(entries) != 1 {
		t.Fatalf("after Abort: %q and %d entries; want the file alone, unchanged", b, len(entries))
	}
}
