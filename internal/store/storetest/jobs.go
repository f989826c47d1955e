package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// download returns a PENDING image at iso/<imageID>.iso in pool poolID and
// the QUEUED job that downloads source into it, with every field a new job
// has set, so round trips are checked field by field.
func download(jobID, imageID, poolID, source string) (store.Image, store.Job) {
	im := image(imageID, poolID, "iso/"+imageID+".iso")
	im.State, im.Origin, im.SHA256, im.SizeBytes = store.ImagePending, store.OriginDownloaded, "", 0
	j := store.Job{
		ID:          jobID,
		Kind:        "download",
		State:       store.JobQueued,
		ImageID:     imageID,
		PoolID:      poolID,
		Source:      source,
		URL:         "https://mirror.example/" + source + ".iso",
		Checksum:    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		ChecksumURL: "https://mirror.example/SHA256SUMS",
		// A download's own bandwidth limit is set once, at creation.
		MaxBytesPerSec: 50 << 20,
		Message:        "queued",
		CreatedAt:      t0,
		UpdatedAt:      t0,
	}
	return im, j
}

func mustCreateDownload(t *testing.T, s store.Store, im store.Image, j store.Job) store.Job {
	t.Helper()
	got, err := s.CreateDownload(context.Background(), im, j)
	if err != nil {
		t.Fatalf("CreateDownload(%s): %v", j.ID, err)
	}
	return got
}

func mustGetJob(t *testing.T, s store.Store, id string) store.Job {
	t.Helper()
	j, err := s.GetJob(context.Background(), id)
	if err != nil {
		t.Fatalf("GetJob(%s): %v", id, err)
	}
	return j
}

func mustListJobs(t *testing.T, s store.Store, f store.JobFilter) []store.Job {
	t.Helper()
	js, err := s.ListJobs(context.Background(), f)
	if err != nil {
		t.Fatalf("ListJobs(%+v): %v", f, err)
	}
	return js
}

func mustClaimJob(t *testing.T, s store.Store, id, nodeID string, when time.Time) store.Job {
	t.Helper()
	j, err := s.ClaimJob(context.Background(), id, nodeID, when)
	if err != nil {
		t.Fatalf("ClaimJob(%s, %s): %v", id, nodeID, err)
	}
	return j
}

func mustListJobEvents(t *testing.T, s store.Store, jobID string) []store.JobEvent {
	t.Helper()
	es, err := s.ListJobEvents(context.Background(), jobID)
	if err != nil {
		t.Fatalf("ListJobEvents(%s): %v", jobID, err)
	}
	return es
}

// finished returns j as its owner reports it done in state st.
func finished(j store.Job, st store.JobState, d time.Duration) store.Job {
	j.State, j.Message, j.Phase = st, "finished "+string(st), ""
	j.UpdatedAt, j.FinishedAt = at(d), at(d)
	return j
}

// wantFailure is wantErr for errors that may be unclassed (class nil):
// invalid arguments, which no caller needs to tell apart.
func wantFailure(t *testing.T, op string, err, class error, details ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want an error", op)
	}
	if class == nil {
		class = err
	}
	wantErr(t, op, err, class, details...)
}

