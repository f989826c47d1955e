package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"path"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/catalog"
	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/download"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/urlpolicy"
)

// Downloads is what DownloadImage needs beyond the store.
type Downloads struct {
	Catalog *catalog.Catalog
	// Policy checks URLs before a job is created; agents check again when
	// they dial.
	Policy *urlpolicy.Policy
	// Enqueue hands a new job to the download controller.
	Enqueue func(jobID string)
	// Reachable reports, as the node-choice helper's error, why no node
	// can work on the pool, so a download that cannot start fails at once.
	Reachable func(ctx context.Context, poolID string) error
}

func (s *ImageService) ListCatalog(ctx context.Context, _ *connect.Request[quarryv1.ListCatalogRequest]) (*connect.Response[quarryv1.ListCatalogResponse], error) {
	resp := &quarryv1.ListCatalogResponse{}
	for _, e := range s.Downloads.Catalog.List() {
		resp.Entries = append(resp.Entries, catalogView(e))
	}
	return connect.NewResponse(resp), nil
}

func catalogView(e catalog.Entry) *quarryv1.CatalogEntry {
	return &quarryv1.CatalogEntry{
		Id: e.ID, Name: e.Name, Url: e.URL, Checksum: e.Checksum, ChecksumUrl: e.ChecksumURL,
		Format: e.Format, DefaultUser: e.DefaultUser, Notes: e.Notes,
		Os: &quarryv1.OSInfo{Distro: e.OS.Distro, Version: e.OS.Version, Arch: e.OS.Arch},
	}
}

// source is what a download request resolves to.
type source struct {
	key         string // "catalog:<id>" or the URL
	url         string
	checksum    string
	checksumURL string
	name        string
	kind        store.ImageKind
	os          catalog.OS
}

func (s *ImageService) resolveSource(m *quarryv1.DownloadImageRequest) (source, error) {
	var src source
	switch {
	case m.GetCatalogId() != "" && m.GetUrl() != "":
		return src, invalidf("give either a catalog id or a URL, not both")
	case m.GetCatalogId() != "":
		e, err := s.Downloads.Catalog.Get(m.GetCatalogId())
		if err != nil {
			return src, errclass.New(store.ErrNotFound, "%s", err.Error())
		}
		src = source{key: "catalog:" + e.ID, url: e.URL, checksum: e.Checksum, checksumURL: e.ChecksumURL,
			name: e.ID + path.Ext(urlPath(e.URL)), kind: store.KindCloudImage, os: e.OS}
	case m.GetUrl() != "":
		src = source{key: m.GetUrl(), url: m.GetUrl(), name: safeName(path.Base(urlPath(m.GetUrl()))), kind: store.KindCloudImage}
	default:
		return src, invalidf("give a catalog id (see quarry catalog ls) or an http(s) URL to download")
	}
	if _, err := s.Downloads.Policy.CheckURL(src.url); err != nil {
		return src, invalidf("%s", err.Error())
	}
	switch c, cu := m.GetChecksum(), m.GetChecksumUrl(); {
	case c != "" && cu != "":
		return src, invalidf("give either a checksum or a checksum file URL, not both")
	case c != "":
		d, err := checksum.ParseDigest(c)
		if err != nil {
			return src, invalidf("%s", err.Error())
		}
		src.checksum, src.checksumURL = d.String(), ""
	case cu != "":
		if _, err := s.Downloads.Policy.CheckURL(cu); err != nil {
			return src, invalidf("checksum file URL: %s", err.Error())
		}
		src.checksum, src.checksumURL = "", cu
	}
	if n := m.GetName(); n != "" {
		src.name = n
	}
	if err := names.Check("image", src.name); err != nil {
		return src, invalidf("%s; give one with --name", err.Error())
	}
	if strings.EqualFold(path.Ext(src.name), ".iso") {
		src.kind = store.KindISO
	}
	return src, nil
}

func urlPath(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Path
}

// safeName turns a URL's file name into a valid image name.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	out := strings.TrimLeft(string(b), ".-_")
	if len(out) > names.MaxLen {
		out = out[len(out)-names.MaxLen:]
	}
	if out == "" {
		return "download"
	}
	return out
}

// minRate is the lowest bandwidth limit a download may ask for: below, a
// stall (64 KiB in 30 s) could not be told from the limit.
const minRate = 64 << 10

func (s *ImageService) DownloadImage(ctx context.Context, req *connect.Request[quarryv1.DownloadImageRequest]) (*connect.Response[quarryv1.DownloadImageResponse], error) {
	resp, err := s.download(ctx, req.Msg)
	return connect.NewResponse(resp), toConnect(ctx, s.Logger, err)
}

