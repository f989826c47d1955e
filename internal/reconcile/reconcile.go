// Package reconcile is the work-queue machinery every control-plane
// controller runs on: a controller reconciles one key (a job id, a pool id)
// at a time — it re-reads the state, moves it one step toward where it
// should be, and says whether and when to look again.
//
// The contract, after controller-runtime:
//   - Keys are deduplicated: a key added while it waits is queued once; a
//     key added while it is being reconciled is reconciled once more after.
//   - One key is never reconciled by two workers at once; at most Workers
//     keys are reconciled at a time.
//   - A reconcile that fails is retried after a per-key exponential backoff
//     with jitter, capped; one that succeeds forgets the key's failures. A
//     Terminal error is logged and not retried.
//   - Result.After asks for the key again after a delay; an Add before then
//     reconciles it earlier (the state, not the queue, decides).
//   - Run returns only after every worker and timer it started has exited.
//
// Nothing is polled: a key is reconciled when something adds it.
package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Func reconciles one key.
type Func func(ctx context.Context, key string) (Result, error)

// Result says when to reconcile a key again; zero means only when it is
// added again.
type Result struct {
	After time.Duration
}

// terminalError marks an error retrying cannot fix.
type terminalError struct{ err error }

func (e terminalError) Error() string { return e.err.Error() }
func (e terminalError) Unwrap() error { return e.err }

// Terminal wraps err so that the queue logs it and does not retry the key.
func Terminal(err error) error { return terminalError{err} }

// IsTerminal reports whether err was made by Terminal.
func IsTerminal(err error) bool {
	var t terminalError
	return errors.As(err, &t)
}

// Config configures a Queue. Zero values take the defaults.
type Config struct {
	// Name is logged with every failure ("download", "scan").
	Name      string
	Reconcile Func
	// Workers bounds keys reconciled at once (4).
	Workers int
	// BaseDelay is the backoff after a key's first failure (1 s); it
	// doubles with every further failure up to MaxDelay (5 min).
	BaseDelay, MaxDelay time.Duration
	Logger              *slog.Logger
}

// Queue feeds keys to a reconcile function.
type Queue struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []string
	dirty      map[string]bool      // queued, or to be queued again after processing
	processing map[string]bool      // being reconciled now
	delayed    map[string]time.Time // keys to add at a time
	failures   map[string]int
	stopping   bool
	wake       chan struct{} // a delayed key was added: recompute the timer
}

// New returns a Queue; Run starts its workers.
func New(cfg Config) *Queue {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = time.Second
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	q := &Queue{
		cfg:        cfg,
		log:        cfg.Logger.With("component", cfg.Name),
		dirty:      map[string]bool{},
		processing: map[string]bool{},
		delayed:    map[string]time.Time{},
		failures:   map[string]int{},
		wake:       make(chan struct{}, 1),
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add asks for key to be reconciled as soon as a worker is free.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.add(key)
}

// add queues key. Called with q.mu held.
func (q *Queue) add(key string) {
	if q.stopping || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if q.processing[key] {
		return // queued again when its reconcile ends
	}
	q.queue = append(q.queue, key)
	q.cond.Signal()
}

// AddAfter asks for key to be reconciled after d; an earlier request for
// the same key wins.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopping {
		return
	}
	at := time.Now().Add(d)
	if cur, ok := q.delayed[key]; ok && !at.Before(cur) {
		return
	}
	q.delayed[key] = at
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Len reports how many keys wait now or later, for tests and metrics.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue) + len(q.delayed)
}

// Run reconciles keys until ctx is done, then waits for the reconciles in
// progress (their ctx is cancelled) and returns.
func (q *Queue) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range q.cfg.Workers {
		wg.Go(func() { q.work(ctx) })
	}
	wg.Go(func() { q.timers(ctx) })
	<-ctx.Done()
	q.mu.Lock()
	q.stopping = true
	q.cond.Broadcast()
	q.mu.Unlock()
	wg.Wait()
}

// timers moves delayed keys into the queue when they are due.
func (q *Queue) timers(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		now, next := time.Now(), time.Duration(-1)
		for key, at := range q.delayed {
			if d := at.Sub(now); d <= 0 {
				delete(q.delayed, key)
				q.add(key)
			} else if next < 0 || d < next {
				next = d
			}
		}
		q.mu.Unlock()
		if next < 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-t.C:
		}
	}
}

// get waits for a key; false when the queue stops.
func (q *Queue) get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.stopping {
		q.cond.Wait()
	}
	if q.stopping {
		return "", false
	}
	key := q.queue[0]
	q.queue = q.queue[1:]
	delete(q.dirty, key)
	q.processing[key] = true
	return key, true
}

func (q *Queue) work(ctx context.Context) {
	for {
		key, ok := q.get()
		if !ok {
			return
		}
		res, err := q.cfg.Reconcile(ctx, key)
		q.done(ctx, key, res, err)
	}
}

// done records how a reconcile ended and schedules the key's next one.
func (q *Queue) done(ctx context.Context, key string, res Result, err error) {
	q.mu.Lock()
	delete(q.processing, key)
	if q.dirty[key] && !q.stopping {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
	var retry time.Duration
	switch {
	case err == nil:
		delete(q.failures, key)
	case IsTerminal(err):
		delete(q.failures, key)
	default:
		q.failures[key]++
		retry = Backoff(q.failures[key], q.cfg.BaseDelay, q.cfg.MaxDelay)
	}
	q.mu.Unlock()

	switch {
	case err != nil && ctx.Err() != nil:
		return // stopping: the failure is the cancellation
	case IsTerminal(err):
		q.log.Warn("reconcile failed for good", "key", key, "err", err)
	case err != nil:
		q.log.Warn("reconcile failed; retrying", "key", key, "err", err, "retry_in", retry.Round(time.Millisecond))
		q.AddAfter(key, retry)
		return
	}
	if res.After > 0 {
		q.AddAfter(key, res.After)
	}
}

// Backoff is the wait after the n-th failure in a row (n ≥ 1): base,
// doubled per further failure, capped at max, jittered by ±10 % so that
// keys that failed together do not retry together. Up to the cap every
// wait is longer than the one before.
func Backoff(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}
