package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// image returns a READY ISO discovered in pool poolID at relPath, with every
// field set so round trips are checked field by field.
func image(id, poolID, relPath string) store.Image {
	return store.Image{
		ID:          id,
		PoolID:      poolID,
		Name:        "image " + id,
		Kind:        store.KindISO,
		Format:      "iso",
		State:       store.ImageReady,
		RelPath:     relPath,
		SizeBytes:   3 << 30,
		ModTime:     at(-time.Hour),
		VolumeLabel: "LABEL_" + id,
		Bootable:    true,
		OSDistro:    "ubuntu",
		OSVersion:   "24.04",
		OSArch:      "x86_64",
		SHA256:      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		Verified:    true,
		VirtualSize: 10 << 30,
		Origin:      store.OriginDiscovered,
		CreatedAt:   t0,
		UpdatedAt:   at(time.Minute),
	}
}

func mustCreateImages(t *testing.T, s store.Store, ims ...store.Image) {
	t.Helper()
	for _, im := range ims {
		if err := s.CreateImage(context.Background(), im); err != nil {
			t.Fatalf("CreateImage(%s): %v", im.ID, err)
		}
	}
}

func mustGetImage(t *testing.T, s store.Store, id string) store.Image {
	t.Helper()
	im, err := s.GetImage(context.Background(), id)
	if err != nil {
		t.Fatalf("GetImage(%s): %v", id, err)
	}
	return im
}

func mustListImages(t *testing.T, s store.Store, f store.ImageFilter) []store.Image {
	t.Helper()
	ims, err := s.ListImages(context.Background(), f)
	if err != nil {
		t.Fatalf("ListImages(%+v): %v", f, err)
	}
	return ims
}

func wantNoImage(t *testing.T, s store.Store, id string) {
	t.Helper()
	_, err := s.GetImage(context.Background(), id)
	wantErr(t, "GetImage("+id+")", err, store.ErrNotFound, id)
}

