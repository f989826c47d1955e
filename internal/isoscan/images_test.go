package isoscan

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestScanImages(t *testing.T) {
	pool := t.TempDir()
	outside := t.TempDir()
	write := func(rel string, size int) {
		t.Helper()
		p := filepath.Join(pool, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("images/disk2.raw", 3000)
	write("images/sub/noble.qcow2", 10)
	if err := os.WriteFile(filepath.Join(pool, "images/sub/noble.qcow2"), []byte("QFI\xfb\x00\x00\x00\x03"), 0o644); err != nil {
		t.Fatal(err)
	}
	write("images/.tmp-copy", 1)
	write("iso/a.iso", 1)
	write(".quarry/partial/job-1", 1)
	if err := os.WriteFile(filepath.Join(outside, "secret.raw"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.raw"), filepath.Join(pool, "images/escape.raw")); err != nil {
		t.Fatal(err)
	}
	files, err := New().ScanImages(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.RelPath)
		if f.RelPath == "images/disk2.raw" && (f.Size != 3000 || f.Format != "raw") {
			t.Errorf("disk2.raw: size %d, format %q; want 3000, raw", f.Size, f.Format)
		}
		if f.RelPath == "images/sub/noble.qcow2" && f.Format != "qcow2" {
			t.Errorf("noble.qcow2: format %q, want qcow2 (from its header)", f.Format)
		}
	}
	if want := []string{"images/disk2.raw", "images/sub/noble.qcow2"}; !slices.Equal(got, want) {
		t.Errorf("ScanImages = %v, want %v", got, want)
	}
	// A rewritten file is sniffed again, not taken from the cache.
	sc := New()
	format := func() string {
		files, err := sc.ScanImages(t.Context(), pool)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.RelPath == "images/sub/noble.qcow2" {
				return f.Format
			}
		}
		return "(not listed)"
	}
	if f := format(); f != "qcow2" {
		t.Errorf("first listing: %q", f)
	}
	write("images/sub/noble.qcow2", 20)
	if f := format(); f != "raw" {
		t.Errorf("after the rewrite: %q, want raw", f)
	}
	if files, err := New().ScanImages(t.Context(), t.TempDir()); err != nil || len(files) != 0 {
		t.Errorf("a pool without images/: %v, %v", files, err)
	}
}
