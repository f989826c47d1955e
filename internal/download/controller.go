// Package download runs download jobs on the control plane: it picks the
// node through the node-choice helper, hands the job to that node's agent,
// follows its progress (persisted at most once a second), counts every
// failed fetch attempt, retries with a growing backoff until the retry
// budget is spent, moves the job to another node that mounts a shared pool
// when its node is lost or goes silent, re-adopts running jobs after a
// restart, and records how every job ended. No job stays RUNNING without an
// owner that is working on it, being waited for, or a time to try again.
//
// Jobs are reconciled by id on a reconcile.Queue: when one is created or
// cancelled, when its progress stream ends, when a node changes state, when
// a download slot frees up, and when its backoff is over. Nothing is
// re-read on a timer.
package download

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/bytesize"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/reconcile"
	"github.com/quarry-project/quarry/internal/store"
)

// Agents is what the controller needs of the node link.
type Agents interface {
	Start(ctx context.Context, nodeID string, req *agentv1.StartDownloadRequest) (*agentv1.DownloadStatus, error)
	// Watch calls f with every status until the download ends or the
	// stream breaks (the error says why), also when the agent falls
	// silent.
	Watch(ctx context.Context, nodeID, jobID string, f func(*agentv1.DownloadStatus)) error
	Cancel(ctx context.Context, nodeID, jobID string, pool store.Pool) error
}

// LookupFunc asks node nodeID for the digest a checksum file gives.
type LookupFunc func(ctx context.Context, nodeID string, req *agentv1.LookupChecksumRequest) (string, error)

// Config configures a Controller.
type Config struct {
	Store   store.Store
	Chooser *placement.Chooser
	Agents  Agents
	// Policy is sent with every download; the agent enforces it.
	Policy *agentv1.URLPolicy
	// PerNode and Global bound downloads running at once (2 and 8).
	PerNode, Global int
	// MaxAttempts is the retry budget: a job fails after this many failed
	// attempts in a row without progress (10), or when its failures go on
	// for longer than RetryWindow (24 h).
	MaxAttempts int
	RetryWindow time.Duration
	// RetryBase is the wait after the first failed attempt (2 s); it
	// doubles with each further one up to RetryMax (10 min).
	RetryBase, RetryMax time.Duration
	// GiveUpAfter ends a job whose only node has been gone this long
	// (1 h), so no job waits RUNNING forever.
	GiveUpAfter time.Duration
	// StartTimeout bounds handing a job to an agent (5 s): a hung agent
	// must not hold the job.
	StartTimeout time.Duration
	Logger       *slog.Logger
	Now          func() time.Time

	// Metrics counts finished downloads, retries and failovers; nil counts
	// nothing.
	Metrics *metrics.Metrics

	// Grants signs the grant a node reads another node's file with (a
	// copy); nil: copies between nodes are refused. GrantTTL is how long
	// one may start requests (10 min): every (re)start gets a new one.
	Grants   func(pki.Grant) (string, error)
	GrantTTL time.Duration
	// Lookup resolves a download's checksum file before it starts, so a
	// file the cluster holds is copied, not fetched; nil: not looked up.
	Lookup LookupFunc
}

// Controller reconciles download jobs.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	queue *reconcile.Queue

	// followers owns the progress streams' goroutines; Run waits for them.
	followers sync.WaitGroup

	mu sync.Mutex
	// following: jobs whose progress stream is open, by job id.
	following map[string]*follower
	// active: ids of the jobs not finished, to look at when a node
	// changes state.
	active map[string]bool
	// waiting: queued jobs that found no free slot; a finished stream
	// looks at them again.
	waiting map[string]bool
	// plans: where running copies read from; resolved: the SHA-256 a
	// download's checksum file gave ("" when none), by job id.
	plans    map[string]*copyPlan
	resolved map[string]string
}

type follower struct {
	nodeID string
	stop   context.CancelFunc
}

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.PerNode <= 0 {
		cfg.PerNode = 2
	}
	if cfg.Global <= 0 {
		cfg.Global = 8
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.RetryWindow <= 0 {
		cfg.RetryWindow = 24 * time.Hour
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 2 * time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Minute
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = time.Hour
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GrantTTL <= 0 {
		cfg.GrantTTL = 10 * time.Minute
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "download"),
		following: map[string]*follower{}, active: map[string]bool{}, waiting: map[string]bool{},
		plans: map[string]*copyPlan{}, resolved: map[string]string{}}
	c.queue = reconcile.New(reconcile.Config{Name: "download", Reconcile: c.reconcile, Logger: cfg.Logger})
	return c
}