func testImages(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("create and get", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		want := image("im1", "p1", "iso/ubuntu-24.04.iso")
		want.MissingSince = at(2 * time.Minute)
		want.State, want.StateReason = store.ImageMissing, "file is gone"
		mustCreateImages(t, s, want)
		wantEqual(t, "GetImage", mustGetImage(t, s, "im1"), want)
	})

	t.Run("zero fields round-trip", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		want := store.Image{ID: "im1", PoolID: "p1", RelPath: "x"}
		mustCreateImages(t, s, want)
		wantEqual(t, "GetImage", mustGetImage(t, s, "im1"), want)
	})

	t.Run("times come back in UTC, to the microsecond", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im := image("im1", "p1", "a.iso")
		im.ModTime = time.Date(2025, 3, 4, 7, 6, 7, 123456789, time.FixedZone("CEST", 2*3600))
		mustCreateImages(t, s, im)
		got := mustGetImage(t, s, "im1").ModTime
		if got.Location() != time.UTC || !got.Equal(im.ModTime.Truncate(time.Microsecond)) {
			t.Errorf("ModTime = %v, want %v in UTC", got, im.ModTime.Truncate(time.Microsecond))
		}
	})

	t.Run("list ordered by pool then path, and filtered", func(t *testing.T) {
		s := open(t)
		if got := mustListImages(t, s, store.ImageFilter{}); len(got) != 0 {
			t.Fatalf("ListImages on empty store = %+v", got)
		}
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		// Paths sort the same byte-wise and under common locale
		// collations, so this holds whatever the backend's collation.
		isoB := image("im1", "p2", "iso/b.iso")
		disk := image("im2", "p1", "disk/z.qcow2")
		disk.Kind, disk.Format = store.KindDisk, "qcow2"
		isoSub := image("im3", "p1", "iso/sub/c.iso")
		cloud := image("im4", "p2", "cloud/noble.img")
		cloud.Kind, cloud.Format = store.KindCloudImage, "qcow2"
		isoA := image("im5", "p1", "iso/a.iso")
		isoA2 := image("im6", "p2", "iso/a.iso")
		mustCreateImages(t, s, isoB, disk, isoSub, cloud, isoA, isoA2)

		tests := []struct {
			name string
			f    store.ImageFilter
			want []store.Image
		}{
			{"everything", store.ImageFilter{}, []store.Image{disk, isoA, isoSub, cloud, isoA2, isoB}},
			{"pool", store.ImageFilter{PoolID: "p2"}, []store.Image{cloud, isoA2, isoB}},
			{"kind", store.ImageFilter{Kind: store.KindISO}, []store.Image{isoA, isoSub, isoA2, isoB}},
			{"pool and kind", store.ImageFilter{PoolID: "p1", Kind: store.KindISO}, []store.Image{isoA, isoSub}},
			{"kind absent from pool", store.ImageFilter{PoolID: "p1", Kind: store.KindCloudImage}, nil},
			{"unknown pool", store.ImageFilter{PoolID: "px"}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantEqual(t, "ListImages", mustListImages(t, s, tt.f), tt.want)
			})
		}
	})

	t.Run("counted by pool, kind and state", func(t *testing.T) {
		s := open(t)
		if got, err := s.CountImages(ctx); err != nil || len(got) != 0 {
			t.Fatalf("CountImages on an empty store = %v, %v; want none", got, err)
		}
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		missing := image("im3", "p1", "iso/c.iso")
		missing.State = store.ImageMissing
		disk := image("im4", "p2", "disk/d.qcow2")
		disk.Kind = store.KindDisk
		mustCreateImages(t, s, image("im1", "p1", "iso/a.iso"), image("im2", "p1", "iso/b.iso"), missing, disk)
		got, err := s.CountImages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, func(a, b store.ImageCount) int {
			return strings.Compare(a.PoolID+string(a.Kind)+string(a.State), b.PoolID+string(b.Kind)+string(b.State))
		})
		wantEqual(t, "CountImages", got, []store.ImageCount{
			{PoolID: "p1", Kind: store.KindISO, State: store.ImageMissing, N: 1},
			{PoolID: "p1", Kind: store.KindISO, State: store.ImageReady, N: 2},
			{PoolID: "p2", Kind: store.KindDisk, State: store.ImageReady, N: 1},
		})
	})

	t.Run("same path in another pool", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		mustCreateImages(t, s, image("im1", "p1", "iso/a.iso"), image("im2", "p2", "iso/a.iso"))
	})

	t.Run("rejected creates", func(t *testing.T) {
		tests := []struct {
			name    string
			im      store.Image
			class   error
			details []string
		}{
			{"same path", image("im2", "p1", "iso/a.iso"), store.ErrConflict, []string{`pool "pool-p1"`, "iso/a.iso"}},
			{"same id", image("im1", "p1", "iso/b.iso"), store.ErrConflict, []string{"im1"}},
			{"same id in another pool", image("im1", "p2", "iso/b.iso"), store.ErrConflict, []string{"im1"}},
			{"unknown pool", image("im2", "px", "iso/b.iso"), store.ErrNotFound, []string{"px"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				mustCreatePool(t, s, pool("p1"))
				mustCreatePool(t, s, pool("p2"))
				first := image("im1", "p1", "iso/a.iso")
				mustCreateImages(t, s, first)
				wantErr(t, "CreateImage", s.CreateImage(ctx, tt.im), tt.class, tt.details...)
				wantEqual(t, "ListImages after rejected create", mustListImages(t, s, store.ImageFilter{}), []store.Image{first})
			})
		}
	})

	t.Run("delete", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		keep := image("im2", "p1", "iso/b.iso")
		mustCreateImages(t, s, image("im1", "p1", "iso/a.iso"), keep)
		if err := s.DeleteImage(ctx, "im1"); err != nil {
			t.Fatal(err)
		}
		wantNoImage(t, s, "im1")
		wantEqual(t, "ListImages after delete", mustListImages(t, s, store.ImageFilter{}), []store.Image{keep})
		wantErr(t, "DeleteImage twice", s.DeleteImage(ctx, "im1"), store.ErrNotFound, "im1")
		// The path is free again.
		mustCreateImages(t, s, image("im3", "p1", "iso/a.iso"))
	})

	t.Run("not found", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreateImages(t, s, image("im1", "p1", "iso/a.iso"))
		tests := []struct {
			name string
			op   func() error
		}{
			{"GetImage", func() error { _, err := s.GetImage(ctx, "imx"); return err }},
			{"UpdateImage", func() error { return s.UpdateImage(ctx, image("imx", "p1", "iso/a.iso")) }},
			{"DeleteImage", func() error { return s.DeleteImage(ctx, "imx") }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, tt.name, tt.op(), store.ErrNotFound, "imx")
			})
		}
	})
}

