package jobrun

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

const kind = "test"

type fixture struct {
	st store.Store
	t0 time.Time
}

// newFixture is a store with a pool, a node and, for each id, a PENDING
// image "im-<id>" and its QUEUED job of kind (or of the kind given after a
// colon: "j2:other").
func newFixture(t *testing.T, jobs ...string) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, t0: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := st.CreatePool(ctx, store.Pool{ID: "p1", Name: "pool", Type: "dir", Path: "/srv/pool", CreatedAt: f.t0}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateNode(ctx, store.Node{ID: "n1", Name: "node1", Address: "n1:7443", CreatedAt: f.t0}); err != nil {
		t.Fatal(err)
	}
	for _, spec := range jobs {
		id, k := spec, kind
		if before, ok := strings.CutSuffix(spec, ":other"); ok {
			id, k = before, "other"
		}
		im := store.Image{ID: "im-" + id, PoolID: "p1", Name: id + ".img", Kind: store.KindDisk, State: store.ImagePending,
			RelPath: "images/" + id + ".img", CreatedAt: f.t0}
		j := store.Job{ID: id, Kind: k, State: store.JobQueued, ImageID: im.ID, PoolID: "p1", Source: k + ":" + id, CreatedAt: f.t0}
		if _, err := st.CreateDownload(ctx, im, j); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) job(t *testing.T, id string) store.Job {
	t.Helper()
	j, err := f.st.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (f *fixture) image(t *testing.T, id string) store.Image {
	t.Helper()
	im, err := f.st.GetImage(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func (f *fixture) cancel(t *testing.T, id string) {
	t.Helper()
	j := f.job(t, id)
	j.CancelRequested = true
	if err := f.st.UpdateJob(context.Background(), j); err != nil {
		t.Fatal(err)
	}
}

// waitJob waits until the job is in state.
func (f *fixture) waitJob(t *testing.T, id string, state store.JobState) store.Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j := f.job(t, id)
		if j.State == state {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s (%q); want %s", id, j.State, j.Message, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// start runs r until the test ends; the returned func stops it and waits.
func start(t *testing.T, r *Runner) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return sync.OnceFunc(stop)
}

// TestRunnerRunsJob: Run takes up the unfinished jobs of its kind only;
// the work claims the job (fence 1) and ends it with its image READY in
// one transaction, the message its last event.
func TestRunnerRunsJob(t *testing.T) {
	f := newFixture(t, "j1", "j2:other")
	var mu sync.Mutex
	var started []string
	var r *Runner
	r = New(Config{Kind: kind, Noun: "test", Store: f.st, Start: func(ctx context.Context, j store.Job) (Work, error) {
		mu.Lock()
		started = append(started, j.ID)
		mu.Unlock()
		return func(ctx, base context.Context) {
			j, ok := r.Claim(ctx, base, j.ID, "n1")
			if !ok {
				return
			}
			if j.Fence != 1 || j.State != store.JobRunning || j.NodeID != "n1" {
				t.Errorf("claimed job %+v; want RUNNING on n1 with fence 1", j)
			}
			im, err := f.st.GetImage(base, j.ImageID)
			if err != nil {
				t.Error(err)
				return
			}
			im.State, im.SHA256 = store.ImageReady, "abc"
			r.Finish(base, j, store.JobSucceeded, "done on node1", &im)
		}, nil
	}})
	stop := start(t, r)
	f.waitJob(t, "j1", store.JobSucceeded)
	stop() // the run has exited: its event is written
	j := f.job(t, "j1")
	if j.Message != "done on node1" || j.FinishedAt.IsZero() {
		t.Errorf("job %+v; want the message and a finish time", j)
	}
	if im := f.image(t, "im-j1"); im.State != store.ImageReady || im.SHA256 != "abc" {
		t.Errorf("image %+v; want READY with its digest", im)
	}
	events, err := f.st.ListJobEvents(context.Background(), "j1")
	if err != nil || len(events) == 0 || events[len(events)-1].Message != "done on node1" {
		t.Errorf("events %+v, %v; want the message last", events, err)
	}
	if j := f.job(t, "j2"); j.State != store.JobQueued {
		t.Errorf("the other kind's job is %s; want it left QUEUED", j.State)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(started) != "[j1]" {
		t.Errorf("started %v; want only j1", started)
	}
}

// TestRunnerCancel: a cancel asked before the job runs ends it without
// starting it; one asked while it runs ends the run's context and the job
// CANCELLED. With ImageErrorPrefix the image is marked ERROR, saying why.
func TestRunnerCancel(t *testing.T) {
	f := newFixture(t, "before", "during")
	f.cancel(t, "before")
	running := make(chan struct{})
	var r *Runner
	r = New(Config{Kind: kind, Noun: "test", Store: f.st, ImageErrorPrefix: "test", Start: func(ctx context.Context, j store.Job) (Work, error) {
		if j.ID == "before" {
			t.Errorf("job %s was started after its cancel", j.ID)
		}
		return func(ctx, base context.Context) {
			if _, ok := r.Claim(ctx, base, j.ID, "n1"); !ok {
				return
			}
			close(running)
			<-ctx.Done()
			if !r.Stopped(ctx, base, j.ID) {
				t.Errorf("Stopped = false after a cancel")
			}
		}, nil
	}})
	start(t, r)
	if j := f.waitJob(t, "before", store.JobCancelled); j.Message != "cancelled" {
		t.Errorf("job %+v; want the message cancelled", j)
	}
	<-running
	f.cancel(t, "during")
	r.Enqueue("during")
	f.waitJob(t, "during", store.JobCancelled)
	for _, id := range []string{"im-before", "im-during"} {
		if im := f.image(t, id); im.State != store.ImageError || im.StateReason != "test cancelled: cancelled" {
			t.Errorf("image %s is %s (%q); want ERROR, test cancelled: cancelled", id, im.State, im.StateReason)
		}
	}
}

// TestRunnerStopLeavesJobRunning: the controller stopping ends the run's
// context but not the job, which stays RUNNING for the next start; its
// image is not touched. Run returns only after the run has exited.
func TestRunnerStopLeavesJobRunning(t *testing.T) {
	f := newFixture(t, "j1")
	running := make(chan struct{})
	exited := false
	var r *Runner
	r = New(Config{Kind: kind, Noun: "test", Store: f.st, ImageErrorPrefix: "test", Start: func(ctx context.Context, j store.Job) (Work, error) {
		return func(ctx, base context.Context) {
			if _, ok := r.Claim(ctx, base, j.ID, "n1"); !ok {
				return
			}
			close(running)
			<-ctx.Done()
			if !r.Stopped(ctx, base, j.ID) {
				t.Errorf("Stopped = false after the controller stopped")
			}
			exited = true
		}, nil
	}})
	stop := start(t, r)
	<-running
	stop()
	if !exited {
		t.Errorf("Run returned before the run exited")
	}
	if j := f.job(t, "j1"); j.State != store.JobRunning {
		t.Errorf("job is %s (%q); want RUNNING", j.State, j.Message)
	}
	if im := f.image(t, "im-j1"); im.State != store.ImagePending {
		t.Errorf("image is %s; want PENDING", im.State)
	}
}

// TestRunnerStartEnds: a Start that ends the job itself (a job that
// cannot run) returns no work; the job is FAILED with its message and,
// without ImageErrorPrefix, the image is left as it was.
func TestRunnerStartEnds(t *testing.T) {
	f := newFixture(t, "j1")
	var r *Runner
	r = New(Config{Kind: kind, Noun: "test", Store: f.st, Start: func(ctx context.Context, j store.Job) (Work, error) {
		return nil, r.Finish(ctx, j, store.JobFailed, "nothing to do", nil)
	}})
	start(t, r)
	if j := f.waitJob(t, "j1", store.JobFailed); j.Message != "nothing to do" {
		t.Errorf("job %+v; want the message", j)
	}
	if im := f.image(t, "im-j1"); im.State != store.ImagePending {
		t.Errorf("image is %s; want PENDING", im.State)
	}
}

// stopsOnFinish is a store that stops the controller (cancel) the moment a
// job is finished, before its caller goes on.
type stopsOnFinish struct {
	store.Store
	cancel context.CancelFunc
}

func (s stopsOnFinish) FinishJob(ctx context.Context, j store.Job, im store.Image, history ...string) error {
	defer s.cancel()
	return s.Store.FinishJob(ctx, j, im, history...)
}

func (s stopsOnFinish) UpdateJob(ctx context.Context, j store.Job) error {
	if !j.State.Active() {
		defer s.cancel()
	}
	return s.Store.UpdateJob(ctx, j)
}

// TestRunnerFinishOutlivesStop: a job finished just before the controller
// stops keeps its message as its last event, with its image (in the
// transaction that ends it) or without.
func TestRunnerFinishOutlivesStop(t *testing.T) {
	for _, withImage := range []bool{true, false} {
		t.Run(fmt.Sprint("image=", withImage), func(t *testing.T) {
			f := newFixture(t, "j1")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var r *Runner
			r = New(Config{Kind: kind, Noun: "test", Store: stopsOnFinish{f.st, cancel}, Start: func(ctx context.Context, j store.Job) (Work, error) {
				return func(ctx, base context.Context) {
					var im *store.Image
					if withImage {
						got := f.image(t, j.ImageID)
						im = &got
					}
					r.Finish(base, j, store.JobFailed, "the last word", im)
				}, nil
			}})
			r.Run(ctx) // returns once cancelled, after the run has exited
			if j := f.job(t, "j1"); j.State != store.JobFailed {
				t.Fatalf("job is %s (%q); want FAILED", j.State, j.Message)
			}
			events, err := f.st.ListJobEvents(context.Background(), "j1")
			if err != nil || len(events) == 0 || events[len(events)-1].Message != "the last word" {
				t.Errorf("events %+v, %v; want the message last", events, err)
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	var got []int
	f := Throttle(func(i int) { got = append(got, i) })
	for i := range 5 {
		f(i)
	}
	if fmt.Sprint(got) != "[0]" {
		t.Errorf("called with %v; want only the first of a burst", got)
	}
}
