package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// verifyJob is a QUEUED verify job of image imageID in pool poolID.
func verifyJob(id, imageID, poolID string) store.Job {
	return store.Job{ID: id, Kind: "verify", State: store.JobQueued, ImageID: imageID, PoolID: poolID,
		Source: "verify:" + imageID, Message: "queued", CreatedAt: t0, UpdatedAt: t0}
}

func testCreateJob(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("one active job per source, on an image that exists", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		mustCreateImages(t, s, image("im1", "p1", "images/a.raw"))

		created, err := s.CreateJob(ctx, verifyJob("j1", "im1", "p1"))
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "CreateJob", created, verifyJob("j1", "im1", "p1"))
		wantEqual(t, "GetJob", mustGetJob(t, s, "j1"), created)

		got, err := s.CreateJob(ctx, verifyJob("j2", "im1", "p1"))
		wantErr(t, "CreateJob while one runs", err, store.ErrConflict, "j1")
		wantEqual(t, "job returned with ErrConflict", got, created)

		_, err = s.CreateJob(ctx, verifyJob("j3", "imx", "p1"))
		wantErr(t, "CreateJob of an unknown image", err, store.ErrNotFound, "imx")
		_, err = s.CreateJob(ctx, verifyJob("j3", "im1", "p2"))
		wantErr(t, "CreateJob of an image in another pool", err, store.ErrNotFound, "im1")
		_, err = s.CreateJob(ctx, verifyJob("j3", "im1", "px"))
		wantErr(t, "CreateJob in an unknown pool", err, store.ErrNotFound, "px")

		// A finished job does not block the next one.
		claimed := mustClaimJob(t, s, "j1", "n1", at(time.Minute))
		if err := s.FinishJob(ctx, finished(claimed, store.JobSucceeded, 2*time.Minute), mustGetImage(t, s, "im1")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateJob(ctx, verifyJob("j4", "im1", "p1")); err != nil {
			t.Fatalf("CreateJob after the first finished: %v", err)
		}
		if n := len(mustListJobs(t, s, store.JobFilter{PoolID: "p1"})); n != 2 {
			t.Errorf("%d jobs; want 2", n)
		}
	})

	t.Run("rejected", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreateImages(t, s, image("im1", "p1", "images/a.raw"))
		for name, edit := range map[string]func(*store.Job){
			"no id":      func(j *store.Job) { j.ID = "" },
			"no kind":    func(j *store.Job) { j.Kind = "" },
			"no source":  func(j *store.Job) { j.Source = "" },
			"no image":   func(j *store.Job) { j.ImageID = "" },
			"not queued": func(j *store.Job) { j.State = store.JobRunning },
		} {
			j := verifyJob("j1", "im1", "p1")
			edit(&j)
			if _, err := s.CreateJob(ctx, j); err == nil {
				t.Errorf("%s: CreateJob succeeded", name)
			}
		}
		if n := len(mustListJobs(t, s, store.JobFilter{})); n != 0 {
			t.Errorf("%d jobs after rejected creates", n)
		}
	})
}