func testUpdateImage(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	mustCreatePool(t, s, pool("p1"))
	mustCreatePool(t, s, pool("p2"))
	orig := image("im1", "p1", "iso/a.iso")
	other := image("im2", "p1", "iso/b.iso")
	mustCreateImages(t, s, orig, other)

	want := store.Image{
		ID: "im1", PoolID: "p1", RelPath: "iso/a.iso", CreatedAt: t0,
		Name: "renamed", Kind: store.KindDisk, Format: "raw", State: store.ImageError, StateReason: "bad checksum",
		SizeBytes: 42, ModTime: at(time.Hour), VolumeLabel: "", Bootable: false,
		OSDistro: "debian", OSVersion: "13", OSArch: "aarch64", SHA256: "00ff", Origin: store.OriginUploaded,
		UpdatedAt: at(2 * time.Hour), MissingSince: at(3 * time.Hour),
	}
	// Fields UpdateImage must not touch are sent changed, too; the path is
	// even another image's.
	in := want
	in.PoolID, in.RelPath, in.CreatedAt = "p2", "iso/b.iso", at(time.Minute)
	if err := s.UpdateImage(ctx, in); err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "GetImage after update", mustGetImage(t, s, "im1"), want)
	wantEqual(t, "other image after update", mustGetImage(t, s, "im2"), other)

	// Zero values clear fields rather than keeping the old ones.
	cleared := store.Image{ID: "im1", PoolID: "p1", RelPath: "iso/a.iso", CreatedAt: t0}
	if err := s.UpdateImage(ctx, store.Image{ID: "im1"}); err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "GetImage after clearing update", mustGetImage(t, s, "im1"), cleared)
}

