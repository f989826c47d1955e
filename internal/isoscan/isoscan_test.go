package isoscan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/quarry-project/quarry/internal/isofs/isotest"
)

func TestScan(t *testing.T) {
	pool := t.TempDir()
	outside := t.TempDir()
	write := func(rel string, im isotest.Image) {
		t.Helper()
		p := filepath.Join(pool, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := im.WriteFile(p); err != nil {
			t.Fatal(err)
		}
	}
	write("iso/ubuntu.iso", isotest.Image{Label: "Ubuntu-Server 24.04.1 LTS amd64", Bootable: true, Size: 64 << 10})
	write("iso/deep/er/Debian.ISO", isotest.Image{Label: "Debian 12.5.0 amd64 n", Size: 48 << 10})
	write("iso/.partial.iso", isotest.Image{Label: "hidden"})
	write("iso/.rsync-tmp/x.iso", isotest.Image{Label: "hidden dir"})
	write("images/disk.iso", isotest.Image{Label: "not under iso/"})
	if err := os.WriteFile(filepath.Join(pool, "iso/readme.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pool, "iso/garbage.iso"), []byte("not an iso"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (isotest.Image{Label: "escaped"}).WriteFile(filepath.Join(outside, "secret.iso")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.iso"), filepath.Join(pool, "iso/escape.iso")); err != nil {
		t.Fatal(err)
	}

	s := New()
	var progressed int
	files, err := s.Scan(t.Context(), pool, func(n int) { progressed = n })
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]File{}
	for _, f := range files {
		got[f.RelPath] = f
	}
	if len(got) != 3 || progressed != 3 {
		t.Fatalf("scan found %d files (progress %d): %+v; want ubuntu, Debian and garbage only", len(got), progressed, files)
	}
	if u := got["iso/ubuntu.iso"]; u.Label != "Ubuntu-Server 24.04.1 LTS amd64" || !u.Bootable || u.Size != 64<<10 || u.ModTime.IsZero() {
		t.Errorf("ubuntu: %+v", u)
	}
	if d := got["iso/deep/er/Debian.ISO"]; d.Label != "Debian 12.5.0 amd64 n" || d.Bootable {
		t.Errorf("debian: %+v", d)
	}
	if g := got["iso/garbage.iso"]; g.Problem == "" || g.Label != "" {
		t.Errorf("garbage: %+v; want a problem and no label", g)
	}
	if len(s.cache) != 2 {
		t.Errorf("cache holds %d labels; want 2", len(s.cache))
	}

	// A changed file is read again; a vanished one leaves the cache.
	write("iso/ubuntu.iso", isotest.Image{Label: "Ubuntu 22.04", Size: 80 << 10})
	if err := os.Remove(filepath.Join(pool, "iso/deep/er/Debian.ISO")); err != nil {
		t.Fatal(err)
	}
	files, err = s.Scan(t.Context(), pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || len(s.cache) != 1 {
		t.Fatalf("after change: %d files, cache %d", len(files), len(s.cache))
	}
	for _, f := range files {
		if f.RelPath == "iso/ubuntu.iso" && f.Label != "Ubuntu 22.04" {
			t.Errorf("changed file label %q", f.Label)
		}
	}
}

func TestScanNoIsoDir(t *testing.T) {
	files, err := New().Scan(t.Context(), t.TempDir(), nil)
	if err != nil || len(files) != 0 {
		t.Fatalf("Scan = %v, %v; want nothing", files, err)
	}
}
