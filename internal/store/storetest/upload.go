package storetest

import (
	"context"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
)

// testUploads: an upload's image (UPLOADING) and job (kind upload, with
// its owner token and whether its content decides its kind) are created
// together by CreateDownload and read back field by field; FinishJob moves
// the image to the path its node put it at; a download may not create an
// UPLOADING image.
func testUploads(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	mustCreatePool(t, s, pool("p1"))
	im, j := download("j1", "im1", "p1", "upload:j1")
	im.State, im.Origin = store.ImageUploading, store.OriginUploaded
	j.Kind, j.Owner, j.URL, j.ChecksumURL, j.KindFromContent = "upload", "tok-1", "", "", true
	created, err := s.CreateDownload(ctx, im, j)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "CreateDownload of an upload", created, j)
	wantEqual(t, "GetJob", mustGetJob(t, s, "j1"), j)
	got, err := s.GetImage(ctx, "im1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.ImageUploading || got.Origin != store.OriginUploaded {
		t.Errorf("image %+v; want UPLOADING, uploaded", got)
	}
	done := created
	done.State = store.JobSucceeded
	got.State, got.Kind, got.RelPath = store.ImageReady, store.KindISO, "iso/moved.iso"
	if err := s.FinishJob(ctx, done, got); err != nil {
		t.Fatal(err)
	}
	if moved, err := s.GetImage(ctx, "im1"); err != nil || moved.RelPath != "iso/moved.iso" || moved.Kind != store.KindISO {
		t.Errorf("after FinishJob: %+v, %v; want at iso/moved.iso, kind iso", moved, err)
	}

	im2, j2 := download("j2", "im2", "p1", "https://x")
	im2.State = store.ImageUploading
	if _, err := s.CreateDownload(ctx, im2, j2); err == nil {
		t.Error("a download created an UPLOADING image")
	}
}