// Enqueue asks for one job to be looked at now: it was created, or a
// cancel was asked for.
func (c *Controller) Enqueue(jobID string) { c.queue.Add(jobID) }

// NodeChanged looks again at every unfinished job: a node that came back
// may resume one, a node that was lost may have to give one up, and a node
// that became READY may take a queued one.
func (c *Controller) NodeChanged() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.active))
	for id := range c.active {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.queue.Add(id)
	}
}

// Run re-adopts the jobs a previous run left unfinished and reconciles jobs
// until ctx is done. It returns once every goroutine it started has
// exited.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.queue.Run(ctx) })
	c.readopt(ctx)
	wg.Wait()
	c.followers.Wait()
}

// readopt queues every unfinished job, trying again until the store
// answers.
func (c *Controller) readopt(ctx context.Context) {
	for n := 1; ctx.Err() == nil; n++ {
		jobs, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
		if err == nil {
			// Oldest first: jobs are served in the order they were asked for.
			for _, j := range slices.Backward(jobs) {
				c.queue.Add(j.ID)
			}
			return
		}
		wait := reconcile.Backoff(n, time.Second, time.Minute)
		c.log.Warn("listing unfinished jobs; trying again", "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// reconcile moves one job one step toward its end.
func (c *Controller) reconcile(ctx context.Context, id string) (reconcile.Result, error) {
	j, err := c.cfg.Store.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		c.forget(id)
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if !j.State.Active() || (j.Kind != "" && j.Kind != KindDownload && j.Kind != KindCopy) { // verify and upload jobs have their own
		c.forget(id)
		return reconcile.Result{}, nil
	}
	c.mu.Lock()
	c.active[id] = true
	_, followed := c.following[id]
	c.mu.Unlock()
	pool, err := c.cfg.Store.GetPool(ctx, j.PoolID)
	if err != nil {
		return reconcile.Result{}, err
	}
	switch {
	case j.CancelRequested:
		return reconcile.Result{}, c.cancel(ctx, j, pool)
	case followed:
		return reconcile.Result{}, nil // its stream reports, and asks again when it ends
	case j.State == store.JobQueued:
		return reconcile.Result{}, c.place(ctx, j, pool)
	}
	if wait := j.NextAttemptAt.Sub(c.cfg.Now()); wait > 0 {
		return reconcile.Result{After: wait}, nil
	}
	return c.adopt(ctx, j, pool)
}

// forget drops what the controller remembers of a finished job.
func (c *Controller) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.active, id)
	delete(c.waiting, id)
	delete(c.plans, id)
	delete(c.resolved, id)
	if f, ok := c.following[id]; ok {
		f.stop()
	}
}

// waitForSlot marks job id as waiting for a download slot and counts the
// downloads being followed per node and in all, under one lock: a stream
// that ends after the count wakes the job up, so none is left waiting for
// a slot that freed meanwhile. Starting the job clears the mark.
func (c *Controller) waitForSlot(id string) (perNode map[string]int, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting[id] = true
	perNode = map[string]int{}
	for _, f := range c.following {
		perNode[f.nodeID]++
	}
	return perNode, len(c.following)
}

// place gives a queued job to the best node that has room, or leaves it
// waiting for a slot.
func (c *Controller) place(ctx context.Context, j store.Job, pool store.Pool) error {
	perNode, total := c.waitForSlot(j.ID)
	if total < c.cfg.Global {
		choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
		if errors.Is(err, placement.ErrNoNode) {
			return c.fail(ctx, j, err)
		}
		if err != nil {
			return err
		}
		var refusals []error
		kept := choice.Kept
		if holders := c.holders(ctx, j); len(holders) > 0 {
			// A copy goes first to a node that holds its source.
			kept = slices.Clone(kept)
			slices.SortStableFunc(kept, func(a, b placement.Candidate) int {
				return boolRank(!holders[a.Node.ID]) - boolRank(!holders[b.Node.ID])
			})
		}
		for _, cand := range kept {
			if perNode[cand.Node.ID] >= c.cfg.PerNode {
				continue
			}
			err := c.startOn(ctx, j, pool, cand.Node, "started on node "+cand.Node.Name+" ("+cand.Reason+")")
			if err == nil {
				return nil
			}
			if cannotCopy(err) {
				return c.fail(ctx, j, err)
			}
			refusals = append(refusals, err)
		}
		if len(refusals) > 0 {
			if err := errors.Join(refusals...); isNoSource(err) && j.Message != refusals[0].Error() {
				j.Message, j.UpdatedAt = refusals[0].Error(), c.cfg.Now()
				if err := c.cfg.Store.UpdateJob(ctx, j); err != nil {
					return err
				}
			}
			// Tried again with the queue's backoff.
			return fmt.Errorf("no node with a free slot took job %s: %w", j.ID, errors.Join(refusals...))
		}
	}
	msg := fmt.Sprintf("queued: every node that can reach pool %s is busy (at most %d downloads per node, %d in all); it starts when one ends",
		pool.Name, c.cfg.PerNode, c.cfg.Global)
	if j.Message == msg {
		return nil
	}
	j.Message, j.UpdatedAt = msg, c.cfg.Now()
	return c.cfg.Store.UpdateJob(ctx, j)
}

// adopt takes care of a RUNNING job nobody is following: after a control
// plane restart, when its stream broke because the node was lost or fell
// silent, or when its backoff is over. The owner resumes it if it can;
// otherwise another node that mounts the (shared) pool resumes from the
// partial file, and the higher fence stops the old owner if it comes back.
func (c *Controller) adopt(ctx context.Context, j store.Job, pool store.Pool) (reconcile.Result, error) {
	owner, err := c.cfg.Store.GetNode(ctx, j.NodeID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, err
	}
	var cands []store.Node
	if choice, err := c.cfg.Chooser.Choose(ctx, pool.ID); err == nil {
		for _, cand := range choice.Kept {
			cands = append(cands, cand.Node)
		}
	}
	// A copy prefers a node holding its source, for a local copy.
	preferHolders(cands, c.holders(ctx, j))
	// The owner first, also when placement dropped it: it holds the
	// partial file and may answer although its last check failed.
	cands = slices.DeleteFunc(cands, func(n store.Node) bool { return n.ID == owner.ID })
	if owner.ID != "" {
		cands = slices.Insert(cands, 0, owner)
	}
	var noSource error
	at := bytesize.Format(uint64(max(j.BytesDone, 0)))
	for _, n := range cands {
		var event string
		switch {
		case n.ID != owner.ID:
			event = fmt.Sprintf("node %s was lost; moved to node %s, resuming from the partial file at %s", owner.Name, n.Name, at)
		case j.Attempts > 0:
			event = fmt.Sprintf("trying again on node %s after %d failed attempts, from %s", n.Name, j.Attempts, at)
		case j.BytesDone > 0:
			event = fmt.Sprintf("resumed on node %s at %s", n.Name, at)
		}
		err := c.startOn(ctx, j, pool, n, event)
		if err == nil {
			c.cfg.Metrics.DownloadResumed(n.ID != owner.ID)
			return reconcile.Result{}, nil
		}
		if ctx.Err() != nil {
			return reconcile.Result{}, ctx.Err()
		}
		if cannotCopy(err) {
			return reconcile.Result{}, c.fail(ctx, j, err)
		}
		if isNoSource(err) {
			noSource = err
		}
		c.log.Info("a node could not resume a download", "job", j.ID, "node", n.Name, "err", err)
	}
	if noSource != nil {
		// The source is what is missing, not the target: wait for it.
		waited := c.cfg.Now().Sub(j.UpdatedAt)
		if j.Message == noSource.Error() && waited > c.cfg.GiveUpAfter {
			return reconcile.Result{}, c.fail(ctx, j, errclass.New(errclass.Unavailable, "%v for %v; copy again once a node holding it is back", noSource, c.cfg.GiveUpAfter))
		}
		if j.Message != noSource.Error() {
			j.Message, j.Phase, j.BytesPerSec, j.UpdatedAt = noSource.Error(), "waiting", 0, c.cfg.Now()
			if err := c.cfg.Store.UpdateJob(ctx, j); err != nil {
				return reconcile.Result{}, err
			}
			c.event(ctx, j.ID, noSource.Error())
			waited = 0
		}
		return reconcile.Result{After: min(max(waited/4, time.Second), time.Minute)}, nil
	}
	name := owner.Name
	if name == "" {
		name = j.NodeID
	}
	msg := fmt.Sprintf("waiting for node %s to come back: pool %s is only reachable through it", name, pool.Name)
	if j.Message == msg {
		waited := c.cfg.Now().Sub(j.UpdatedAt)
		if waited > c.cfg.GiveUpAfter {
			return reconcile.Result{}, c.fail(ctx, j, errclass.New(errclass.Unavailable, "node %s has been unreachable for %v and pool %s is only reachable through it; the partial file stays on its disk — download again once it is back, or into another pool",
				name, c.cfg.GiveUpAfter, pool.Name))
		}
		// A node whose state changes asks again at once. One back before
		// its health check noticed it was gone changes no state, so look
		// again, soon at first and then less often.
		return reconcile.Result{After: min(max(waited/4, time.Second), time.Minute)}, nil
	}
	j.Message, j.Phase, j.BytesPerSec, j.UpdatedAt = msg, "waiting", 0, c.cfg.Now()
	if err := c.cfg.Store.UpdateJob(ctx, j); err != nil {
		return reconcile.Result{}, err
	}
	c.event(ctx, j.ID, msg)
	return reconcile.Result{After: time.Second}, nil
}

// startOn claims the job for node n (a new fence when the owner changes),
// hands it to n's agent, then follows its progress.
func (c *Controller) startOn(ctx context.Context, j store.Job, pool store.Pool, n store.Node, event string) error {
	if j.State == store.JobQueued || j.NodeID != n.ID {
		claimed, err := c.cfg.Store.ClaimJob(ctx, j.ID, n.ID, c.cfg.Now())
		if err != nil {
			return err
		}
		j = claimed
		if err := c.setImageState(ctx, j, store.ImageDownloading, ""); err != nil {
			return err
		}
	}
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	req := &agentv1.StartDownloadRequest{
		JobId: j.ID, Fence: j.Fence,
		Pool: &agentv1.PoolRef{Id: pool.ID, Name: pool.Name, Path: pool.Path},
		Url:  j.URL, Checksum: j.Checksum, ChecksumUrl: j.ChecksumURL,
		Dest:     im.RelPath,
		Policy:   c.cfg.Policy,
		Describe: fmt.Sprintf("pool %s on node %s", pool.Name, n.Name),
		// Its own limit; the agent applies its node limit too.
		MaxBytesPerSecond: j.MaxBytesPerSec,
	}
	plan, err := c.planFor(ctx, j, n)
	if err != nil {
		return err
	}
	if plan != nil {
		if err := c.applyPlan(req, j, n, plan); err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	st, err := c.cfg.Agents.Start(sctx, n.ID, req)
	cancel()
	if err != nil {
		return fmt.Errorf("starting on node %s: %w", n.Name, err)
	}
	j.Message, j.Phase, j.UpdatedAt = "starting on node "+n.Name, st.GetPhase(), c.cfg.Now()
	j.NextAttemptAt = time.Time{}
	if err := c.cfg.Store.UpdateJob(ctx, j); err != nil {
		return err
	}
	if event != "" {
		c.event(ctx, j.ID, event)
	}
	if why := c.remember(j, n, plan); why != "" {
		c.event(ctx, j.ID, why)
	}
	fctx, stop := context.WithCancel(ctx)
	c.mu.Lock()
	c.following[j.ID] = &follower{nodeID: n.ID, stop: stop}
	delete(c.waiting, j.ID)
	c.mu.Unlock()
	c.followers.Go(func() { c.follow(fctx, stop, j, pool, n, st) })
	return nil
}

// follow streams the job's status from its node until the download ends
// or the stream breaks; then the job is reconciled again, and so are the
// jobs waiting for the slot it held.
func (c *Controller) follow(ctx context.Context, stop context.CancelFunc, j store.Job, pool store.Pool, n store.Node, first *agentv1.DownloadStatus) {
	defer func() {
		stop()
		c.mu.Lock()
		delete(c.following, j.ID)
		waiting := make([]string, 0, len(c.waiting))
		for id := range c.waiting {
			waiting = append(waiting, id)
		}
		c.mu.Unlock()
		c.queue.Add(j.ID)
		for _, id := range waiting {
			c.queue.Add(id)
		}
	}()
	f := &follow{c: c, j: j, pool: pool, n: n, stop: stop, startBytes: first.GetBytesDone()}
	f.handle(ctx, first)
	if ctx.Err() != nil {
		return
	}
	err := c.cfg.Agents.Watch(ctx, n.ID, j.ID, func(st *agentv1.DownloadStatus) { f.handle(ctx, st) })
	if err != nil && ctx.Err() == nil {
		c.log.Info("lost the download's progress stream", "job", j.ID, "node", n.Name, "err", err)
	}
}

// follow is the state of one progress stream.
type follow struct {
	c          *Controller
	j          store.Job
	pool       store.Pool
	n          store.Node
	stop       context.CancelFunc
	lastSave   time.Time
	seenFails  int32 // failed attempts of this agent run already counted
	startBytes int64
	// The latest failure; awaitingRetry: it did not get further, so the
	// agent gives up right after and the backoff decides.
	lastError     string
	retryAfter    time.Duration
	awaitingRetry bool
	notice        string // the latest notice recorded
}

// runningMessage says what a running download does: "downloading on node
// n1 over 4 connections, limited to 50.0 MiB/s".
func runningMessage(st *agentv1.DownloadStatus, node string) string {
	msg := fmt.Sprintf("%s on node %s", st.GetPhase(), node)
	if c := st.GetConnections(); c > 1 {
		msg += fmt.Sprintf(" over %d connections", c)
	}
	if l := st.GetRateLimitBytesPerSecond(); l > 0 {
		msg += ", limited to " + bytesize.Format(uint64(l)) + "/s"
	}
	return msg
}

func (f *follow) handle(ctx context.Context, st *agentv1.DownloadStatus) {
	c, j := f.c, &f.j
	if st.GetFence() != 0 && st.GetFence() != j.Fence {
		return
	}
	if st.GetFailedAttempts() > f.seenFails {
		f.failedAttempts(ctx, st)
	}
	if n := st.GetNotice(); n != "" && n != f.notice {
		// How the download goes on (segments, a fall-back to one stream)
		// is part of its history.
		f.notice = n
		c.event(ctx, j.ID, fmt.Sprintf("node %s: %s", f.n.Name, n))
	}
	switch st.GetState() {
	case agentv1.DownloadState_DOWNLOAD_STATE_RUNNING:
		progressed := j.FailuresInRow > 0 && st.GetBytesDone() > f.startBytes
		if progressed {
			// Getting further refills the retry budget.
			j.FailuresInRow, j.RetrySince = 0, time.Time{}
		} else if time.Since(f.lastSave) < time.Second {
			return
		}
		f.lastSave = time.Now()
		j.Phase, j.BytesDone, j.BytesTotal, j.BytesPerSec = st.GetPhase(), st.GetBytesDone(), st.GetBytesTotal(), st.GetBytesPerSecond()
		j.Message = runningMessage(st, f.n.Name)
		if p := c.planOf(j.ID); p != nil && st.GetPhase() == "copying" {
			j.Message = p.describe(f.n)
		}
		f.save(ctx)
	case agentv1.DownloadState_DOWNLOAD_STATE_SUCCEEDED:
		c.succeed(ctx, *j, f.n, st)
		f.stop()
	case agentv1.DownloadState_DOWNLOAD_STATE_FAILED:
		if p := st.GetPhase(); p != "" {
			j.Phase = p // where it failed: "verifying" for a checksum mismatch
		}
		c.fail(ctx, *j, errclass.FromWire(st.GetErrorClass(), st.GetError()))
		f.stop()
	case agentv1.DownloadState_DOWNLOAD_STATE_UNKNOWN:
		// The agent is not running the job: it gave up for now after a
		// failure (then the backoff decides), or it stopped or restarted
		// (then the next reconcile resumes it).
		if st.GetError() != "" {
			if !f.awaitingRetry {
				// A failure outside the fetch attempts (the checksum
				// file, the pool's disk): it counts like one.
				f.countFailure(ctx, 1, st.GetError(), false, 0)
			}
			f.retryLater(ctx)
		}
		f.stop()
	case agentv1.DownloadState_DOWNLOAD_STATE_FENCED, agentv1.DownloadState_DOWNLOAD_STATE_CANCELLED:
		f.stop()
	}
}

// failedAttempts counts the attempts the agent reports failed.
func (f *follow) failedAttempts(ctx context.Context, st *agentv1.DownloadStatus) {
	n := int(st.GetFailedAttempts() - f.seenFails)
	f.seenFails = st.GetFailedAttempts()
	f.countFailure(ctx, n, st.GetAttemptError(), st.GetAttemptProgressed(), time.Duration(st.GetRetryAfterMs())*time.Millisecond)
	// Only bytes past this failure refill the retry budget.
	f.startBytes = max(f.startBytes, st.GetBytesDone())
}

// countFailure adds n failed attempts, the latest of which met err, and
// writes one history entry for it. An attempt that had got further does
// not count against the retry budget: the agent resumes it at once.
func (f *follow) countFailure(ctx context.Context, n int, err string, progressed bool, retryAfter time.Duration) {
	j, now := &f.j, f.c.cfg.Now()
	f.lastError, f.retryAfter, f.awaitingRetry = err, retryAfter, !progressed
	j.Attempts += n
	msg := fmt.Sprintf("attempt %d failed on node %s: %s", j.Attempts, f.n.Name, err)
	if progressed {
		j.FailuresInRow, j.RetrySince = 0, time.Time{}
		msg += "; it had got further, resuming at once"
	} else {
		if j.FailuresInRow == 0 {
			j.RetrySince = now
		}
		j.FailuresInRow += n
	}
	j.Message, j.UpdatedAt = msg, now
	f.save(ctx)
	f.c.event(ctx, j.ID, msg)
	f.c.cfg.Metrics.DownloadRetries(n)
}

// retryLater schedules the next attempt after a backoff, or fails the job
// when its retry budget is spent.
func (f *follow) retryLater(ctx context.Context) {
	c, j, now := f.c, &f.j, f.c.cfg.Now()
	if j.RetrySince.IsZero() {
		j.RetrySince = now
	}
	if j.FailuresInRow >= c.cfg.MaxAttempts || now.Sub(j.RetrySince) > c.cfg.RetryWindow {
		// A failed download leaves nothing behind: the partial file goes.
		c.stopOnNode(ctx, *j, f.pool)
		c.fail(ctx, *j, errclass.New(errclass.Transient, "gave up after %d failed attempts in a row over %v; the last: %s. Check that the URL serves the file from the nodes (or that the origin is back), then download again",
			j.FailuresInRow, now.Sub(j.RetrySince).Round(time.Second), f.lastError))
		return
	}
	wait := max(reconcile.Backoff(j.FailuresInRow, c.cfg.RetryBase, c.cfg.RetryMax), f.retryAfter)
	j.NextAttemptAt, j.UpdatedAt = now.Add(wait), now
	j.Phase, j.BytesPerSec = "waiting", 0
	j.Message = fmt.Sprintf("attempt %d failed: %s; trying again at %s (in %v; %d of %d attempts in a row)",
		j.Attempts, f.lastError, j.NextAttemptAt.Format(time.TimeOnly), wait.Round(time.Second), j.FailuresInRow, c.cfg.MaxAttempts)
	f.save(ctx)
	c.queue.AddAfter(j.ID, wait)
}

// save stores the job; a job taken over or finished meanwhile ends the
// stream.
func (f *follow) save(ctx context.Context) {
	err := f.c.cfg.Store.UpdateJob(ctx, f.j)
	switch {
	case errors.Is(err, store.ErrConflict):
		f.stop()
	case err != nil && ctx.Err() == nil:
		f.c.log.Warn("saving a job's progress", "job", f.j.ID, "err", err)
	}
}

func (c *Controller) succeed(ctx context.Context, j store.Job, n store.Node, st *agentv1.DownloadStatus) {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		c.log.Warn("finishing a job", "job", j.ID, "err", err)
		return
	}
	now := c.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageReady, "", now
	im.SHA256, im.SizeBytes, im.ModTime, im.VirtualSize = st.GetSha256(), st.GetSize(), now, st.GetVirtualSize()
	if f := st.GetFormat(); f != "" {
		im.Format = f
	}
	j.State, j.FinishedAt, j.UpdatedAt = store.JobSucceeded, now, now
	j.Phase, j.BytesDone, j.BytesTotal, j.BytesPerSec = "finalizing", st.GetSize(), st.GetSize(), 0
	j.NextAttemptAt = time.Time{}
	j.Message, im.Verified = fmt.Sprintf("downloaded on node %s and hashed (no expected checksum given): sha256:%s", n.Name, st.GetSha256()), false
	if j.Checksum != "" || j.ChecksumURL != "" { // the agent fails a download whose digest is not the expected one
		j.Message, im.Verified = fmt.Sprintf("downloaded on node %s and verified: sha256:%s", n.Name, st.GetSha256()), true
	}
	if p := c.planOf(j.ID); p != nil || (j.Kind == KindCopy && j.URL == "") {
		// Verified against the source's recorded digest.
		j.Message, im.Verified = copied(p, n, st), true
	}
	if err := c.cfg.Store.FinishJob(ctx, j, im); err != nil {
		c.log.Warn("finishing a job", "job", j.ID, "err", err)
		return
	}
	c.event(ctx, j.ID, j.Message)
	c.cfg.Metrics.DownloadFinished(metrics.Succeeded, now.Sub(j.CreatedAt), st.GetFetchedBytes())
	c.log.Info("download succeeded", "job", j.ID, "node", n.Name, "image", im.Name, "bytes", st.GetSize(), "fetched", st.GetFetchedBytes())
}

// fail ends the job and marks its image ERROR with why, whose message says
// what to do; the history names its class.
func (c *Controller) fail(ctx context.Context, j store.Job, why error) error {
	msg := why.Error()
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	now := c.cfg.Now()
	im.State, im.StateReason, im.UpdatedAt = store.ImageError, msg, now
	j.State, j.Message, j.FinishedAt, j.UpdatedAt = store.JobFailed, msg, now, now
	j.BytesPerSec, j.NextAttemptAt = 0, time.Time{}
	if err := c.cfg.Store.FinishJob(ctx, j, im, errclass.Failure(why)); err != nil {
		return err
	}
	c.cfg.Metrics.DownloadFinished(metrics.Failed, now.Sub(j.CreatedAt), 0)
	c.log.Info("download failed", "job", j.ID, "err", msg)
	return nil
}

// stopOnNode stops the job on its node and removes its partial file.
func (c *Controller) stopOnNode(ctx context.Context, j store.Job, pool store.Pool) {
	if j.State != store.JobRunning || j.NodeID == "" {
		return
	}
	cctx, done := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer done()
	if err := c.cfg.Agents.Cancel(cctx, j.NodeID, j.ID, pool); err != nil {
		c.log.Info("stopping a download on its node failed; its partial file is left for cleanup", "job", j.ID, "err", err)
	}
}

// cancel stops the job on its node (removing the partial file), and ends it
// and deletes its image record together.
func (c *Controller) cancel(ctx context.Context, j store.Job, pool store.Pool) error {
	c.stopOnNode(ctx, j, pool)
	now := c.cfg.Now()
	j.State, j.Message, j.FinishedAt, j.UpdatedAt = store.JobCancelled, "cancelled", now, now
	j.BytesPerSec, j.NextAttemptAt = 0, time.Time{}
	if err := c.cfg.Store.DiscardJob(ctx, j, "cancelled"); err != nil {
		return err
	}
	c.forget(j.ID)
	c.cfg.Metrics.DownloadFinished(metrics.Cancelled, now.Sub(j.CreatedAt), 0)
	return nil
}

func (c *Controller) setImageState(ctx context.Context, j store.Job, s store.ImageState, reason string) error {
	im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
	if err != nil {
		return err
	}
	im.State, im.StateReason, im.UpdatedAt = s, reason, c.cfg.Now()
	return c.cfg.Store.UpdateImage(ctx, im)
}

func (c *Controller) event(ctx context.Context, jobID, msg string) {
	if err := c.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: jobID, Time: c.cfg.Now(), Message: msg}); err != nil && ctx.Err() == nil {
		c.log.Warn("recording a job event", "job", jobID, "err", err)
	}
}
