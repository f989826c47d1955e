// Package jobrun is the skeleton of the control plane's controllers for
// jobs that one node runs in one call (verify, convert): jobs are
// reconciled by id on a reconcile.Queue — when created or cancelled, and at
// start for the jobs of the kind a previous run left unfinished. A job is
// run on its own goroutine until it ends; a cancel ends that goroutine's
// context, and the run then ends the job CANCELLED. The controller stopping
// ends none of its jobs: they stay RUNNING for the next start to take up.
//
// What a job does — which image it needs, which nodes can run it, what its
// result means — stays with the controller: the Runner calls its Start
// and gives it the pieces every run repeats: claiming the job for a node
// (fencing), saving progress, job events and ending the job with its image
// in one transaction.
package jobrun

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/reconcile"
	"github.com/quarry-project/quarry/internal/store"
)

// Work runs a started job until it ends it. ctx ends with a cancel of the
// job; base only with the controller.
type Work func(ctx, base context.Context)

// Config configures a Runner.
type Config struct {
	// Kind is the Job.Kind run; it names the queue and the log component.
	Kind string
	// Noun names the jobs in log messages ("conversion", "verify").
	Noun  string
	Store store.Store
	// Start is called for an active job of Kind that is not running and has
	// no cancel asked for. It returns the work to run, or nil when it ended
	// the job itself (or cannot start it yet: then with an error, and the
	// queue retries the job with backoff).
	Start func(ctx context.Context, j store.Job) (Work, error)
	// ImageErrorPrefix, when set, has a job that ends without a new image
	// mark its image ERROR, with the reason
	// ImageErrorPrefix + " " + state (lower case) + ": " + message.
	ImageErrorPrefix string
	// Logger (slog.Default()) and Now (time.Now) may be nil.
	Logger *slog.Logger
	Now    func() time.Time
}

// Runner reconciles and runs the jobs of one kind.
type Runner struct {
	cfg   Config
	log   *slog.Logger
	queue *reconcile.Queue
	// runs owns the jobs' goroutines; Run waits for them.
	runs sync.WaitGroup

	mu      sync.Mutex
	running map[string]context.CancelFunc // by job id
}

// New returns a Runner; Run starts it.
func New(cfg Config) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Runner{cfg: cfg, log: cfg.Logger.With("component", cfg.Kind), running: map[string]context.CancelFunc{}}
	r.queue = reconcile.New(reconcile.Config{Name: cfg.Kind, Reconcile: r.reconcile, Logger: cfg.Logger})
	return r
}

// Log is the Runner's logger, with the component.
func (r *Runner) Log() *slog.Logger { return r.log }

// Now is the time by the Runner's clock (Config.Now).
func (r *Runner) Now() time.Time { return r.cfg.Now() }

// Enqueue asks for a job to be looked at now: it was created, or a cancel
// was asked for. Jobs of other kinds are ignored.
func (r *Runner) Enqueue(jobID string) { r.queue.Add(jobID) }

// Run takes up the jobs of the kind a previous run left unfinished and
// reconciles jobs until ctx is done; it returns once every goroutine it
// started has exited.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.queue.Run(ctx) })
	jobs, err := r.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("listing unfinished "+r.cfg.Noun+" jobs", "err", err)
	}
	for _, j := range jobs {
		if j.Kind == r.cfg.Kind {
			r.queue.Add(j.ID)
		}
	}
	wg.Wait()
	r.runs.Wait()
}

