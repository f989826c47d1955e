package ingest

import (
	"errors"
	"strings"
	"testing"

	"github.com/quarry-project/quarry/internal/origintest"
	"golang.org/x/sys/unix"
)

// tinyPool mounts a 4 MiB tmpfs as a pool: a real full disk, not a fake.
func tinyPool(t *testing.T) *pool {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount a 4 MiB tmpfs to fill (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting the test tmpfs %s: %v", dir, err)
		}
	})
	return newPool(t, dir)
}

func TestNoSpace(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)

	t.Run("known size", func(t *testing.T) {
		f := o.Add("/known.img", origintest.Random(8*mib, 31))
		p := tinyPool(t)
		_, err := Download(t.Context(), request(p, f))
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, ErrTerminal) {
			t.Fatalf("error %v; want ErrNoSpace", err)
		}
		want := "pool local on node n1 has 4.0 MiB free; the image needs 8.0 MiB; free space or choose another pool"
		if err.Error() != want {
			t.Fatalf("message %q\nwant      %q", err, want)
		}
		if f.Requests() != 1 || f.BytesServed() != 0 {
			t.Fatalf("%d requests, %d bytes; want only the HEAD", f.Requests(), f.BytesServed())
		}
		p.checkNoPartial(t)
	})

	t.Run("unknown size", func(t *testing.T) {
		f := o.Add("/unknown.img", origintest.Random(8*mib, 32))
		f.HideLength(true)
		p := tinyPool(t)
		_, err := Download(t.Context(), request(p, f))
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "pool local on node n1 ran out of space after ") {
			t.Fatalf("error %v; want ErrNoSpace while writing", err)
		}
		p.checkNoPartial(t)
	})
}

// TestUploadNoSpace: an upload larger than the pool's free space is
// refused when it is opened, before any byte, and leaves nothing behind.
func TestUploadNoSpace(t *testing.T) {
	t.Parallel()
	p := tinyPool(t)
	_, err := OpenUpload(uploadRequest(p, "job-full", 8*mib))
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "has 4.0 MiB free; the image needs 8.0 MiB") {
		t.Fatalf("error %v; want ErrNoSpace", err)
	}
	p.checkNoPartial(t)
}
