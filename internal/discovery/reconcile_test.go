package discovery

import (
	"fmt"
	"path"
	"slices"
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
	// A download records when it ended; the scan learns the file's own
	// time, quietly, so that a later rename can be recognized.
	if u := updated["same"]; u.Image.State != store.ImageReady || !u.Image.ModTime.Equal(now) || u.ExpectState != store.ImageReady {
		t.Errorf("same %+v; want READY with the file's modification time", u)
	}
	for _, id := range []string{"errored", "flagged", "pending", "verifying", "busy-gone", "dliso"} {
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

// TestReconcileMoves: a file renamed or moved inside its directory tree
// keeps its image (id, metadata, history); anything short of the same
// size, time and label or header, or an ambiguous pairing, stays MISSING
// and new.
func TestReconcileMoves(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	pool := store.Pool{ID: "p", Name: "isos"}
	iso := func(id, rel string, size int64, label string) store.Image {
		return store.Image{ID: id, Name: path.Base(rel), Kind: store.KindISO, Format: "iso", State: store.ImageReady, RelPath: rel,
			SizeBytes: size, ModTime: old, VolumeLabel: label, Origin: store.OriginDiscovered, CreatedAt: old.Add(-time.Hour)}
	}
	named := iso("named", "iso/d.iso", 40, "D")
	named.Name = "my installer"
	disk := store.Image{ID: "disk", Name: "noble", Kind: store.KindCloudImage, Format: "qcow2", State: store.ImageReady,
		RelPath: "images/noble.qcow2", SizeBytes: 50, ModTime: old, SHA256: "abdisk", Origin: store.OriginDownloaded}
	lib := Library{Images: []store.Image{
		iso("renamed", "iso/ubuntu.iso", 10, "Ubuntu 24.04 amd64"),
		iso("subdir", "iso/debian.iso", 20, "Debian 12"),
		iso("deleted", "iso/old.iso", 30, "OLD"),
		named,
		iso("twin1", "iso/t1.iso", 60, "TWIN"),
		iso("twin2", "iso/t2.iso", 60, "TWIN"),
		disk,
	}, Busy: map[string]bool{}}
	files := []File{
		{RelPath: "iso/ubuntu-24.04.iso", Size: 10, ModTime: old, Label: "Ubuntu 24.04 amd64"},
		{RelPath: "iso/debian/debian.iso", Size: 20, ModTime: old.Add(999), Label: "Debian 12"},
		// Same size and time as old.iso, another label: an unrelated file.
		{RelPath: "iso/unrelated.iso", Size: 30, ModTime: old, Label: "OTHER"},
		{RelPath: "iso/renamed-d.iso", Size: 40, ModTime: old, Label: "D"},
		// Two vanished twins, one new file alike: no guess.
		{RelPath: "iso/t3.iso", Size: 60, ModTime: old, Label: "TWIN"},
		{RelPath: "images/sub/noble.qcow2", Size: 50, ModTime: old, Format: "qcow2"},
	}
	ids := 0
	c, n, _ := Reconcile(pool, lib, files, now, 3*time.Second, func() string { ids++; return fmt.Sprint("new", ids) })
	if want := (Counts{Moved: 4, Discovered: 2, Missing: 3}); n != want {
		t.Errorf("counts %+v; want %+v", n, want)
	}
	updated := map[string]store.ImageUpdate{}
	for _, u := range c.Update {
		updated[u.Image.ID] = u
	}
	for id, want := range map[string]struct{ path, name string }{
		"renamed": {"iso/ubuntu-24.04.iso", "ubuntu-24.04.iso"},
		"subdir":  {"iso/debian/debian.iso", "debian.iso"},
		"named":   {"iso/renamed-d.iso", "my installer"},
		"disk":    {"images/sub/noble.qcow2", "noble"},
	} {
		u := updated[id]
		if !u.Move || u.ExpectState != store.ImageReady || u.Image.State != store.ImageReady ||
			u.Image.RelPath != want.path || u.Image.Name != want.name {
			t.Errorf("%s: %+v; want moved READY to %s named %q", id, u, want.path, want.name)
		}
	}
	if u := updated["renamed"]; u.Image.OSVersion != "24.04" || u.Image.VolumeLabel != "Ubuntu 24.04 amd64" || !u.Image.CreatedAt.Equal(old.Add(-time.Hour)) {
		t.Errorf("renamed ISO lost its facts: %+v", u.Image)
	}
	if u := updated["disk"]; u.Image.SHA256 != "abdisk" || u.Image.Origin != store.OriginDownloaded {
		t.Errorf("moved disk lost its digest or origin: %+v", u.Image)
	}
	for _, id := range []string{"deleted", "twin1", "twin2"} {
		if u := updated[id]; u.Move || u.Image.State != store.ImageMissing {
			t.Errorf("%s: %+v; want MISSING, not moved", id, u)
		}
	}
	var created []string
	for _, im := range c.Create {
		created = append(created, im.RelPath)
	}
	slices.Sort(created)
	if want := []string{"iso/t3.iso", "iso/unrelated.iso"}; !slices.Equal(created, want) {
		t.Errorf("created %v; want %v", created, want)
	}

	// A file still being written is never taken for a moved one, nor is a
	// file under another tree, nor one whose header is unknown.
	lib = Library{Images: []store.Image{iso("a", "iso/a.iso", 10, "A"), disk}, Busy: map[string]bool{}}
	files = []File{
		{RelPath: "iso/b.iso", Size: 10, ModTime: old, Label: "A", Writing: true},
		{RelPath: "images/a.iso", Size: 10, ModTime: old, Format: "iso"},
		{RelPath: "images/noble2.qcow2", Size: 50, ModTime: old},
	}
	c, n, _ = Reconcile(pool, lib, files, now, 3*time.Second, func() string { return "new" })
	if n.Moved != 0 || n.Missing != 2 {
		t.Errorf("counts %+v; want nothing moved, both MISSING", n)
	}
	for _, u := range c.Update {
		if u.Move {
			t.Errorf("unexpected move %+v", u)
		}
	}
}
