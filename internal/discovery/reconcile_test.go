package discovery

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func TestReconcile(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	pool := store.Pool{ID: "p", Name: "isos"}
	existing := []store.Image{
		{ID: "same", Kind: store.KindISO, State: store.ImageReady, RelPath: "iso/same.iso", SizeBytes: 10, ModTime: old},
		{ID: "grown", Kind: store.KindISO, State: store.ImageReady, RelPath: "iso/grown.iso", SizeBytes: 10, ModTime: old},
		{ID: "back", Kind: store.KindISO, State: store.ImageMissing, RelPath: "iso/back.iso", SizeBytes: 10, ModTime: old, MissingSince: old},
		{ID: "gone", Kind: store.KindISO, State: store.ImageReady, RelPath: "iso/gone.iso", VolumeLabel: "kept"},
		{ID: "still-missing", Kind: store.KindISO, State: store.ImageMissing, RelPath: "iso/still.iso"},
		{ID: "downloading", Kind: store.KindISO, State: store.ImageDownloading, RelPath: "iso/dl.iso"},
		{ID: "cloud", Kind: store.KindCloudImage, State: store.ImageReady, RelPath: "images/c.qcow2"},
	}
	lib := Library{Images: existing, Busy: map[string]bool{}}
	files := []File{
		{RelPath: "iso/same.iso", Size: 10, ModTime: old.Add(999)}, // nanoseconds the store does not keep
		{RelPath: "iso/grown.iso", Size: 20, ModTime: now.Add(-time.Minute)},
		{RelPath: "iso/back.iso", Size: 10, ModTime: old},
		{RelPath: "iso/dl.iso", Size: 5, ModTime: old},
		{RelPath: "iso/sub/new.iso", Size: 7, ModTime: old, Label: "Ubuntu-Server 24.04.1 LTS amd64", Bootable: true},
		{RelPath: "iso/copying.iso", Size: 3, ModTime: now, Writing: true},
		{RelPath: "iso/fresh-nfs.iso", Size: 3, ModTime: now.Add(-time.Second)},
		{RelPath: "iso/closed.iso", Size: 3, ModTime: now, Settled: true},
		{RelPath: "iso/junk.iso", Size: 3, ModTime: old, Problem: "not an ISO 9660 image"},
	}
	ids := 0
	c, n, settleAt := Reconcile(pool, lib, files, now, 3*time.Second, func() string { ids++; return fmt.Sprint("new", ids) })

	if want := (Counts{Discovered: 3, Updated: 2, Missing: 2, Deferred: 2}); n != want {
		t.Errorf("counts %+v; want %+v", n, want)
	}
	if want := now.Add(2 * time.Second); !settleAt.Equal(want) {
		t.Errorf("settleAt %v; want %v (the NFS file settles first)", settleAt, want)
	}
	created := map[string]store.Image{}
	for _, im := range c.Create {
		created[im.RelPath] = im
	}
	u := created["iso/sub/new.iso"]
	if u.State != store.ImageReady || u.Name != "new.iso" || u.Kind != store.KindISO || u.Origin != store.OriginDiscovered ||
		u.OSDistro != "ubuntu" || u.OSVersion != "24.04" || u.OSArch != "amd64" || !u.Bootable || u.PoolID != "p" || u.ID == "" {
		t.Errorf("new image %+v", u)
	}
	if j := created["iso/junk.iso"]; j.State != store.ImageReady || j.StateReason == "" {
		t.Errorf("junk %+v: want READY with the label problem as reason", j)
	}
	if _, ok := created["iso/closed.iso"]; !ok {
		t.Errorf("a file closed after writing must be registered at once")
	}
	updated := map[string]store.ImageUpdate{}
	for _, up := range c.Update {
		updated[up.Image.ID] = up
	}
	if g := updated["grown"]; g.Image.SizeBytes != 20 || g.ExpectState != store.ImageReady {
		t.Errorf("grown %+v", g)
	}
	if b := updated["back"]; b.Image.State != store.ImageReady || !b.Image.MissingSince.IsZero() || b.ExpectState != store.ImageMissing {
		t.Errorf("back %+v", b)
	}
	if g := updated["gone"]; g.Image.State != store.ImageMissing || g.Image.VolumeLabel != "kept" || !g.Image.MissingSince.Equal(now) {
		t.Errorf("gone %+v", g)
	}
	if g := updated["cloud"]; g.Image.State != store.ImageMissing {
		t.Errorf("cloud image without its file: %+v; want MISSING", g)
	}
	for _, id := range []string{"same", "still-missing", "downloading"} {
		if _, ok := updated[id]; ok {
			t.Errorf("%s must be left alone", id)
		}
	}
}