func testJobs(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("create download and get", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "catalog:ubuntu-24.04")
		got := mustCreateDownload(t, s, im, j)
		wantEqual(t, "CreateDownload", got, j)
		wantEqual(t, "GetJob", mustGetJob(t, s, "j1"), j)
		wantEqual(t, "GetImage", mustGetImage(t, s, "im1"), im)
	})

	t.Run("create download fills in defaults", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "catalog:ubuntu-24.04")
		inIm, inJob := im, j
		inIm.State, inJob.State, inJob.Kind, inJob.ImageID, inJob.PoolID = "", "", "", "", ""
		wantEqual(t, "CreateDownload", mustCreateDownload(t, s, inIm, inJob), j)
		wantEqual(t, "GetJob", mustGetJob(t, s, "j1"), j)
		wantEqual(t, "GetImage", mustGetImage(t, s, "im1"), im)
	})

	t.Run("times come back in UTC, to the microsecond", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "src")
		j.CreatedAt = time.Date(2025, 3, 4, 7, 6, 7, 123456789, time.FixedZone("CEST", 2*3600))
		got := mustCreateDownload(t, s, im, j).CreatedAt
		if got.Location() != time.UTC || !got.Equal(j.CreatedAt.Truncate(time.Microsecond)) {
			t.Errorf("CreatedAt = %v, want %v in UTC", got, j.CreatedAt.Truncate(time.Microsecond))
		}
	})

	t.Run("rejected creates insert nothing", func(t *testing.T) {
		tests := []struct {
			name    string
			edit    func(*store.Image, *store.Job)
			class   error // nil: any error
			details []string
		}{
			{"image not pending", func(im *store.Image, _ *store.Job) { im.State = store.ImageReady }, nil, []string{"im2", "PENDING"}},
			{"job not queued", func(_ *store.Image, j *store.Job) { j.State = store.JobRunning }, nil, []string{"j2", "QUEUED"}},
			{"job for another image", func(_ *store.Image, j *store.Job) { j.ImageID = "im1" }, nil, []string{"j2", "im1"}},
			{"job in another pool", func(_ *store.Image, j *store.Job) { j.PoolID = "p2" }, nil, []string{"j2", "p2"}},
			{"no source", func(_ *store.Image, j *store.Job) { j.Source = "" }, nil, []string{"j2"}},
			{"unknown pool", func(im *store.Image, j *store.Job) { im.PoolID, j.PoolID = "px", "px" }, store.ErrNotFound, []string{"px"}},
			{"image path taken", func(im *store.Image, _ *store.Job) { im.RelPath = "iso/im1.iso" }, store.ErrConflict, []string{`pool "pool-p1"`, "iso/im1.iso"}},
			{"image id taken", func(im *store.Image, j *store.Job) { im.ID, j.ImageID = "im1", "im1" }, store.ErrConflict, []string{"im1"}},
			{"job id taken", func(_ *store.Image, j *store.Job) { j.ID = "j1" }, store.ErrConflict, []string{"j1"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				mustCreatePool(t, s, pool("p1"))
				mustCreatePool(t, s, pool("p2"))
				firstIm, firstJob := download("j1", "im1", "p1", "src-1")
				firstJob = mustCreateDownload(t, s, firstIm, firstJob)
				im, j := download("j2", "im2", "p1", "src-2")
				tt.edit(&im, &j)
				got, err := s.CreateDownload(ctx, im, j)
				wantFailure(t, "CreateDownload", err, tt.class, tt.details...)
				wantEqual(t, "job returned by a rejected create", got, store.Job{})
				wantEqual(t, "ListJobs after rejected create", mustListJobs(t, s, store.JobFilter{}), []store.Job{firstJob})
				wantEqual(t, "ListImages after rejected create", mustListImages(t, s, store.ImageFilter{}), []store.Image{firstIm})
			})
		}
	})

	t.Run("one active job per source and pool", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		const src = "catalog:debian-13"
		im1, j1 := download("j1", "im1", "p1", src)
		mustCreateDownload(t, s, im1, j1)

		again := func(t *testing.T, jobID, imageID string) (store.Job, error) {
			t.Helper()
			im, j := download(jobID, imageID, "p1", src)
			return s.CreateDownload(ctx, im, j)
		}
		wantBlocked := func(t *testing.T, jobID, imageID string, by store.Job) {
			t.Helper()
			got, err := again(t, jobID, imageID)
			wantErr(t, "CreateDownload of a running source", err, store.ErrConflict,
				"a download of "+src+` into pool "pool-p1" is already running (job `+by.ID+")")
			wantEqual(t, "job returned with ErrConflict", got, by)
			wantNoImage(t, s, imageID)
			if _, err := s.GetJob(ctx, jobID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetJob(%s) of a refused download: %v, want ErrNotFound", jobID, err)
			}
		}

		// QUEUED blocks.
		wantBlocked(t, "j2", "im2", mustGetJob(t, s, "j1"))
		// RUNNING blocks.
		running := mustClaimJob(t, s, "j1", "n1", at(time.Minute))
		wantBlocked(t, "j2", "im2", running)

		// The same source into another pool, and another source into the
		// same pool, are other downloads.
		imP2, jP2 := download("j3", "im3", "p2", src)
		mustCreateDownload(t, s, imP2, jP2)
		imOther, jOther := download("j4", "im4", "p1", "catalog:other")
		mustCreateDownload(t, s, imOther, jOther)

		// A finished job does not block: FAILED, then CANCELLED.
		if err := s.FinishJob(ctx, finished(running, store.JobFailed, 2*time.Minute), mustGetImage(t, s, "im1")); err != nil {
			t.Fatal(err)
		}
		im5, j5 := download("j5", "im5", "p1", src)
		mustCreateDownload(t, s, im5, j5)
		wantBlocked(t, "j6", "im6", mustGetJob(t, s, "j5"))
		if err := s.FinishJob(ctx, finished(j5, store.JobCancelled, 3*time.Minute), im5); err != nil {
			t.Fatal(err)
		}
		im7, j7 := download("j7", "im7", "p1", src)
		mustCreateDownload(t, s, im7, j7)
		if got := len(mustListJobs(t, s, store.JobFilter{PoolID: "p1"})); got != 4 {
			t.Errorf("%d jobs in pool p1, want 4", got)
		}
	})

	t.Run("a failed download's image is replaced, nothing else", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		const path = "images/mine.raw"
		failedIm, failedJob := download("j1", "im1", "p1", "https://a.example/mine.raw")
		failedIm.RelPath = path
		failedJob = mustCreateDownload(t, s, failedIm, failedJob)
		failedIm.State, failedIm.StateReason = store.ImageError, "the origin answered 404"
		if err := s.FinishJob(ctx, finished(failedJob, store.JobFailed, time.Minute), failedIm); err != nil {
			t.Fatal(err)
		}

		// Another download of the name replaces the ERROR record; the
		// failed job and its history stay.
		im2, j2 := download("j2", "im2", "p1", "https://b.example/mine.raw")
		im2.RelPath = path
		mustCreateDownload(t, s, im2, j2)
		wantNoImage(t, s, "im1")
		if got := mustGetJob(t, s, "j1"); got.State != store.JobFailed {
			t.Errorf("the failed job after its image was replaced: %+v", got)
		}

		// Not replaced: an image in another state, an ERROR image with a
		// digest (a file is there), an ERROR image an active job works on.
		kept := []struct {
			name string
			edit func(*store.Image)
			job  bool
		}{
			{"READY", func(im *store.Image) { im.State = store.ImageReady }, false},
			{"ERROR with a digest", func(im *store.Image) { im.State, im.SHA256 = store.ImageError, "00ff" }, false},
			{"ERROR with an active job", func(im *store.Image) { im.State = store.ImageError }, true},
		}
		for i, tt := range kept {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				mustCreatePool(t, s, pool("p1"))
				im, j := download("j1", "im1", "p1", "src-1")
				im.RelPath = path
				mustCreateDownload(t, s, im, j)
				if !tt.job {
					if err := s.FinishJob(ctx, finished(mustGetJob(t, s, "j1"), store.JobFailed, time.Minute), im); err != nil {
						t.Fatal(err)
					}
				}
				tt.edit(&im)
				if err := s.UpdateImage(ctx, im); err != nil {
					t.Fatal(err)
				}
				im2, j2 := download("j2", "im2", "p1", fmt.Sprintf("src-%d", i+2))
				im2.RelPath = path
				_, err := s.CreateDownload(ctx, im2, j2)
				wantErr(t, "CreateDownload over "+tt.name, err, store.ErrConflict, path)
				wantEqual(t, "the image kept", mustGetImage(t, s, "im1"), im)
			})
		}
	})

	t.Run("list newest first, and filtered", func(t *testing.T) {
		s := open(t)
		if got := mustListJobs(t, s, store.JobFilter{}); len(got) != 0 {
			t.Fatalf("ListJobs on empty store = %+v", got)
		}
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		// j3 and j4 are created in the same microsecond: id breaks the tie.
		specs := []struct {
			id, pool string
			created  time.Duration
			node     string
			final    store.JobState
		}{
			{"j1", "p1", 0, "", ""},
			{"j2", "p1", time.Minute, "n1", ""},
			{"j3", "p2", 2 * time.Minute, "n2", store.JobFailed},
			{"j4", "p2", 2 * time.Minute, "n1", ""},
			{"j5", "p1", 3 * time.Minute, "n2", store.JobSucceeded},
		}
		for _, sp := range specs {
			im, j := download(sp.id, "im-"+sp.id, sp.pool, "src-"+sp.id)
			j.CreatedAt = at(sp.created)
			mustCreateDownload(t, s, im, j)
			if sp.node == "" {
				continue
			}
			j = mustClaimJob(t, s, sp.id, sp.node, at(sp.created+time.Second))
			if sp.final != "" {
				if err := s.FinishJob(ctx, finished(j, sp.final, sp.created+time.Minute), mustGetImage(t, s, im.ID)); err != nil {
					t.Fatal(err)
				}
			}
		}
		j := map[string]store.Job{}
		for _, sp := range specs {
			j[sp.id] = mustGetJob(t, s, sp.id)
		}
		active := []store.JobState{store.JobQueued, store.JobRunning}
		tests := []struct {
			name string
			f    store.JobFilter
			want []store.Job
		}{
			{"everything", store.JobFilter{}, []store.Job{j["j5"], j["j4"], j["j3"], j["j2"], j["j1"]}},
			{"active", store.JobFilter{States: active}, []store.Job{j["j4"], j["j2"], j["j1"]}},
			{"one state", store.JobFilter{States: []store.JobState{store.JobFailed}}, []store.Job{j["j3"]}},
			{"state none has", store.JobFilter{States: []store.JobState{store.JobCancelled}}, nil},
			{"pool", store.JobFilter{PoolID: "p2"}, []store.Job{j["j4"], j["j3"]}},
			{"node", store.JobFilter{NodeID: "n1"}, []store.Job{j["j4"], j["j2"]}},
			{"states, pool and node", store.JobFilter{States: active, PoolID: "p1", NodeID: "n1"}, []store.Job{j["j2"]}},
			{"unknown pool", store.JobFilter{PoolID: "px"}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantEqual(t, "ListJobs", mustListJobs(t, s, tt.f), tt.want)
			})
		}
	})

	t.Run("update job", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		im, j := download("j1", "im1", "p1", "src")
		mustCreateDownload(t, s, im, j)
		other, otherJob := download("j2", "im2", "p1", "src-2")
		mustCreateDownload(t, s, other, otherJob)

		want := j
		want.State, want.NodeID, want.Fence = store.JobRunning, "n1", 0
		want.Phase, want.BytesDone, want.BytesTotal, want.BytesPerSec = "downloading", 1<<20, 3<<30, 12.5e6
		want.Attempts, want.Message, want.CancelRequested = 2, "retrying after a reset", true
		want.FailuresInRow, want.RetrySince, want.NextAttemptAt = 1, at(40*time.Second), at(2*time.Minute)
		want.UpdatedAt, want.StartedAt = at(time.Minute), at(30*time.Second)
		// Fields UpdateJob must not touch are sent changed, too.
		in := want
		in.Kind, in.ImageID, in.PoolID, in.Source = "other", "im2", "p2", "src-2"
		in.URL, in.Checksum, in.ChecksumURL, in.CreatedAt = "https://x.example/", "sha512:00", "https://x.example/SUMS", at(time.Hour)
		in.MaxBytesPerSec = 1
		if err := s.UpdateJob(ctx, in); err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetJob after update", mustGetJob(t, s, "j1"), want)
		wantEqual(t, "other job after update", mustGetJob(t, s, "j2"), otherJob)

		// Zero values clear fields rather than keeping the old ones; only a
		// requested cancel stays.
		cleared := store.Job{ID: "j1", Kind: j.Kind, State: store.JobQueued, ImageID: j.ImageID, PoolID: j.PoolID,
			Source: j.Source, URL: j.URL, Checksum: j.Checksum, ChecksumURL: j.ChecksumURL, CreatedAt: j.CreatedAt,
			MaxBytesPerSec: j.MaxBytesPerSec, CancelRequested: true}
		if err := s.UpdateJob(ctx, store.Job{ID: "j1", State: store.JobQueued}); err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetJob after clearing update", mustGetJob(t, s, "j1"), cleared)

		// A higher fence takes the job over; the lower one is then stale.
		takeover := cleared
		takeover.Fence, takeover.NodeID, takeover.State = 5, "n2", store.JobRunning
		if err := s.UpdateJob(ctx, takeover); err != nil {
			t.Fatalf("UpdateJob with a higher fence: %v", err)
		}
		wantEqual(t, "GetJob after takeover", mustGetJob(t, s, "j1"), takeover)
		stale := cleared
		stale.Message = "stale"
		wantErr(t, "UpdateJob with a lower fence", s.UpdateJob(ctx, stale), store.ErrConflict, "job j1 was taken over (fence 5 > 0)")
		wantEqual(t, "GetJob after refused update", mustGetJob(t, s, "j1"), takeover)

		// A finished job no longer changes.
		if err := s.UpdateJob(ctx, finished(takeover, store.JobCancelled, time.Hour)); err != nil {
			t.Fatal(err)
		}
		done := mustGetJob(t, s, "j1")
		revived := takeover
		revived.Message = "revived"
		wantErr(t, "UpdateJob of a finished job", s.UpdateJob(ctx, revived), store.ErrConflict, "j1", "CANCELLED")
		wantEqual(t, "GetJob after refused update", mustGetJob(t, s, "j1"), done)
	})

	t.Run("not found", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "src")
		mustCreateDownload(t, s, im, j)
		jx := j
		jx.ID = "jx"
		tests := []struct {
			name string
			op   func() error
		}{
			{"GetJob", func() error { _, err := s.GetJob(ctx, "jx"); return err }},
			{"UpdateJob", func() error { return s.UpdateJob(ctx, jx) }},
			{"ClaimJob", func() error { _, err := s.ClaimJob(ctx, "jx", "n1", t0); return err }},
			{"FinishJob", func() error { return s.FinishJob(ctx, finished(jx, store.JobSucceeded, time.Hour), im) }},
			{"AppendJobEvent", func() error { return s.AppendJobEvent(ctx, store.JobEvent{JobID: "jx", Time: t0}) }},
			{"ListJobEvents", func() error { _, err := s.ListJobEvents(ctx, "jx"); return err }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, tt.name, tt.op(), store.ErrNotFound, "jx")
			})
		}
		wantEqual(t, "job after not-found calls", mustGetJob(t, s, "j1"), j)
		wantEqual(t, "image after not-found calls", mustGetImage(t, s, "im1"), im)
	})
}

