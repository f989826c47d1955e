package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// refreshRig is a control plane with one agent, a local pool, and a
// catalog entry served by a test origin with a SHA256SUMS file.
type refreshRig struct {
	c       *cluster
	o       *origintest.Origin
	f       *origintest.File
	pool    *quarryv1.StoragePool
	dir     string // the pool's directory on disk
	catalog string // the catalog file
}

const refreshEntry = "test-refresh"

func newRefreshRig(t *testing.T, opts ...quarrytest.ServerOption) *refreshRig {
	t.Helper()
	r := &refreshRig{o: origintest.New(t)}
	r.publish(1)
	r.catalog = filepath.Join(t.TempDir(), "catalog.json")
	b, _ := json.Marshal(map[string]any{"entries": []map[string]any{{
		"id": refreshEntry, "name": "Refreshed image", "url": r.f.URL(), "checksumUrl": r.o.URL("/img/SHA256SUMS"), "format": "qcow2",
	}}})
	if err := os.WriteFile(r.catalog, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := quarrytest.StartServer(t, append([]quarrytest.ServerOption{quarrytest.WithCatalog(r.catalog)}, opts...)...)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	r.c = &cluster{s: s, agents: map[string]*quarrytest.Agent{"n1": a}, ids: map[string]string{"n1": a.NodeID}}
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	r.dir = a.Opts.LocalPath("/srv/pool")
	mkdir(t, r.dir)
	r.pool = r.c.createPool(t, "pool", "/srv/pool", false, "n1")
	r.c.waitMounts(t, r.pool.GetId(), map[string]bool{"n1": true})
	return r
}

// publish makes the origin serve build seed of the image, with its line
// in the checksum file: new content, new validators.
func (r *refreshRig) publish(seed uint64) {
	r.f = r.o.Add("/img/test.img", origintest.QCOW2(3*mib, 1<<30, seed))
	r.o.AddChecksumFile("/img/SHA256SUMS", map[string]string{"test.img": r.f.SHA256()})
}

// download fetches the catalog entry into the pool: the first build.
func (r *refreshRig) download(t *testing.T) *quarryv1.Image {
	t.Helper()
	resp, err := r.c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
		CatalogId: refreshEntry, StoragePoolId: r.pool.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, r.c.s, resp.Msg.GetJob().GetId(), 20*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("first download: %v", j)
	}
	// The controller hears the download end and follows the entry.
	quarrytest.Eventually(t, 10*time.Second, func() error {
		st := r.status(t)
		if st == nil || st.GetCurrentImageId() != resp.Msg.GetImage().GetId() {
			return fmt.Errorf("status %v; want image %s current", st, resp.Msg.GetImage().GetId())
		}
		return nil
	})
	return getImage(t, r.c.s, resp.Msg.GetImage().GetId())
}

// status is the entry's status in the pool, nil when there is none.
func (r *refreshRig) status(t *testing.T) *quarryv1.CatalogStatus {
	t.Helper()
	resp, err := r.c.s.Images.GetCatalogStatus(t.Context(), connect.NewRequest(&quarryv1.GetCatalogStatusRequest{CatalogId: refreshEntry}))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range resp.Msg.GetStatuses() {
		if st.GetStoragePoolId() == r.pool.GetId() {
			return st
		}
	}
	return nil
}

// refresh asks for a check now and waits until it and any download it
// started have ended; it returns the status then.
func (r *refreshRig) refresh(t *testing.T) *quarryv1.CatalogStatus {
	t.Helper()
	before := r.status(t).GetLastCheckAt().AsTime()
	if _, err := r.c.s.Images.RefreshCatalog(t.Context(), connect.NewRequest(&quarryv1.RefreshCatalogRequest{CatalogId: refreshEntry})); err != nil {
		t.Fatal(err)
	}
	var st *quarryv1.CatalogStatus
	quarrytest.Eventually(t, 20*time.Second, func() error {
		st = r.status(t)
		if !st.GetLastCheckAt().AsTime().After(before) || st.GetJobId() != "" {
			return fmt.Errorf("not refreshed yet: %v", st)
		}
		return nil
	})
	return st
}

