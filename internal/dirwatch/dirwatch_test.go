//go:build linux

package dirwatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/poolfs"
)

// next returns the next event other than Writing.
func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	for {
		select {
		case e := <-ch:
			if e.Op != Writing {
				return e
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5 s")
		}
	}
}

func expectNone(t *testing.T, ch <-chan Event) {
	t.Helper()
	// Called right after a sentinel's events arrived: inotify queues events
	// in order, so anything about earlier writes would have come first.
	for {
		select {
		case e := <-ch:
			if e.Op != Writing {
				t.Fatalf("unexpected event %+v", e)
			}
		default:
			return
		}
	}
}

func TestWatch(t *testing.T) {
	root := t.TempDir()
	w, err := New(root, poolfs.IsISOName)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan Event, 16)
	done := make(chan error, 1)
	go func() { done <- w.Run(t.Context(), ch) }()
	p := func(rel string) string { return filepath.Join(root, rel) }

	// A slow writer: "writing" until the file is closed, then "settled".
	f, err := os.Create(p("big.iso"))
	if err != nil {
		t.Fatal(err)
	}
	if e := <-ch; e != (Event{Writing, "big.iso"}) {
		t.Fatalf("got %+v; want big.iso writing", e)
	}
	for range 5 {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			t.Fatal(err)
		}
		// Flush the event queue deterministically: a sentinel file's
		// close event must arrive, and nothing about big.iso before it.
		sentinel(t, root, ch)
	}
	f.Close()
	if e := next(t, ch); e != (Event{Settled, "big.iso"}) {
		t.Fatalf("got %+v; want big.iso settled", e)
	}

	// Rename into place, nested directories, removal.
	if err := os.WriteFile(p(".tmp-upload"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p(".tmp-upload"), p("moved.iso")); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Settled, "moved.iso"}) {
		t.Fatalf("got %+v; want moved.iso settled", e)
	}
	if err := os.MkdirAll(p("a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	sentinel(t, root, ch) // the new directories are watched now
	if err := os.WriteFile(p("a/b/deep.ISO"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Settled, "a/b/deep.ISO"}) {
		t.Fatalf("got %+v; want a/b/deep.ISO settled", e)
	}
	if err := os.Remove(p("big.iso")); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Removed, "big.iso"}) {
		t.Fatalf("got %+v; want big.iso removed", e)
	}

	// A directory moved in whole brings its files.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "x.iso"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(outside, p("incoming")); err != nil {
		t.Skipf("rename across temp dirs: %v", err)
	}
	if e := next(t, ch); e != (Event{Settled, "incoming/x.iso"}) {
		t.Fatalf("got %+v; want incoming/x.iso settled", e)
	}

	w.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
}

// sentinel writes a matching file in a hidden-free scratch name and waits
// for its event, proving every earlier event was already delivered.
func sentinel(t *testing.T, root string, ch <-chan Event) {
	t.Helper()
	name := filepath.Join(root, "sentinel.iso")
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Settled, "sentinel.iso"}) {
		t.Fatalf("got %+v before the sentinel", e)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Removed, "sentinel.iso"}) {
		t.Fatalf("got %+v; want the sentinel removed", e)
	}
	expectNone(t, ch)
}

// TestWatchLinks: a hard link (ln) or a symbolic link (ln -s) is complete
// when it appears — nobody opens it to write, so no close ever follows —
// and is reported settled at once, not left "writing" forever.
func TestWatchLinks(t *testing.T) {
	pool := t.TempDir()
	root := filepath.Join(pool, "iso")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(pool, "elsewhere.iso")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := New(root, poolfs.IsISOName)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ch := make(chan Event, 16)
	go w.Run(t.Context(), ch)

	if err := os.Link(src, filepath.Join(root, "hard.iso")); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Settled, "hard.iso"}) {
		t.Fatalf("got %+v; want hard.iso settled", e)
	}
	if err := os.Symlink("../elsewhere.iso", filepath.Join(root, "soft.iso")); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e != (Event{Settled, "soft.iso"}) {
		t.Fatalf("got %+v; want soft.iso settled", e)
	}
	// A new file nobody closed yet is still only being written.
	f, err := os.Create(filepath.Join(root, "open.iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if e := <-ch; e != (Event{Writing, "open.iso"}) {
		t.Fatalf("got %+v; want open.iso writing", e)
	}
}
