// Package discovery keeps the library in step with the ISO files in every
// pool's iso/ directory: scans 5 s after start, on an interval, on demand
// and on the agents' file events; at most one scan per pool at a time, with
// triggers that arrive meanwhile coalesced into one more scan. Every scan
// goes through the node-choice helper and reports, per pool, the node used
// and what changed — or why the pool was skipped.
package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/reconcile"
	"github.com/quarry-project/quarry/internal/store"
)

// Lister asks a node for the ISOs of a pool; progress receives the number
// of files listed so far.
type Lister interface {
	ListISOs(ctx context.Context, nodeID string, pool store.Pool, progress func(seen int)) ([]File, error)
}

// Triggers, as reported in results.
const (
	TriggerManual   = "manual"
	TriggerStartup  = "startup"
	TriggerPeriodic = "periodic"
	TriggerEvent    = "event"
	TriggerSettle   = "settle"
)

// Config configures a Controller. Zero durations take the defaults.
type Config struct {
	Store   store.Store
	Chooser *placement.Chooser
	Lister  Lister
	// StartDelay is the wait before the first scan of every pool (5 s).
	StartDelay time.Duration
	// Interval between periodic scans of every pool (5 min); negative
	// turns periodic scans off.
	Interval time.Duration
	// Settle is how long a file must go unchanged before it is registered
	// when no node saw its writer close it (3 s).
	Settle time.Duration
	// ScanTimeout bounds one pool's scan (2 min).
	ScanTimeout time.Duration
	Logger      *slog.Logger
	Now         func() time.Time

	// Metrics counts scans and the files they saw; nil counts nothing.
	Metrics *metrics.Metrics
}

// Result is one pool's scan.
type Result struct {
	PoolID, PoolName string
	NodeID, NodeName string
	Counts
	Duration   time.Duration
	Skipped    bool
	SkipReason string
	FinishedAt time.Time
	Trigger    string
}

// Running is a scan in progress.
type Running struct {
	PoolID, PoolName, NodeName string
	FilesSeen                  int
	StartedAt                  time.Time
	Trigger                    string
}

// Controller runs scans: pools are keys of a reconcile.Queue, which runs
// at most one scan of a pool at a time and folds the triggers that arrive
// meanwhile into one more.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	queue *reconcile.Queue

	mu    sync.Mutex
	pools map[string]*poolScan
}

// poolScan is the scan state of one pool. Guarded by Controller.mu.
type poolScan struct {
	running *Running
	// trigger says why the next scan runs; waiters get its result.
	trigger string
	waiters []chan Result
	last    *Result
}

// New returns a Controller; call Run to start the scheduled scans.
func New(cfg Config) *Controller {
	if cfg.StartDelay == 0 {
		cfg.StartDelay = 5 * time.Second
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Minute
	}
	if cfg.Settle == 0 {
		cfg.Settle = 3 * time.Second
	}
	if cfg.ScanTimeout == 0 {
		cfg.ScanTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "discovery"), pools: map[string]*poolScan{}}
	c.queue = reconcile.New(reconcile.Config{Name: "discovery", Reconcile: c.reconcile, Logger: cfg.Logger})
	return c
}

// Run scans every pool after the start delay and then on the interval,
// until ctx is done. It returns once every scan it started has ended; scans
// still waited for are answered that the control plane is shutting down.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.queue.Run(ctx) })
	c.schedule(ctx)
	wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ps := range c.pools {
		for _, w := range ps.waiters {
			w <- Result{PoolID: id, Skipped: true, SkipReason: "the control plane is shutting down", Trigger: ps.trigger}
		}
		ps.waiters = nil
	}
}

// schedule triggers the startup scan and the periodic ones until ctx is
// done.
func (c *Controller) schedule(ctx context.Context) {
	t := time.NewTimer(c.cfg.StartDelay)
	defer t.Stop()
	trigger := TriggerStartup
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pools, err := c.cfg.Store.ListPools(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("listing pools to scan", "err", err)
		}
		for _, p := range pools {
			c.start(p.ID, trigger, nil)
		}
		if c.cfg.Interval < 0 {
			<-ctx.Done()
			return
		}
		trigger = TriggerPeriodic
		t.Reset(c.cfg.Interval)
	}
}

// Trigger asks for a scan of the pool soon; it returns at once.
func (c *Controller) Trigger(poolID, trigger string) {
	c.start(poolID, trigger, nil)
}

