package storetest

import (
	"context"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
)

// testUploads: an upload's image (UPLOADING) and job (kind upload, with
// its owner token) are created together by CreateDownload and read back
// field by field; a download may not create an UPLOADING image.
func testUploads(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	mustCreatePool(t, s, pool("p1"))
	im, j := download("j1", "im1", "p1", "upload:j1")
	im.State, im.Origin = store.ImageUploading, store.OriginUploaded
	j.Kind, j.Owner, j.URL, j.ChecksumURL = "upload", "tok-1", "", ""
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

	im2, j2 := download("j2", "im2", "p1", "https://x")
	im2.State = store.ImageUploading
	if _, err := s.CreateDownload(ctx, im2, j2); err == nil {
		t.Error("a download created an UPLOADING image")
	}
}