// TestReconcileImages: images with a recorded digest (downloaded cloud
// images, disks, ISOs) are held to their file's size; what a job works on
// is left alone; files under images/ are never registered from the disk.
func TestReconcileImages(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	pool := store.Pool{ID: "p", Name: "local"}
	cloud := func(id, state string, size int64) store.Image {
		return store.Image{ID: id, Kind: store.KindCloudImage, State: store.ImageState(state), RelPath: "images/" + id + ".raw",
			SizeBytes: size, ModTime: old, SHA256: "ab" + id, Origin: store.OriginDownloaded, OSDistro: "debian"}
	}
	flagged := cloud("flagged", "ERROR", 10)
	flagged.StateReason = ChangedReason + ": flagged by an earlier scan"
	dlISO := cloud("dliso", "READY", 10)
	dlISO.Kind, dlISO.RelPath = store.KindISO, "iso/dliso.iso"
	lib := Library{Images: []store.Image{
		cloud("same", "READY", 10),
		cloud("vanished", "READY", 10),
		cloud("grown", "READY", 10),
		cloud("back", "MISSING", 10),
		cloud("back-grown", "MISSING", 10),
		cloud("errored", "ERROR", 10),
		flagged,
		cloud("pending", "PENDING", 0),
		cloud("verifying", "READY", 10),
		cloud("busy-gone", "READY", 10),
		dlISO,
	}, Busy: map[string]bool{"verifying": true, "busy-gone": true}}
	files := []File{
		{RelPath: "images/same.raw", Size: 10, ModTime: now}, // just written: no settling for a known digest
		{RelPath: "images/grown.raw", Size: 11, ModTime: now},
		{RelPath: "images/back.raw", Size: 10, ModTime: old},
		{RelPath: "images/back-grown.raw", Size: 9, ModTime: old},
		{RelPath: "images/errored.raw", Size: 10, ModTime: old},
		{RelPath: "images/flagged.raw", Size: 11, ModTime: old},
		{RelPath: "images/pending.raw", Size: 3, ModTime: now},
		{RelPath: "images/verifying.raw", Size: 12, ModTime: old},
		{RelPath: "images/stray.qcow2", Size: 5, ModTime: old},
		{RelPath: "iso/dliso.iso", Size: 10, ModTime: now, Writing: true},
	}
	c, n, settleAt := Reconcile(pool, lib, files, now, 3*time.Second, func() string { return "new" })
	if want := (Counts{Updated: 1, Missing: 1, Changed: 3}); n != want {
		t.Errorf("counts %+v; want %+v", n, want)
	}
	if len(c.Create) != 0 || !settleAt.IsZero() {
		t.Errorf("creates %+v, settleAt %v; want none", c.Create, settleAt)
	}
	updated := map[string]store.ImageUpdate{}
	for _, u := range c.Update {
		updated[u.Image.ID] = u
	}
	if u := updated["vanished"]; u.Image.State != store.ImageMissing || u.Image.SHA256 != "abvanished" || u.ExpectState != store.ImageReady {
		t.Errorf("vanished %+v; want MISSING, digest kept", u)
	}
	if u := updated["back"]; u.Image.State != store.ImageReady || !u.Image.MissingSince.IsZero() || u.Image.OSDistro != "debian" ||
		u.ExpectState != store.ImageMissing {
		t.Errorf("back %+v; want READY again with its metadata", u)
	}
	for _, id := range []string{"grown", "back-grown"} {
		u := updated[id]
		if u.Image.State != store.ImageError || !strings.HasPrefix(u.Image.StateReason, ChangedReason) ||
			!strings.Contains(u.Image.StateReason, "quarry image verify "+id) || u.Image.SizeBytes != 10 || u.Image.SHA256 != "ab"+id {
			t.Errorf("%s %+v; want ERROR %q, recorded size and digest kept", id, u, ChangedReason)
		}
	}
	for _, id := range []string{"same", "errored", "flagged", "pending", "verifying", "busy-gone", "dliso"} {
		if u, ok := updated[id]; ok {
			t.Errorf("%s must be left alone: %+v", id, u)
		}
	}
}

// TestReconcileUploadMovedByContent: an upload named like a disk whose
// bytes are an ISO lands in iso/ a moment before its job records the new
// path; a scan in between must not register that file a second time.
func TestReconcileUploadMovedByContent(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	lib := Library{Images: []store.Image{
		{ID: "up", Kind: store.KindDisk, State: store.ImageVerifying, RelPath: "images/install.img"},
	}, Busy: map[string]bool{"up": true}}
	files := []File{{RelPath: "iso/install.img", Size: 10, ModTime: now.Add(-time.Hour), Settled: true}}
	c, n, _ := Reconcile(store.Pool{ID: "p", Name: "isos"}, lib, files, now, 3*time.Second, func() string { return "new" })
	if len(c.Create) != 0 || len(c.Update) != 0 || n != (Counts{}) {
		t.Errorf("changes %+v, counts %+v; want none while the upload's job runs", c, n)
	}
}