// Scan scans the given pools (every pool when none is given) and returns
// their results once a scan that started after the call has finished for
// each. ctx bounds only the wait: scans keep running for other waiters.
func (c *Controller) Scan(ctx context.Context, poolIDs ...string) ([]Result, error) {
	if len(poolIDs) == 0 {
		pools, err := c.cfg.Store.ListPools(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range pools {
			poolIDs = append(poolIDs, p.ID)
		}
	}
	waits := make([]chan Result, len(poolIDs))
	for i, id := range poolIDs {
		waits[i] = make(chan Result, 1)
		c.start(id, TriggerManual, waits[i])
	}
	results := make([]Result, len(poolIDs))
	for i, w := range waits {
		select {
		case results[i] = <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return results, nil
}

// Status returns the scans running now and the last result of every pool.
func (c *Controller) Status() (running []Running, last []Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ps := range c.pools {
		if ps.running != nil {
			running = append(running, *ps.running)
		}
		if ps.last != nil {
			last = append(last, *ps.last)
		}
	}
	return running, last
}

// start asks for a scan of the pool: now, or once the running one ends.
// wait, if set, receives the result of a scan that starts no earlier than
// this call.
func (c *Controller) start(poolID, trigger string, wait chan Result) {
	c.mu.Lock()
	ps := c.pool(poolID)
	if ps.trigger == "" || trigger == TriggerManual {
		ps.trigger = trigger
	}
	if wait != nil {
		ps.waiters = append(ps.waiters, wait)
	}
	c.mu.Unlock()
	c.queue.Add(poolID)
}

// pool returns the scan state of a pool. Called with c.mu held.
func (c *Controller) pool(poolID string) *poolScan {
	ps, ok := c.pools[poolID]
	if !ok {
		ps = &poolScan{}
		c.pools[poolID] = ps
	}
	return ps
}

// reconcile scans one pool for everyone who asked before it started.
func (c *Controller) reconcile(ctx context.Context, poolID string) (reconcile.Result, error) {
	c.mu.Lock()
	ps := c.pool(poolID)
	trigger, waiters := ps.trigger, ps.waiters
	if trigger == "" {
		trigger = TriggerSettle // only a settle timer adds a pool without a trigger
	}
	ps.trigger, ps.waiters = "", nil
	ps.running = &Running{PoolID: poolID, StartedAt: c.cfg.Now(), Trigger: trigger}
	c.mu.Unlock()

	r := c.scan(ctx, poolID, trigger)
	c.cfg.Metrics.ScanFinished(trigger, r.Skipped, r.Duration)
	if ctx.Err() != nil && r.Skipped {
		r.SkipReason = "the control plane is shutting down"
	}
	c.mu.Lock()
	ps.running = nil
	if r.PoolName != "" {
		ps.last = &r
	}
	c.mu.Unlock()
	for _, w := range waiters {
		w <- r
	}
	return reconcile.Result{}, nil
}

// scan does one pool's scan through the first node that can.
func (c *Controller) scan(ctx context.Context, poolID, trigger string) Result {
	start := c.cfg.Now()
	r := Result{PoolID: poolID, Trigger: trigger}
	finish := func() Result {
		r.FinishedAt = c.cfg.Now()
		r.Duration = r.FinishedAt.Sub(start)
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ScanTimeout)
	defer cancel()
	pool, err := c.cfg.Store.GetPool(ctx, poolID)
	if err != nil {
		r.Skipped, r.SkipReason = true, fmt.Sprintf("pool %s cannot be read: %v", poolID, err)
		if errors.Is(err, store.ErrNotFound) {
			r.SkipReason = "the pool no longer exists"
		}
		return finish()
	}
	r.PoolName = pool.Name
	c.setRunning(poolID, func(rs *Running) { rs.PoolName = pool.Name })

	choice, err := c.cfg.Chooser.Choose(ctx, pool.ID)
	if err != nil {
		r.Skipped, r.SkipReason = true, err.Error()
		c.log.Info("pool skipped", "pool", pool.Name, "reason", r.SkipReason)
		return finish()
	}
	var files []File
	var failures []string
	for _, cand := range choice.Kept {
		c.setRunning(poolID, func(rs *Running) { rs.NodeName, rs.FilesSeen = cand.Node.Name, 0 })
		files, err = c.cfg.Lister.ListISOs(ctx, cand.Node.ID, pool, func(seen int) {
			c.setRunning(poolID, func(rs *Running) { rs.FilesSeen = seen })
		})
		if err == nil {
			r.NodeID, r.NodeName = cand.Node.ID, cand.Node.Name
			break
		}
		failures = append(failures, fmt.Sprintf("%s: %v", cand.Node.Name, err))
	}
	c.cfg.Metrics.ScanFilesSeen(len(files))
	if r.NodeID == "" {
		r.Skipped = true
		r.SkipReason = fmt.Sprintf("no node could list pool %q: %v", pool.Name, failures)
		return finish()
	}

	lib, err := ReadLibrary(ctx, c.cfg.Store, pool.ID)
	if err != nil {
		r.Skipped, r.SkipReason = true, "reading the library: "+err.Error()
		return finish()
	}
	changes, counts, settleAt := Reconcile(pool, lib, files, c.cfg.Now(), c.cfg.Settle, newID)
	skipped, err := c.cfg.Store.ApplyScan(ctx, pool.ID, changes)
	if err != nil {
		r.Skipped, r.SkipReason = true, "saving the scan: "+err.Error()
		return finish()
	}
	if skipped > 0 {
		c.log.Info("scan changes skipped: images changed meanwhile", "pool", pool.Name, "skipped", skipped)
	}
	r.Counts = counts
	if !settleAt.IsZero() {
		c.rescanAt(pool.ID, settleAt)
	}
	r = finish()
	c.log.Info("pool scanned", "pool", pool.Name, "node", r.NodeName, "trigger", trigger,
		"discovered", counts.Discovered, "updated", counts.Updated, "missing", counts.Missing,
		"moved", counts.Moved, "changed", counts.Changed, "deferred", counts.Deferred, "duration", r.Duration)
	return r
}

func (c *Controller) setRunning(poolID string, f func(*Running)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ps := c.pools[poolID]; ps != nil && ps.running != nil {
		f(ps.running)
	}
}

// rescanAt schedules one scan of the pool when deferred files have settled.
func (c *Controller) rescanAt(poolID string, at time.Time) {
	c.queue.AddAfter(poolID, max(at.Sub(c.cfg.Now()), 0)+10*time.Millisecond)
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "img-" + hex.EncodeToString(b)
}
