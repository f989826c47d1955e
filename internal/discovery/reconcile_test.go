package discovery

import (
	"fmt"
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
	c, n, settleAt := Reconcile(pool, existing, files, now, 3*time.Second, func() string { ids++; return fmt.Sprint("new", ids) })

	if want := (Counts{Discovered: 3, Updated: 2, Missing: 1, Deferred: 2}); n != want {
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
	for _, id := range []string{"same", "still-missing", "downloading", "cloud"} {
		if _, ok := updated[id]; ok {
			t.Errorf("%s must be left alone", id)
		}
	}
}