func (r *Runner) reconcile(ctx context.Context, id string) (reconcile.Result, error) {
	j, err := r.cfg.Store.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if j.Kind != r.cfg.Kind || !j.State.Active() {
		return reconcile.Result{}, nil
	}
	r.mu.Lock()
	stop, running := r.running[id]
	r.mu.Unlock()
	switch {
	case j.CancelRequested && running:
		stop() // the run ends the job
		return reconcile.Result{}, nil
	case j.CancelRequested:
		return reconcile.Result{}, r.Finish(ctx, j, store.JobCancelled, "cancelled", nil)
	case running:
		return reconcile.Result{}, nil
	}
	work, err := r.cfg.Start(ctx, j)
	if work == nil {
		return reconcile.Result{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.running[id] = cancel
	r.mu.Unlock()
	r.runs.Go(func() {
		defer func() {
			cancel()
			r.mu.Lock()
			delete(r.running, id)
			r.mu.Unlock()
		}()
		work(rctx, ctx)
	})
	return reconcile.Result{}, nil
}

// Claim claims the job for a node and returns it with its new fence. When
// it cannot, ok is false and the Runner has seen to the job: ended it if a
// cancel stopped the claim, else asked for it again in a few seconds (it
// is reconciled once this run has ended).
func (r *Runner) Claim(ctx, base context.Context, jobID, nodeID string) (j store.Job, ok bool) {
	claimed, err := r.cfg.Store.ClaimJob(ctx, jobID, nodeID, r.cfg.Now())
	if err != nil {
		if ctx.Err() != nil && base.Err() == nil {
			r.endCancelled(base, jobID) // cancelled before it started
			return store.Job{}, false
		}
		r.log.Info("claiming a "+r.cfg.Noun+" job; trying again", "job", jobID, "err", err)
		r.queue.AddAfter(jobID, 5*time.Second)
		return store.Job{}, false
	}
	return claimed, true
}

// Stopped reports whether the run was stopped (ctx done), and then ends the
// job CANCELLED unless the controller itself is stopping (base done),
// which leaves the job RUNNING for the next start to take up.
func (r *Runner) Stopped(ctx, base context.Context, jobID string) bool {
	if ctx.Err() == nil {
		return false
	}
	if base.Err() == nil {
		r.endCancelled(base, jobID)
	}
	return true
}

// endCancelled ends a job whose run was stopped by a cancel.
func (r *Runner) endCancelled(ctx context.Context, id string) {
	j, err := r.cfg.Store.GetJob(ctx, id)
	if err == nil && j.State.Active() {
		r.Finish(ctx, j, store.JobCancelled, "cancelled", nil)
	}
}

// Finish ends the job with state and msg and, when im is set, replaces the
// image in the same transaction (when it is not, see
// Config.ImageErrorPrefix). The message is also the job's last event.
func (r *Runner) Finish(ctx context.Context, j store.Job, state store.JobState, msg string, im *store.Image) error {
	now := r.cfg.Now()
	if im == nil && r.cfg.ImageErrorPrefix != "" {
		cur, err := r.cfg.Store.GetImage(ctx, j.ImageID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil {
			cur.State, cur.StateReason, cur.UpdatedAt = store.ImageError, r.cfg.ImageErrorPrefix+" "+strings.ToLower(string(state))+": "+msg, now
			im = &cur
		}
	}
	j.State, j.Message, j.FinishedAt, j.UpdatedAt, j.BytesPerSec = state, msg, now, now, 0
	var err error
	if im != nil {
		err = r.cfg.Store.FinishJob(ctx, j, *im, msg) // the event in the same transaction
	} else if err = r.cfg.Store.UpdateJob(ctx, j); err == nil {
		// The job has ended: its last event is written even when the
		// controller stops meanwhile.
		r.Event(context.WithoutCancel(ctx), j.ID, msg)
	}
	if err != nil {
		r.log.Warn("finishing a "+r.cfg.Noun+" job", "job", j.ID, "err", err)
		return err
	}
	r.log.Info(r.cfg.Noun+" job ended", "job", j.ID, "image", j.ImageID, "state", state, "message", msg)
	return nil
}

// Save records a running job's progress.
func (r *Runner) Save(ctx context.Context, j store.Job) {
	if err := r.cfg.Store.UpdateJob(ctx, j); err != nil && ctx.Err() == nil {
		r.log.Info("saving a "+r.cfg.Noun+" job's progress", "job", j.ID, "err", err)
	}
}

// Event appends msg to the job's history.
func (r *Runner) Event(ctx context.Context, jobID, msg string) {
	if err := r.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: jobID, Time: r.cfg.Now(), Message: msg}); err != nil && ctx.Err() == nil {
		r.log.Warn("recording a job event", "job", jobID, "err", err)
	}
}

// Throttle returns f called at most once a second: the progress a node
// reports in between is dropped.
func Throttle[P any](f func(P)) func(P) {
	var last time.Time
	return func(p P) {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		f(p)
	}
}