func buildNames(st *quarryv1.CatalogStatus) []string {
	var out []string
	for _, b := range st.GetBuilds() {
		out = append(out, b.GetImageName())
	}
	return out
}

// TestCatalogRefreshNewBuildsAndRetention: a check of an unchanged origin
// is conditional and downloads nothing (304); a new file and checksum file
// upstream are downloaded next to the current image, named with the build
// date, and become current; with --catalog-keep 2 a third build deletes
// the oldest — file and record — and only it. The schedule survives a
// control-plane restart.
func TestCatalogRefreshNewBuildsAndRetention(t *testing.T) {
	r := newRefreshRig(t, quarrytest.WithCatalogRefresh(time.Hour, 2))
	first := r.download(t)
	st := r.status(t)
	if st.GetNextCheckAt() == nil || st.GetLastCheckAt() != nil || st.GetCurrentImageName() != "test-refresh.img" {
		t.Fatalf("status after the first download: %v", st)
	}

	// First check: validators not known yet, the digest says unchanged.
	st = r.refresh(t)
	if st.GetError() != "" || st.GetCurrentImageId() != first.GetId() || !strings.Contains(st.GetResult(), "unchanged") {
		t.Fatalf("first check: %v", st)
	}
	// Second check: conditional, answered 304, nothing fetched.
	served, notModified := r.f.BytesServed(), r.f.NotModified()
	st = r.refresh(t)
	if !strings.Contains(st.GetResult(), "304 Not Modified") || r.f.NotModified() != notModified+1 || r.f.BytesServed() != served {
		t.Fatalf("conditional check: %v; 304s %d → %d, bytes served %d → %d", st, notModified, r.f.NotModified(), served, r.f.BytesServed())
	}
	if ims := listImages(t, r.c.s, r.pool.GetId()); len(ims) != 1 {
		t.Fatalf("an unchanged upstream added images: %v", ims)
	}

	// A new build upstream: downloaded next to the first, then current.
	r.publish(2)
	st = r.refresh(t)
	second := getImage(t, r.c.s, st.GetCurrentImageId())
	if st.GetError() != "" || second.GetId() == first.GetId() || second.GetState() != quarryv1.ImageState_IMAGE_STATE_READY ||
		second.GetDigest() != "sha256:"+r.f.SHA256() || !strings.HasPrefix(second.GetName(), "test-refresh-2025") ||
		!strings.HasSuffix(second.GetName(), ".img") || st.GetCurrentBuild() == "" || !strings.Contains(second.GetName(), st.GetCurrentBuild()) {
		t.Fatalf("after a new build: status %v, current image %v", st, second)
	}
	if got := buildNames(st); !slices.Equal(got, []string{second.GetName(), first.GetName()}) {
		t.Errorf("builds %v; want the new one, then the first", got)
	}
	if !hasEvent(t, r.c.s, st.GetBuilds()[0].GetImageId(), "catalog refresh: upstream changed") {
		t.Errorf("the new build's job history does not say why it was downloaded")
	}

	// A third build: the first goes, the second stays.
	r.publish(3)
	st = r.refresh(t)
	third := getImage(t, r.c.s, st.GetCurrentImageId())
	if got := buildNames(st); !slices.Equal(got, []string{third.GetName(), second.GetName()}) || third.GetId() == second.GetId() {
		t.Fatalf("builds %v after a third build; want %s, %s", got, third.GetName(), second.GetName())
	}
	if !strings.Contains(st.GetResult(), "deleted old build "+first.GetName()) {
		t.Errorf("result %q does not say the oldest build was deleted", st.GetResult())
	}
	if _, err := r.c.s.Images.GetImage(t.Context(), connect.NewRequest(&quarryv1.GetImageRequest{Id: first.GetId()})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("the oldest build's record: %v; want not found", err)
	}
	files := entries(t, filepath.Join(r.dir, "images"))
	if !slices.Equal(files, []string{second.GetName(), third.GetName()}) {
		t.Errorf("images/ holds %v; want %s and %s", files, second.GetName(), third.GetName())
	}

	// Restart-safe: the schedule and the state are the same after a restart.
	next := st.GetNextCheckAt().AsTime()
	r.c.s.Stop()
	s2 := quarrytest.StartServer(t, quarrytest.WithDataDir(r.c.s.DataDir), quarrytest.WithCatalog(r.catalog), quarrytest.WithCatalogRefresh(time.Hour, 2))
	r.c.s = s2
	after := r.status(t)
	if !after.GetNextCheckAt().AsTime().Equal(next) || after.GetCurrentImageId() != third.GetId() || after.GetResult() != st.GetResult() {
		t.Errorf("after a restart: %v; want next check %v and %s current", after, next, third.GetName())
	}
}

