package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func testCatalogRefresh(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)

	if _, err := s.GetCatalogRefresh(ctx, "e1", "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetCatalogRefresh of nothing: %v, want ErrNotFound", err)
	}
	r := store.CatalogRefresh{CatalogID: "e1", PoolID: "p1", CurrentImageID: "im1",
		LastCheckAt: at(time.Minute), NextCheckAt: at(time.Hour), Result: "unchanged", JobID: ""}
	if err := s.PutCatalogRefresh(ctx, r); err != nil {
		t.Fatal(err)
	}
	// A second put replaces every field.
	r.CurrentImageID, r.Error, r.JobID, r.LastCheckAt = "im2", "checking: 503", "j1", time.Time{}
	if err := s.PutCatalogRefresh(ctx, r); err != nil {
		t.Fatal(err)
	}
	other := store.CatalogRefresh{CatalogID: "a0", PoolID: "p2", NextCheckAt: at(2 * time.Hour)}
	if err := s.PutCatalogRefresh(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCatalogRefresh(ctx, "e1", "p1")
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("GetCatalogRefresh = %+v, %v; want %+v", got, err, r)
	}
	all, err := s.ListCatalogRefresh(ctx)
	if err != nil || len(all) != 2 || all[0].CatalogID != "a0" || all[1].CatalogID != "e1" {
		t.Errorf("ListCatalogRefresh = %+v, %v; want a0 then e1", all, err)
	}

	b1 := store.CatalogBuild{ImageID: "im1", CatalogID: "e1", PoolID: "p1", Build: "20250101-010000", BuiltAt: at(0),
		ETag: `"x1"`, LastModified: "Wed, 01 Jan 2025 01:00:00 GMT", Digest: "sha256:aa", CreatedAt: at(time.Second)}
	b2 := b1
	b2.ImageID, b2.Build, b2.CreatedAt = "im2", "20250102-010000", at(2*time.Second)
	b3 := b1
	b3.ImageID, b3.PoolID = "im3", "p2"
	for _, b := range []store.CatalogBuild{b1, b2, b3} {
		if err := s.PutCatalogBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// A second put replaces the build.
	b1.ETag, b1.Digest = `"x2"`, "sha256:bb"
	if err := s.PutCatalogBuild(ctx, b1); err != nil {
		t.Fatal(err)
	}
	builds, err := s.ListCatalogBuilds(ctx, "e1", "p1")
	if err != nil || !reflect.DeepEqual(builds, []store.CatalogBuild{b2, b1}) {
		t.Errorf("ListCatalogBuilds = %+v, %v; want im2 then im1", builds, err)
	}
	if err := s.DeleteCatalogBuild(ctx, "im2"); err != nil {
		t.Fatal(err)
	}
	if builds, _ := s.ListCatalogBuilds(ctx, "e1", "p1"); len(builds) != 1 || builds[0].ImageID != "im1" {
		t.Errorf("after DeleteCatalogBuild: %+v", builds)
	}
	// Deleting a pair takes its builds, not another pool's.
	if err := s.DeleteCatalogRefresh(ctx, "e1", "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCatalogRefresh(ctx, "e1", "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after DeleteCatalogRefresh: %v", err)
	}
	if builds, _ := s.ListCatalogBuilds(ctx, "e1", "p1"); len(builds) != 0 {
		t.Errorf("builds left after DeleteCatalogRefresh: %+v", builds)
	}
	if builds, _ := s.ListCatalogBuilds(ctx, "e1", "p2"); len(builds) != 1 {
		t.Errorf("another pool's builds: %+v", builds)
	}
}