func testApplyScan(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	// setup makes pool p1 with a READY image im1, a DOWNLOADING im2 and a
	// READY im3, and pool p2 with a READY im9.
	setup := func(t *testing.T) (store.Store, []store.Image) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		im2 := image("im2", "p1", "iso/b.iso")
		im2.State, im2.Origin = store.ImageDownloading, store.OriginDownloaded
		ims := []store.Image{image("im1", "p1", "iso/a.iso"), im2, image("im3", "p1", "iso/c.iso"), image("im9", "p2", "iso/z.iso")}
		mustCreateImages(t, s, ims...)
		return s, ims
	}
	missing := func(im store.Image) store.Image {
		im.State, im.StateReason, im.MissingSince, im.UpdatedAt = store.ImageMissing, "not found by scan", at(time.Hour), at(time.Hour)
		return im
	}

	t.Run("creates, updates and skips stale updates", func(t *testing.T) {
		s, ims := setup(t)
		im1, im2, im3, im9 := ims[0], ims[1], ims[2], ims[3]
		if err := s.DeleteImage(ctx, "im3"); err != nil {
			t.Fatal(err)
		}
		newA := image("im4", "", "iso/new-a.iso")
		newB := image("im5", "p1", "disk/new-b.qcow2")
		newB.Kind = store.KindDisk
		// The scan read im1 and im2 READY; im2 has since started a
		// download, im3 was deleted and im9 is not in this pool.
		upd1 := missing(im1)
		// Updates cannot move an image or rewrite its creation time.
		upd1.RelPath, upd1.CreatedAt = "iso/elsewhere.iso", at(time.Minute)
		skipped, err := s.ApplyScan(ctx, "p1", store.ScanChanges{
			Create: []store.Image{newA, newB},
			Update: []store.ImageUpdate{
				{Image: upd1, ExpectState: store.ImageReady},
				{Image: missing(im2), ExpectState: store.ImageReady},
				{Image: missing(im3), ExpectState: store.ImageReady},
				{Image: func() store.Image { im := missing(im9); im.PoolID = ""; return im }(), ExpectState: store.ImageReady},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if skipped != 3 {
			t.Errorf("ApplyScan skipped %d updates, want 3", skipped)
		}
		newA.PoolID = "p1"
		wantEqual(t, "ListImages after scan", mustListImages(t, s, store.ImageFilter{}),
			[]store.Image{newB, missing(im1), im2, newA, im9})
		wantNoImage(t, s, "im3")
	})

	t.Run("update applies in the expected state only", func(t *testing.T) {
		s, ims := setup(t)
		im2 := ims[1]
		ready := im2
		ready.State, ready.SizeBytes, ready.UpdatedAt = store.ImageReady, 7, at(time.Hour)
		skipped, err := s.ApplyScan(ctx, "p1", store.ScanChanges{Update: []store.ImageUpdate{
			{Image: ready, ExpectState: store.ImageDownloading},
		}})
		if err != nil || skipped != 0 {
			t.Fatalf("ApplyScan = %d, %v; want 0 skipped", skipped, err)
		}
		wantEqual(t, "GetImage", mustGetImage(t, s, "im2"), ready)
		// The same update again now expects a state the image left.
		again := ready
		again.SizeBytes = 8
		skipped, err = s.ApplyScan(ctx, "p1", store.ScanChanges{Update: []store.ImageUpdate{
			{Image: again, ExpectState: store.ImageDownloading},
		}})
		if err != nil || skipped != 1 {
			t.Fatalf("ApplyScan = %d, %v; want 1 skipped", skipped, err)
		}
		wantEqual(t, "GetImage after skipped update", mustGetImage(t, s, "im2"), ready)
	})

	t.Run("move keeps the image and frees the old path", func(t *testing.T) {
		s, ims := setup(t)
		im1, im3 := ims[0], ims[2]
		moved := im1
		moved.RelPath, moved.Name, moved.UpdatedAt = "iso/sub/a2.iso", "a2.iso", at(time.Hour)
		moved.CreatedAt = at(time.Minute) // never rewritten, move or not
		skipped, err := s.ApplyScan(ctx, "p1", store.ScanChanges{
			Update: []store.ImageUpdate{{Image: moved, ExpectState: store.ImageReady, Move: true}},
			// The old path is free again in the same scan.
			Create: []store.Image{image("im6", "", "iso/a.iso")},
		})
		if err != nil || skipped != 0 {
			t.Fatalf("ApplyScan = %d, %v; want 0 skipped", skipped, err)
		}
		moved.CreatedAt = im1.CreatedAt
		wantEqual(t, "GetImage of the moved image", mustGetImage(t, s, "im1"), moved)
		if got := mustGetImage(t, s, "im6"); got.RelPath != "iso/a.iso" {
			t.Errorf("image created at the old path has path %q", got.RelPath)
		}
		// A move onto a path another image holds changes nothing.
		clash := im3
		clash.RelPath = "iso/sub/a2.iso"
		_, err = s.ApplyScan(ctx, "p1", store.ScanChanges{Update: []store.ImageUpdate{{Image: clash, ExpectState: store.ImageReady, Move: true}}})
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("move onto a taken path: err = %v, want ErrConflict", err)
		}
		wantEqual(t, "GetImage after the refused move", mustGetImage(t, s, "im3"), im3)
	})

	t.Run("empty scan", func(t *testing.T) {
		s, ims := setup(t)
		if skipped, err := s.ApplyScan(ctx, "p1", store.ScanChanges{}); err != nil || skipped != 0 {
			t.Fatalf("ApplyScan of nothing = %d, %v", skipped, err)
		}
		wantEqual(t, "ListImages", mustListImages(t, s, store.ImageFilter{}), ims)
	})

	rejected := []struct {
		name   string
		poolID string
		create []store.Image
		// updatePool is the PoolID of the scan's one update, which would
		// apply: "" means the scanned pool.
		updatePool string
		class      error // nil: any error
		details    []string
	}{
		{"create at a taken path", "p1",
			[]store.Image{image("im4", "p1", "iso/new.iso"), image("im5", "p1", "iso/a.iso")}, "",
			store.ErrConflict, []string{`pool "pool-p1"`, "iso/a.iso"}},
		{"two creates at one path", "p1",
			[]store.Image{image("im4", "p1", "iso/new.iso"), image("im5", "", "iso/new.iso")}, "",
			store.ErrConflict, []string{`pool "pool-p1"`, "iso/new.iso"}},
		{"create with a taken id", "p1",
			[]store.Image{image("im4", "p1", "iso/new.iso"), image("im9", "p1", "iso/other.iso")}, "",
			store.ErrConflict, []string{"im9"}},
		{"unknown pool", "px",
			[]store.Image{image("im4", "", "iso/new.iso")}, "",
			store.ErrNotFound, []string{"px"}},
		{"create in another pool", "p1",
			[]store.Image{image("im4", "p1", "iso/new.iso"), image("im5", "p2", "iso/new.iso")}, "",
			nil, []string{"im5", "p2"}},
		{"update in another pool", "p1",
			[]store.Image{image("im4", "p1", "iso/new.iso")}, "p2",
			nil, []string{"im1", "p2"}},
	}
	for _, tt := range rejected {
		t.Run("rolled back: "+tt.name, func(t *testing.T) {
			s, ims := setup(t)
			// An update that would apply, to see it rolled back too.
			upd := missing(ims[0])
			upd.PoolID = tt.updatePool
			skipped, err := s.ApplyScan(ctx, tt.poolID, store.ScanChanges{
				Create: tt.create,
				Update: []store.ImageUpdate{{Image: upd, ExpectState: store.ImageReady}},
			})
			switch {
			case tt.class != nil:
				wantErr(t, "ApplyScan", err, tt.class, tt.details...)
			case err == nil:
				t.Fatal("ApplyScan succeeded, want an error")
			default:
				for _, d := range tt.details {
					if !strings.Contains(err.Error(), d) {
						t.Errorf("ApplyScan: error %q does not mention %q", err, d)
					}
				}
			}
			if skipped != 0 {
				t.Errorf("failed ApplyScan reported %d skipped", skipped)
			}
			wantEqual(t, "ListImages after failed scan", mustListImages(t, s, store.ImageFilter{}), ims)
		})
	}
}

func testPoolWithImages(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	mustCreateNodes(t, s, "n1")
	isos := pool("p1", "n1")
	isos.Name = "isos"
	mustCreatePool(t, s, isos)
	mustCreatePool(t, s, pool("p2"))
	if err := s.RecordNodeCheck(ctx, "n1", store.NodeStatus{State: store.NodeReady, LastCheckedAt: t0},
		[]store.PoolMount{{NodeID: "n1", PoolID: "p1", Mounted: true, CheckedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	ims := []store.Image{image("im1", "p1", "a.iso"), image("im2", "p1", "b.iso"), image("im3", "p1", "c.iso")}
	mustCreateImages(t, s, ims...)

	wantErr(t, "DeletePool", s.DeletePool(ctx, "p1"), store.ErrInUse, `pool "isos" still holds 3 image(s)`, "delete them first")
	wantEqual(t, "GetPool after refused delete", mustGetPool(t, s, "p1"), isos)
	wantEqual(t, "ListImages after refused delete", mustListImages(t, s, store.ImageFilter{}), ims)
	if got := len(mustMounts(t, s)); got != 1 {
		t.Errorf("%d mounts after refused delete, want 1", got)
	}

	// Another pool's images do not hold an empty pool.
	if err := s.DeletePool(ctx, "p2"); err != nil {
		t.Fatalf("DeletePool of an empty pool: %v", err)
	}

	for _, im := range ims[:2] {
		if err := s.DeleteImage(ctx, im.ID); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, "DeletePool", s.DeletePool(ctx, "p1"), store.ErrInUse, `pool "isos" still holds 1 image(s)`)
	if err := s.DeleteImage(ctx, "im3"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePool(ctx, "p1"); err != nil {
		t.Fatalf("DeletePool once its images are gone: %v", err)
	}
	if _, err := s.GetPool(ctx, "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetPool after delete: %v, want ErrNotFound", err)
	}
	if err := s.CreateImage(ctx, image("im4", "p1", "a.iso")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateImage in a deleted pool: %v, want ErrNotFound", err)
	}
}

// testImageConcurrency races scans as several control-plane replicas (or a
// scan and an API call) would: disjoint work must all land, contested work
// must have exactly one winner.
func testImageConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("disjoint creates and one contested update", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		base := image("im0", "p1", "iso/base.iso")
		mustCreateImages(t, s, base)
		const (
			scanners = 2
			each     = 15
		)
		var wg sync.WaitGroup
		start := make(chan struct{})
		skipped := make([]int, scanners)
		errs := make([]error, scanners)
		for g := range scanners {
			wg.Go(func() {
				var c store.ScanChanges
				for i := range each {
					c.Create = append(c.Create, image(fmt.Sprintf("im-%d-%d", g, i), "p1", fmt.Sprintf("iso/g%d/%02d.iso", g, i)))
				}
				upd := base
				upd.State, upd.StateReason = store.ImageMissing, fmt.Sprintf("scanner %d", g)
				c.Update = []store.ImageUpdate{{Image: upd, ExpectState: store.ImageReady}}
				<-start
				skipped[g], errs[g] = s.ApplyScan(ctx, "p1", c)
			})
		}
		close(start)
		wg.Wait()
		total := 0
		for g, err := range errs {
			if err != nil {
				t.Errorf("ApplyScan of scanner %d: %v", g, err)
			}
			total += skipped[g]
		}
		if total != scanners-1 {
			t.Errorf("%d updates of the contested image were skipped, want %d", total, scanners-1)
		}
		if got := len(mustListImages(t, s, store.ImageFilter{PoolID: "p1"})); got != scanners*each+1 {
			t.Errorf("%d images after the race, want %d", got, scanners*each+1)
		}
		if got := mustGetImage(t, s, "im0"); got.State != store.ImageMissing {
			t.Errorf("contested image state = %s, want MISSING", got.State)
		}
	})

	t.Run("creates at one path: one wins", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		const racers = 6
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() {
				c := store.ScanChanges{Create: []store.Image{image(fmt.Sprintf("im%d", i), "p1", "iso/race.iso")}}
				<-start
				_, errs[i] = s.ApplyScan(ctx, "p1", c)
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("racer %d: %v, want nil or ErrConflict", i, err)
			}
		}
		if wins != 1 {
			t.Errorf("%d racers created the image, want 1", wins)
		}
		if got := len(mustListImages(t, s, store.ImageFilter{})); got != 1 {
			t.Errorf("%d images after the race, want 1", got)
		}
	})

	t.Run("scan against pool delete", func(t *testing.T) {
		// Either the pool goes and the scan finds no pool, or the scan
		// lands and the pool is in use; never both, never neither.
		for round := range 8 {
			s := open(t)
			mustCreatePool(t, s, pool("p1"))
			var scanErr, delErr error
			var wg sync.WaitGroup
			start := make(chan struct{})
			wg.Go(func() {
				<-start
				_, scanErr = s.ApplyScan(ctx, "p1", store.ScanChanges{Create: []store.Image{image("im1", "p1", "a.iso")}})
			})
			wg.Go(func() {
				<-start
				delErr = s.DeletePool(ctx, "p1")
			})
			close(start)
			wg.Wait()
			switch {
			case scanErr == nil && errors.Is(delErr, store.ErrInUse):
				mustGetImage(t, s, "im1")
			case delErr == nil && errors.Is(scanErr, store.ErrNotFound):
				if got := mustListImages(t, s, store.ImageFilter{}); len(got) != 0 {
					t.Errorf("round %d: images left in a deleted pool: %+v", round, got)
				}
			default:
				t.Errorf("round %d: ApplyScan = %v, DeletePool = %v; want one to win and the other to fail", round, scanErr, delErr)
			}
		}
	})
}