// TestCatalogRefreshFailureKeepsCurrent: an origin that fails while the new
// build downloads (cut mid-way, then corrupt bytes) or while it is checked (the
// checksum file 503) leaves the current image as it was, nothing of the new
// build on disk or in the library, and the error in the status; once the
// origin is well again the next refresh succeeds.
func TestCatalogRefreshFailureKeepsCurrent(t *testing.T) {
	r := newRefreshRig(t, quarrytest.WithCatalogRefresh(0, 2), quarrytest.WithDownloadRetries(2, 100*time.Millisecond))
	first := r.download(t)

	// The new build's connection drops mid-way, and what it resumes with
	// is corrupt: the download fails verification.
	r.publish(2)
	r.f.DropAt(mib, 1)
	r.f.WrongBytes(2 * mib)
	st := r.refresh(t)
	if st.GetCurrentImageId() != first.GetId() || !strings.Contains(st.GetError(), "failed") ||
		!strings.Contains(st.GetError(), "current image test-refresh.img is unchanged") {
		t.Fatalf("after a failed refresh: %v", st)
	}
	if got := buildNames(st); !slices.Equal(got, []string{first.GetName()}) {
		t.Errorf("builds %v; want only the first", got)
	}
	if ims := listImages(t, r.c.s, r.pool.GetId()); len(ims) != 1 || ims[0].GetId() != first.GetId() ||
		ims[0].GetState() != quarryv1.ImageState_IMAGE_STATE_READY {
		t.Errorf("library after a failed refresh: %v; want only the first image, READY", ims)
	}
	if left := entries(t, filepath.Join(r.dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	if files := entries(t, filepath.Join(r.dir, "images")); !slices.Equal(files, []string{first.GetName()}) {
		t.Errorf("images/ holds %v", files)
	}
	if st.GetNextCheckAt() != nil {
		t.Errorf("periodic checks are off, yet a next check is shown: %v", st.GetNextCheckAt())
	}

	// The checksum file fails during the check: nothing starts.
	r.f.Clear()
	r.o.File("/img/SHA256SUMS").Status(503, 1, 0)
	st = r.refresh(t)
	if st.GetCurrentImageId() != first.GetId() || !strings.Contains(st.GetError(), "checking upstream failed") || !strings.Contains(st.GetError(), "503") {
		t.Fatalf("after a failed check: %v", st)
	}

	useToken(r.c.s.URL, r.c.s.AdminToken)
	if out := mustQuarry(t, r.c.s.URL, "catalog", "status"); !strings.Contains(out, "test-refresh.img") ||
		!strings.Contains(out, "error: checking upstream failed") || !strings.Contains(out, "Periodic checks are off") {
		t.Errorf("quarry catalog status:\n%s", out)
	}

	if out := mustQuarry(t, r.c.s.URL, "__complete", "catalog", "refresh", ""); !strings.HasPrefix(out, refreshEntry+"\t") {
		t.Errorf("completing quarry catalog refresh: %q; want %s first", out, refreshEntry)
	}

	// Well again: the new build arrives and the error is gone (asked for
	// the way an operator does).
	out := mustQuarry(t, r.c.s.URL, "catalog", "refresh", refreshEntry, "--wait")
	st = r.status(t)
	if st.GetError() != "" || st.GetCurrentImageId() == first.GetId() ||
		getImage(t, r.c.s, st.GetCurrentImageId()).GetDigest() != "sha256:"+r.f.SHA256() {
		t.Fatalf("after the origin recovered: %v", st)
	}
	if !strings.Contains(out, st.GetCurrentImageName()) || !strings.Contains(out, "new build") {
		t.Errorf("quarry catalog refresh --wait:\n%s", out)
	}
}

// TestCatalogRefreshPeriodic: with --catalog-refresh set, a new build is
// found and fetched when its check is due, with nobody asking; an entry in
// no pool cannot be refreshed, and says how to add it.
func TestCatalogRefreshPeriodic(t *testing.T) {
	r := newRefreshRig(t, quarrytest.WithCatalogRefresh(time.Second, 2))
	first := r.download(t)
	r.publish(2)
	quarrytest.Eventually(t, 20*time.Second, func() error {
		st := r.status(t)
		if st.GetCurrentImageId() == first.GetId() || st.GetJobId() != "" {
			return fmt.Errorf("no new build yet: %v", st)
		}
		return nil
	})
	_, err := r.c.s.Images.RefreshCatalog(t.Context(), connect.NewRequest(&quarryv1.RefreshCatalogRequest{CatalogId: "debian-12"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "quarry image download --catalog debian-12") {
		t.Errorf("refreshing an entry in no pool: %v", err)
	}
	_, err = r.c.s.Images.RefreshCatalog(t.Context(), connect.NewRequest(&quarryv1.RefreshCatalogRequest{CatalogId: "debian-1"}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "did you mean") {
		t.Errorf("refreshing an unknown entry: %v", err)
	}
}

func listImages(t *testing.T, s *quarrytest.Server, poolID string) []*quarryv1.Image {
	t.Helper()
	resp, err := s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: poolID}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetImages()
}

// hasEvent reports whether a job of the image has a history entry
// containing text.
func hasEvent(t *testing.T, s *quarrytest.Server, imageID, text string) bool {
	t.Helper()
	resp, err := s.Jobs.ListJobs(t.Context(), connect.NewRequest(&quarryv1.ListJobsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range resp.Msg.GetJobs() {
		if j.GetImageId() != imageID {
			continue
		}
		g, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: j.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range g.Msg.GetJob().GetHistory() {
			if strings.Contains(e.GetMessage(), text) {
				return true
			}
		}
	}
	return false
}

// TestCatalogRefreshSurvivesRestart: a control plane that stops while a
// new build downloads picks the refresh up again: the job resumes and,
// once it ends, the new build becomes current.
func TestCatalogRefreshSurvivesRestart(t *testing.T) {
	r := newRefreshRig(t, quarrytest.WithCatalogRefresh(0, 2))
	first := r.download(t)
	r.publish(2)
	r.f.RateLimit(mib)
	if _, err := r.c.s.Images.RefreshCatalog(t.Context(), connect.NewRequest(&quarryv1.RefreshCatalogRequest{CatalogId: refreshEntry})); err != nil {
		t.Fatal(err)
	}
	var jobID string
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if jobID = r.status(t).GetJobId(); jobID == "" {
			return fmt.Errorf("no refresh download yet")
		}
		return nil
	})
	waitProgress(t, r.c.s, jobID, mib/2)
	r.c.s.Stop()
	r.c.s = quarrytest.StartServer(t, quarrytest.WithDataDir(r.c.s.DataDir), quarrytest.WithCatalog(r.catalog), quarrytest.WithCatalogRefresh(0, 2))
	r.f.RateLimit(0)
	var st *quarryv1.CatalogStatus
	quarrytest.Eventually(t, 30*time.Second, func() error {
		st = r.status(t)
		if st.GetJobId() != "" || st.GetCurrentImageId() == first.GetId() {
			return fmt.Errorf("refresh not done: %v", st)
		}
		return nil
	})
	if j := getJob(t, r.c.s, jobID); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetImageId() != st.GetCurrentImageId() {
		t.Errorf("refresh job %v; want SUCCEEDED with the current image", j)
	}
	if got := buildNames(st); len(got) != 2 || got[1] != first.GetName() || st.GetError() != "" {
		t.Errorf("after the restart: %v", st)
	}
}