func testJobFencing(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("each claim raises the fence", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "src")
		mustCreateDownload(t, s, im, j)

		first := mustClaimJob(t, s, "j1", "n1", at(time.Minute))
		want := j
		want.State, want.NodeID, want.Fence, want.StartedAt, want.UpdatedAt = store.JobRunning, "n1", 1, at(time.Minute), at(time.Minute)
		wantEqual(t, "first ClaimJob", first, want)

		// The second claim keeps the first start.
		second := mustClaimJob(t, s, "j1", "n2", at(2*time.Minute))
		want.NodeID, want.Fence, want.UpdatedAt = "n2", 2, at(2*time.Minute)
		wantEqual(t, "second ClaimJob", second, want)
		wantEqual(t, "GetJob after claims", mustGetJob(t, s, "j1"), want)

		// The first owner, still holding fence 1, is refused.
		progress := first
		progress.BytesDone, progress.Phase = 100, "downloading"
		wantErr(t, "UpdateJob with fence 1", s.UpdateJob(ctx, progress), store.ErrConflict, "job j1 was taken over (fence 2 > 1)")
		wantEqual(t, "GetJob after refused update", mustGetJob(t, s, "j1"), want)

		// The new owner is not.
		progress = second
		progress.BytesDone, progress.Phase = 100, "downloading"
		if err := s.UpdateJob(ctx, progress); err != nil {
			t.Fatalf("UpdateJob with fence 2: %v", err)
		}
		wantEqual(t, "GetJob after update", mustGetJob(t, s, "j1"), progress)
	})

	t.Run("claim needs a node", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "src")
		mustCreateDownload(t, s, im, j)
		if _, err := s.ClaimJob(ctx, "j1", "", t0); err == nil {
			t.Error("ClaimJob with no node succeeded")
		}
		wantEqual(t, "GetJob after refused claim", mustGetJob(t, s, "j1"), j)
	})

	t.Run("finished jobs cannot be claimed", func(t *testing.T) {
		for _, st := range []store.JobState{store.JobSucceeded, store.JobFailed, store.JobCancelled} {
			t.Run(string(st), func(t *testing.T) {
				s := open(t)
				mustCreatePool(t, s, pool("p1"))
				im, j := download("j1", "im1", "p1", "src")
				mustCreateDownload(t, s, im, j)
				j = mustClaimJob(t, s, "j1", "n1", at(time.Minute))
				if err := s.FinishJob(ctx, finished(j, st, 2*time.Minute), im); err != nil {
					t.Fatal(err)
				}
				done := mustGetJob(t, s, "j1")
				_, err := s.ClaimJob(ctx, "j1", "n2", at(3*time.Minute))
				wantErr(t, "ClaimJob of a finished job", err, store.ErrConflict, "j1", string(st))
				wantEqual(t, "GetJob after refused claim", mustGetJob(t, s, "j1"), done)
			})
		}
	})
}