func (s *ImageService) download(ctx context.Context, m *quarryv1.DownloadImageRequest) (*quarryv1.DownloadImageResponse, error) {
	if m.GetStoragePoolId() == "" {
		return nil, invalidf("storage pool id is empty; see quarry pool ls")
	}
	pool, err := getPool(ctx, s.Store, m.GetStoragePoolId())
	if err != nil {
		return nil, err
	}
	src, err := s.resolveSource(m)
	if err != nil {
		return nil, err
	}
	if r := m.GetMaxBytesPerSecond(); r > 0 && r < minRate || r > math.MaxInt64 {
		return nil, invalidf("bandwidth limit %d bytes/s is out of range: give 0 for none, or from 64 KiB/s", r)
	}
	if err := s.Downloads.Reachable(ctx, pool.ID); err != nil {
		return nil, err
	}
	// The same source already being downloaded into the pool: join it,
	// also when it was asked for by catalog id and now by URL.
	if joined, err := s.joinDownload(ctx, pool, src); joined != nil || err != nil {
		return joined, err
	}
	// The same digest already READY in the pool under this name: that
	// image is the answer. Anywhere else in the cluster: a copy of it.
	from, err := s.sameDigest(ctx, src.checksum)
	if err != nil {
		return nil, err
	}
	for _, im := range from {
		if im.PoolID == pool.ID && im.Name == src.name {
			return &quarryv1.DownloadImageResponse{Image: imageView(im, pool.Name), Existing: true, AlreadyExists: true}, nil
		}
	}
	now := s.Now()
	im := store.Image{
		ID: newID("img"), PoolID: pool.ID, Name: src.name, Kind: src.kind, State: store.ImagePending,
		RelPath: poolfs.ImagePath(src.name, src.kind == store.KindISO), Origin: store.OriginDownloaded, CreatedAt: now, UpdatedAt: now,
		OSDistro: src.os.Distro, OSVersion: src.os.Version, OSArch: src.os.Arch,
	}
	j := store.Job{
		ID: newID("job"), Kind: "download", State: store.JobQueued, ImageID: im.ID, PoolID: pool.ID,
		Source: src.key, URL: src.url, Checksum: src.checksum, ChecksumURL: src.checksumURL,
		MaxBytesPerSec: int64(m.GetMaxBytesPerSecond()),
		Message:        "queued", CreatedAt: now, UpdatedAt: now,
	}
	var copiedFrom string
	if len(from) > 0 {
		// Never fetched: the download controller copies the file from a
		// node that holds it, and the job's history says so.
		j.Kind, im.Origin, copiedFrom = download.KindCopy, store.OriginCopied, from[0].ID
		im.Format = from[0].Format
	}
	im, jv, existing, err := s.createJob(ctx, pool, im, j, s.Downloads.Enqueue)
	if err != nil {
		return nil, err
	}
	if existing {
		copiedFrom = ""
	}
	return &quarryv1.DownloadImageResponse{Image: imageView(im, pool.Name), Job: jv, Existing: existing, CopiedFromImageId: copiedFrom}, nil
}

// joinDownload answers a download whose URL is already being downloaded
// into the pool (under any source key) with that job; nil when none is.
func (s *ImageService) joinDownload(ctx context.Context, pool store.Pool, src source) (*quarryv1.DownloadImageResponse, error) {
	jobs, err := s.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}, PoolID: pool.ID})
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.URL != src.url || (j.Kind != download.KindDownload && j.Kind != download.KindCopy) || j.CancelRequested {
			continue
		}
		im, err := s.Store.GetImage(ctx, j.ImageID)
		if err != nil {
			return nil, err
		}
		jv, err := jobView(ctx, s.Store, j, false)
		if err != nil {
			return nil, err
		}
		return &quarryv1.DownloadImageResponse{Image: imageView(im, pool.Name), Job: jv, Existing: true}, nil
	}
	return nil, nil
}

// sameDigest lists the READY images whose SHA-256 is the expected digest
// (none when it is not a SHA-256).
func (s *ImageService) sameDigest(ctx context.Context, expected string) ([]store.Image, error) {
	d, err := checksum.ParseDigest(expected)
	if err != nil || d.Algo != checksum.SHA256 {
		return nil, nil
	}
	ims, err := s.Store.ListImages(ctx, store.ImageFilter{})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ims, func(im store.Image) bool { return im.State != store.ImageReady || im.SHA256 != d.Hex }), nil
}

// nameTaken is the refusal of a download whose path an image holds (a
// failed download's record is replaced, not refused): it names that image
// and says how to clear it.
func (s *ImageService) nameTaken(ctx context.Context, pool store.Pool, relPath string) error {
	what := "an image"
	name := path.Base(relPath)
	if ims, err := s.Store.ListImages(ctx, store.ImageFilter{PoolID: pool.ID}); err == nil {
		for _, im := range ims {
			if im.RelPath == relPath {
				what, name = fmt.Sprintf("image %s (%s)", im.Name, im.State), im.ID
			}
		}
	}
	return errclass.New(store.ErrConflict, "pool %s already has %s at %s; remove it with quarry image rm %s, or choose another name with --name",
		pool.Name, what, relPath, name)
}

// createJob creates a job with its PENDING image, hands it to enqueue (when
// set) and returns the image and the job's view. When the same source is
// already active in the pool (one active job per source), that job and its
// image are the answer and existing is true; a path another image holds is
// refused with nameTaken.
func (s *ImageService) createJob(ctx context.Context, pool store.Pool, im store.Image, j store.Job, enqueue func(jobID string)) (_ store.Image, _ *quarryv1.Job, existing bool, _ error) {
	created, err := s.Store.CreateDownload(ctx, im, j)
	switch {
	case errors.Is(err, store.ErrConflict) && created.ID != "":
		existing = true
		if im, err = s.Store.GetImage(ctx, created.ImageID); err != nil {
			return store.Image{}, nil, false, err
		}
	case errors.Is(err, store.ErrConflict):
		return store.Image{}, nil, false, s.nameTaken(ctx, pool, im.RelPath)
	case err != nil:
		return store.Image{}, nil, false, err
	}
	if enqueue != nil {
		enqueue(created.ID)
	}
	jv, err := jobView(ctx, s.Store, created, false)
	if err != nil {
		return store.Image{}, nil, false, err
	}
	return im, jv, existing, nil
}