func testFinishJob(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	// setup makes pool p1 with download j1 (image im1) claimed by n1 and
	// then n2 (fence 2), and download j2 (image im2), queued.
	setup := func(t *testing.T) (s store.Store, j1 store.Job, im1 store.Image) {
		s = open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		im1, j1 = download("j1", "im1", "p1", "src-1")
		mustCreateDownload(t, s, im1, j1)
		im2, j2 := download("j2", "im2", "p1", "src-2")
		mustCreateDownload(t, s, im2, j2)
		mustClaimJob(t, s, "j1", "n1", at(time.Minute))
		j1 = mustClaimJob(t, s, "j1", "n2", at(2*time.Minute))
		return s, j1, im1
	}
	ready := func(im store.Image) store.Image {
		im.State, im.SizeBytes, im.SHA256, im.Format = store.ImageReady, 6<<30, "ab12", "iso"
		im.UpdatedAt = at(time.Hour)
		return im
	}

	t.Run("job and image change together", func(t *testing.T) {
		s, j1, im1 := setup(t)
		wantJob := finished(j1, store.JobSucceeded, time.Hour)
		wantJob.BytesDone, wantJob.BytesTotal = 6<<30, 6<<30
		wantIm := ready(im1)
		// Fields that never change on an image are sent changed, too; the
		// path is the one sent (an upload ends where its node put it).
		wantIm.RelPath = "iso/elsewhere.iso"
		inIm := wantIm
		inIm.PoolID, inIm.CreatedAt = "p2", at(time.Minute)
		if err := s.FinishJob(ctx, wantJob, inIm, "done", "and said so"); err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetJob after finish", mustGetJob(t, s, "j1"), wantJob)
		// The history says why, from the same transaction.
		events, err := s.ListJobEvents(ctx, "j1")
		if err != nil || len(events) < 2 || events[len(events)-2].Message != "done" || events[len(events)-1].Message != "and said so" ||
			!events[len(events)-1].Time.Equal(wantJob.FinishedAt) {
			t.Errorf("history after finish = %+v, %v; want it to end with the two messages, at the finish", events, err)
		}
		wantEqual(t, "GetImage after finish", mustGetImage(t, s, "im1"), wantIm)
		// Finishing again is refused: the job is no longer active.
		again := finished(wantJob, store.JobFailed, 2*time.Hour)
		wantErr(t, "FinishJob twice", s.FinishJob(ctx, again, ready(wantIm)), store.ErrConflict, "j1", "SUCCEEDED")
		wantEqual(t, "GetJob after second finish", mustGetJob(t, s, "j1"), wantJob)
	})

	refused := []struct {
		name    string
		edit    func(j *store.Job, im *store.Image)
		class   error // nil: any error
		details []string
	}{
		{"stale fence", func(j *store.Job, _ *store.Image) { j.Fence = 1 }, store.ErrConflict, []string{"job j1 was taken over (fence 2 > 1)"}},
		{"state not final", func(j *store.Job, _ *store.Image) { j.State = store.JobRunning }, nil, []string{"j1", "RUNNING"}},
		{"no state", func(j *store.Job, _ *store.Image) { j.State = "" }, nil, []string{"j1"}},
		{"another job's image", func(_ *store.Job, im *store.Image) { im.ID = "im2" }, nil, []string{"j1", "im2"}},
		{"no image", func(_ *store.Job, im *store.Image) { im.ID = "" }, nil, []string{"j1"}},
	}
	for _, tt := range refused {
		t.Run("neither changes: "+tt.name, func(t *testing.T) {
			s, j1, im1 := setup(t)
			beforeJobs := mustListJobs(t, s, store.JobFilter{})
			beforeIms := mustListImages(t, s, store.ImageFilter{})
			j, im := finished(j1, store.JobSucceeded, time.Hour), ready(im1)
			tt.edit(&j, &im)
			beforeEvents, _ := s.ListJobEvents(ctx, "j1")
			wantFailure(t, "FinishJob", s.FinishJob(ctx, j, im, "must not stay"), tt.class, tt.details...)
			wantEqual(t, "ListJobs after refused finish", mustListJobs(t, s, store.JobFilter{}), beforeJobs)
			afterEvents, _ := s.ListJobEvents(ctx, "j1")
			wantEqual(t, "history after refused finish", afterEvents, beforeEvents)
			wantEqual(t, "ListImages after refused finish", mustListImages(t, s, store.ImageFilter{}), beforeIms)
		})
	}

	t.Run("image gone: neither changes", func(t *testing.T) {
		s, j1, im1 := setup(t)
		if err := s.DeleteImage(ctx, "im1"); err != nil {
			t.Fatal(err)
		}
		err := s.FinishJob(ctx, finished(j1, store.JobSucceeded, time.Hour), ready(im1))
		wantErr(t, "FinishJob of a deleted image", err, store.ErrNotFound, "im1")
		wantEqual(t, "GetJob after refused finish", mustGetJob(t, s, "j1"), j1)
		// The job outlives its image and can still end without it.
		if err := s.UpdateJob(ctx, finished(j1, store.JobCancelled, time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got := mustGetJob(t, s, "j1"); got.State != store.JobCancelled || got.ImageID != "im1" {
			t.Errorf("job after its image was deleted = %+v", got)
		}
	})

	t.Run("discard: the job ends and its image goes together", func(t *testing.T) {
		s, j1, _ := setup(t)
		want := finished(j1, store.JobCancelled, time.Hour)
		if err := s.DiscardJob(ctx, want, "cancelled"); err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetJob after discard", mustGetJob(t, s, "j1"), want)
		if _, err := s.GetImage(ctx, "im1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetImage after discard: %v; want ErrNotFound", err)
		}
		if events, err := s.ListJobEvents(ctx, "j1"); err != nil || len(events) == 0 || events[len(events)-1].Message != "cancelled" {
			t.Errorf("history after discard = %+v, %v; want it to end with the message", events, err)
		}
		wantErr(t, "DiscardJob twice", s.DiscardJob(ctx, finished(want, store.JobFailed, 2*time.Hour)), store.ErrConflict, "j1", "CANCELLED")
	})

	for _, tt := range []struct {
		name    string
		edit    func(t *testing.T, s store.Store, j *store.Job)
		class   error // nil: any error
		details []string
	}{
		{"stale fence", func(_ *testing.T, _ store.Store, j *store.Job) { j.Fence = 1 }, store.ErrConflict, []string{"job j1 was taken over (fence 2 > 1)"}},
		{"state not final", func(_ *testing.T, _ store.Store, j *store.Job) { j.State = store.JobRunning }, nil, []string{"j1", "RUNNING"}},
		{"another job's image", func(_ *testing.T, _ store.Store, j *store.Job) { j.ImageID = "im2" }, nil, []string{"j1", "im2"}},
		{"image gone", func(t *testing.T, s store.Store, _ *store.Job) {
			if err := s.DeleteImage(ctx, "im1"); err != nil {
				t.Fatal(err)
			}
		}, store.ErrNotFound, []string{"im1"}},
	} {
		t.Run("discard refused, nothing changes: "+tt.name, func(t *testing.T) {
			s, j1, _ := setup(t)
			j := finished(j1, store.JobCancelled, time.Hour)
			tt.edit(t, s, &j)
			beforeJobs := mustListJobs(t, s, store.JobFilter{})
			beforeIms := mustListImages(t, s, store.ImageFilter{})
			beforeEvents, _ := s.ListJobEvents(ctx, "j1")
			wantFailure(t, "DiscardJob", s.DiscardJob(ctx, j, "must not stay"), tt.class, tt.details...)
			wantEqual(t, "ListJobs after refused discard", mustListJobs(t, s, store.JobFilter{}), beforeJobs)
			wantEqual(t, "ListImages after refused discard", mustListImages(t, s, store.ImageFilter{}), beforeIms)
			afterEvents, _ := s.ListJobEvents(ctx, "j1")
			wantEqual(t, "history after refused discard", afterEvents, beforeEvents)
		})
	}
}

func testCountRunningJobs(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	mustCreatePool(t, s, pool("p1"))
	got, err := s.CountRunningJobs(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("CountRunningJobs with no jobs = %v, %v; want none", got, err)
	}

	// n1 runs j1 and j2; n2 runs j3, which has not reported a rate yet, and
	// finished j4; j5 is queued and belongs to nobody. j2 was n2's before
	// n1 took it over: it counts for n1 only.
	ims := map[string]store.Image{}
	for i := 1; i <= 5; i++ {
		id := fmt.Sprint(i)
		im, j := download("j"+id, "im"+id, "p1", "src-"+id)
		mustCreateDownload(t, s, im, j)
		ims[j.ID] = im
	}
	rate := func(id, nodeID string, bytesPerSec float64) store.Job {
		t.Helper()
		j := mustClaimJob(t, s, id, nodeID, at(time.Minute))
		j.BytesPerSec, j.Phase = bytesPerSec, "downloading"
		if err := s.UpdateJob(ctx, j); err != nil {
			t.Fatalf("UpdateJob(%s): %v", id, err)
		}
		return j
	}
	rate("j1", "n1", 100)
	rate("j2", "n2", 70)
	rate("j2", "n1", 50)
	rate("j3", "n2", 0)
	j4 := rate("j4", "n2", 1000)
	if err := s.FinishJob(ctx, finished(j4, store.JobSucceeded, time.Hour), ims["j4"]); err != nil {
		t.Fatalf("FinishJob(j4): %v", err)
	}

	got, err = s.CountRunningJobs(ctx)
	if err != nil {
		t.Fatalf("CountRunningJobs: %v", err)
	}
	wantEqual(t, "CountRunningJobs", got, map[string]store.RunningJobs{
		"n1": {Count: 2, BytesPerSec: 150},
		"n2": {Count: 1},
	})
}

func testJobEvents(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("oldest first, per job", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		for _, id := range []string{"1", "2"} {
			im, j := download("j"+id, "im"+id, "p1", "src-"+id)
			mustCreateDownload(t, s, im, j)
		}
		if got := mustListJobEvents(t, s, "j1"); len(got) != 0 {
			t.Fatalf("ListJobEvents of a job without events = %+v", got)
		}
		// Appended out of time order: the history is the order of appends.
		var want1, want2 []store.JobEvent
		for i, d := range []time.Duration{3, 1, 2, 2, 0} {
			e := store.JobEvent{JobID: "j1", Time: at(d * time.Second), Message: fmt.Sprintf("event %d", i)}
			if err := s.AppendJobEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
			want1 = append(want1, e)
			if i%2 == 0 {
				e2 := store.JobEvent{JobID: "j2", Time: at(time.Duration(i) * time.Minute), Message: fmt.Sprintf("j2 event %d", i)}
				if err := s.AppendJobEvent(ctx, e2); err != nil {
					t.Fatal(err)
				}
				want2 = append(want2, e2)
			}
		}
		wantEqual(t, "ListJobEvents(j1)", mustListJobEvents(t, s, "j1"), want1)
		wantEqual(t, "ListJobEvents(j2)", mustListJobEvents(t, s, "j2"), want2)

		// History outlives the image, and the job's end.
		if err := s.DeleteImage(ctx, "im1"); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateJob(ctx, finished(mustGetJob(t, s, "j1"), store.JobCancelled, time.Hour)); err != nil {
			t.Fatal(err)
		}
		last := store.JobEvent{JobID: "j1", Time: at(time.Hour), Message: "cancelled"}
		if err := s.AppendJobEvent(ctx, last); err != nil {
			t.Fatalf("AppendJobEvent to a finished job: %v", err)
		}
		wantEqual(t, "ListJobEvents(j1) after the end", mustListJobEvents(t, s, "j1"), append(want1, last))
	})

	t.Run("bounded to the last 1000", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "src")
		mustCreateDownload(t, s, im, j)
		const n = 1003
		for i := range n {
			if err := s.AppendJobEvent(ctx, store.JobEvent{JobID: "j1", Time: at(time.Duration(i) * time.Millisecond),
				Message: fmt.Sprintf("event %d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		got := mustListJobEvents(t, s, "j1")
		if len(got) != 1000 {
			t.Fatalf("ListJobEvents returned %d events, want the last 1000", len(got))
		}
		if got[0].Message != "event 3" || got[999].Message != fmt.Sprintf("event %d", n-1) {
			t.Errorf("ListJobEvents runs from %q to %q, want event 3 to event %d", got[0].Message, got[999].Message, n-1)
		}
	})
}

// testPoolWithJobs checks that a pool cannot go while a download in it is
// active, and that its finished jobs go with it.
func testPoolWithJobs(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	isos := pool("p1")
	isos.Name = "isos"
	mustCreatePool(t, s, isos)
	mustCreatePool(t, s, pool("p2"))
	im1, j1 := download("j1", "im1", "p1", "src-1")
	mustCreateDownload(t, s, im1, j1)
	imOther, jOther := download("j9", "im9", "p2", "src-1")
	mustCreateDownload(t, s, imOther, jOther)
	if err := s.AppendJobEvent(ctx, store.JobEvent{JobID: "j1", Time: t0, Message: "queued"}); err != nil {
		t.Fatal(err)
	}

	wantErr(t, "DeletePool with a queued download", s.DeletePool(ctx, "p1"), store.ErrInUse,
		`pool "isos" has 1 download running; cancel it first`)
	im2, j2 := download("j2", "im2", "p1", "src-2")
	mustCreateDownload(t, s, im2, j2)
	j2 = mustClaimJob(t, s, "j2", "n1", at(time.Minute))
	wantErr(t, "DeletePool with two downloads", s.DeletePool(ctx, "p1"), store.ErrInUse,
		`pool "isos" has 2 downloads running; cancel them first`)
	wantEqual(t, "GetPool after refused delete", mustGetPool(t, s, "p1"), isos)

	// Once the downloads end, the images still hold the pool.
	if err := s.FinishJob(ctx, finished(j1, store.JobCancelled, time.Hour), im1); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "DeletePool with a running download", s.DeletePool(ctx, "p1"), store.ErrInUse,
		`pool "isos" has 1 download running`)
	if err := s.FinishJob(ctx, finished(j2, store.JobFailed, time.Hour), im2); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "DeletePool with images", s.DeletePool(ctx, "p1"), store.ErrInUse, `pool "isos" still holds 2 image(s)`)
	for _, id := range []string{"im1", "im2"} {
		if err := s.DeleteImage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// Finished jobs and their history go with the pool.
	if err := s.DeletePool(ctx, "p1"); err != nil {
		t.Fatalf("DeletePool with finished jobs only: %v", err)
	}
	for _, id := range []string{"j1", "j2"} {
		wantErr(t, "GetJob after DeletePool", func() error { _, err := s.GetJob(ctx, id); return err }(), store.ErrNotFound, id)
	}
	wantErr(t, "ListJobEvents after DeletePool", func() error { _, err := s.ListJobEvents(ctx, "j1"); return err }(),
		store.ErrNotFound, "j1")
	// Another pool's jobs stay.
	wantEqual(t, "ListJobs after DeletePool", mustListJobs(t, s, store.JobFilter{}), []store.Job{jOther})
}

// testJobConcurrency races what control-plane replicas race: the same
// download asked for at once, and ownership of one job.
func testJobConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	for _, samePath := range []bool{true, false} {
		name := "same download from 10 callers: one job (images at one path)"
		if !samePath {
			name = "same download from 10 callers: one job (images at different paths)"
		}
		t.Run(name, func(t *testing.T) {
			s := open(t)
			mustCreatePool(t, s, pool("p1"))
			const racers = 10
			var wg sync.WaitGroup
			start := make(chan struct{})
			jobs := make([]store.Job, racers)
			errs := make([]error, racers)
			for i := range racers {
				wg.Go(func() {
					im, j := download(fmt.Sprintf("j%d", i), fmt.Sprintf("im%d", i), "p1", "catalog:race")
					if samePath {
						im.RelPath = "iso/race.iso"
					}
					<-start
					jobs[i], errs[i] = s.CreateDownload(ctx, im, j)
				})
			}
			close(start)
			wg.Wait()
			var winner store.Job
			for i, err := range errs {
				if err == nil {
					if winner.ID != "" {
						t.Fatalf("racers %s and %d both created a job", winner.ID, i)
					}
					winner = jobs[i]
				}
			}
			if winner.ID == "" {
				t.Fatalf("no racer created a job: %v", errs)
			}
			for i, err := range errs {
				if err == nil {
					continue
				}
				wantErr(t, fmt.Sprintf("racer %d", i), err, store.ErrConflict, "(job "+winner.ID+")")
				wantEqual(t, fmt.Sprintf("job returned to racer %d", i), jobs[i], winner)
			}
			wantEqual(t, "ListJobs after the race", mustListJobs(t, s, store.JobFilter{}), []store.Job{winner})
			if got := mustListImages(t, s, store.ImageFilter{}); len(got) != 1 || got[0].ID != winner.ImageID {
				t.Errorf("images after the race = %+v, want only %s", got, winner.ImageID)
			}
		})
	}

	t.Run("concurrent claims get distinct fences", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		im, j := download("j1", "im1", "p1", "src")
		mustCreateDownload(t, s, im, j)
		const racers = 10
		var wg sync.WaitGroup
		start := make(chan struct{})
		fences := make([]int64, racers)
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() {
				<-start
				c, err := s.ClaimJob(ctx, "j1", fmt.Sprintf("n%d", i), at(time.Duration(i+1)*time.Second))
				fences[i], errs[i] = c.Fence, err
			})
		}
		close(start)
		wg.Wait()
		seen := map[int64]int{}
		last := -1
		for i, err := range errs {
			if err != nil {
				t.Fatalf("ClaimJob #%d: %v", i, err)
			}
			if other, dup := seen[fences[i]]; dup {
				t.Errorf("claims %d and %d both got fence %d", other, i, fences[i])
			}
			seen[fences[i]] = i
			if fences[i] == racers {
				last = i
			}
		}
		got := mustGetJob(t, s, "j1")
		if got.Fence != racers || last < 0 || got.NodeID != fmt.Sprintf("n%d", last) {
			t.Errorf("after %d claims job has fence %d and node %s; want fence %d owned by the claim that got it (#%d)",
				racers, got.Fence, got.NodeID, racers, last)
		}
	})

	t.Run("finish against a takeover", func(t *testing.T) {
		// Either the owner finishes and the claim finds the job done, or
		// the claim moves the fence and the finish is refused; never both.
		for round := range 8 {
			s := open(t)
			mustCreatePool(t, s, pool("p1"))
			im, j := download("j1", "im1", "p1", "src")
			mustCreateDownload(t, s, im, j)
			j = mustClaimJob(t, s, "j1", "n1", at(time.Minute))
			var finishErr, claimErr error
			var wg sync.WaitGroup
			start := make(chan struct{})
			wg.Go(func() {
				<-start
				im := im
				im.State = store.ImageReady
				finishErr = s.FinishJob(ctx, finished(j, store.JobSucceeded, time.Hour), im)
			})
			wg.Go(func() {
				<-start
				_, claimErr = s.ClaimJob(ctx, "j1", "n2", at(2*time.Minute))
			})
			close(start)
			wg.Wait()
			got, gotIm := mustGetJob(t, s, "j1"), mustGetImage(t, s, "im1")
			switch {
			case finishErr == nil && errors.Is(claimErr, store.ErrConflict):
				if got.State != store.JobSucceeded || got.Fence != 1 || gotIm.State != store.ImageReady {
					t.Errorf("round %d: finish won but job = %s fence %d, image %s", round, got.State, got.Fence, gotIm.State)
				}
			case claimErr == nil && errors.Is(finishErr, store.ErrConflict):
				if got.State != store.JobRunning || got.Fence != 2 || got.NodeID != "n2" || gotIm.State != store.ImagePending {
					t.Errorf("round %d: claim won but job = %s fence %d on %s, image %s", round, got.State, got.Fence, got.NodeID, gotIm.State)
				}
			default:
				t.Errorf("round %d: FinishJob = %v, ClaimJob = %v; want one to win and the other to fail", round, finishErr, claimErr)
			}
		}
	})

	t.Run("download against pool delete", func(t *testing.T) {
		// Either the pool goes and the download finds no pool, or the
		// download lands and the pool is in use; never both, never neither.
		for round := range 8 {
			s := open(t)
			mustCreatePool(t, s, pool("p1"))
			var createErr, delErr error
			var wg sync.WaitGroup
			start := make(chan struct{})
			wg.Go(func() {
				<-start
				im, j := download("j1", "im1", "p1", "src")
				_, createErr = s.CreateDownload(ctx, im, j)
			})
			wg.Go(func() {
				<-start
				delErr = s.DeletePool(ctx, "p1")
			})
			close(start)
			wg.Wait()
			switch {
			case createErr == nil && errors.Is(delErr, store.ErrInUse):
				mustGetJob(t, s, "j1")
			case delErr == nil && errors.Is(createErr, store.ErrNotFound):
				if got := mustListJobs(t, s, store.JobFilter{}); len(got) != 0 {
					t.Errorf("round %d: jobs left in a deleted pool: %+v", round, got)
				}
			default:
				t.Errorf("round %d: CreateDownload = %v, DeletePool = %v; want one to win and the other to fail", round, createErr, delErr)
			}
		}
	})
}
