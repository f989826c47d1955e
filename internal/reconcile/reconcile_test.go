package reconcile

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run starts q and returns a function that stops it and waits for Run.
func run(t *testing.T, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOneWorkerPerKeyAndDedup(t *testing.T) {
	var mu sync.Mutex
	inFlight, calls, maxInFlight := map[string]int{}, map[string]int{}, 0
	release := make(chan struct{})
	q := New(Config{Workers: 4, Reconcile: func(ctx context.Context, key string) (Result, error) {
		mu.Lock()
		inFlight[key]++
		calls[key]++
		if inFlight[key] > maxInFlight {
			maxInFlight = inFlight[key]
		}
		first := calls[key] == 1
		mu.Unlock()
		if first && key == "a" {
			<-release
		}
		mu.Lock()
		inFlight[key]--
		mu.Unlock()
		return Result{}, nil
	}})
	run(t, q)
	q.Add("a")
	waitFor(t, "a to start", func() bool { mu.Lock(); defer mu.Unlock(); return calls["a"] == 1 })
	// Added five times while it runs: reconciled once more after, never
	// beside itself.
	for range 5 {
		q.Add("a")
	}
	q.Add("b")
	q.Add("b")
	close(release)
	waitFor(t, "a again and b", func() bool { mu.Lock(); defer mu.Unlock(); return calls["a"] == 2 && calls["b"] >= 1 })
	waitFor(t, "the queue to drain", func() bool { return q.Len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight != 1 || calls["a"] != 2 || calls["b"] > 2 {
		t.Fatalf("max in flight %d, calls %v; want 1 and a twice", maxInFlight, calls)
	}
}

func TestFailuresBackOffAndTerminalStops(t *testing.T) {
	var mu sync.Mutex
	times := map[string][]time.Time{}
	q := New(Config{BaseDelay: 20 * time.Millisecond, MaxDelay: time.Second, Reconcile: func(ctx context.Context, key string) (Result, error) {
		mu.Lock()
		defer mu.Unlock()
		times[key] = append(times[key], time.Now())
		if key == "terminal" {
			return Result{}, Terminal(errors.New("bad input"))
		}
		if len(times[key]) < 4 {
			return Result{}, errors.New("not yet")
		}
		return Result{}, nil
	}})
	run(t, q)
	q.Add("flaky")
	q.Add("terminal")
	waitFor(t, "four tries", func() bool { mu.Lock(); defer mu.Unlock(); return len(times["flaky"]) == 4 })
	mu.Lock()
	ts := times["flaky"]
	mu.Unlock()
	// Each retry waits at least the doubled delay less the jitter (10 %);
	// a loaded machine only makes the waits longer.
	want := 20 * time.Millisecond
	for i := 1; i < len(ts); i++ {
		if gap := ts[i].Sub(ts[i-1]); gap < want*9/10 {
			t.Errorf("retry %d after %v; want at least %v (the base delay doubled per failure, less jitter)", i, gap, want*9/10)
		}
		want *= 2
	}
	mu.Lock()
	defer mu.Unlock()
	if n := len(times["terminal"]); n != 1 {
		t.Errorf("terminal key reconciled %d times; want 1", n)
	}
}

func TestAfterRequeuesAndAddComesEarlier(t *testing.T) {
	var calls atomic.Int32
	q := New(Config{Reconcile: func(ctx context.Context, key string) (Result, error) {
		if calls.Add(1) == 1 {
			return Result{After: time.Hour}, nil
		}
		return Result{}, nil
	}})
	run(t, q)
	q.Add("k")
	waitFor(t, "the first reconcile", func() bool { return calls.Load() == 1 && q.Len() == 1 })
	q.AddAfter("k", 10*time.Millisecond) // earlier than the hour: wins
	waitFor(t, "the early reconcile", func() bool { return calls.Load() == 2 })
	waitFor(t, "nothing left", func() bool { return q.Len() == 0 })
}

func TestRunWaitsForReconciles(t *testing.T) {
	started, finished := make(chan struct{}), atomic.Bool{}
	q := New(Config{Reconcile: func(ctx context.Context, key string) (Result, error) {
		close(started)
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // work that outlives the cancel
		finished.Store(true)
		return Result{}, ctx.Err()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	q.Add("k")
	<-started
	cancel()
	<-done
	if !finished.Load() {
		t.Fatal("Run returned before its reconcile did")
	}
	q.Add("late") // after Run: ignored, no goroutine, no panic
	if q.Len() != 0 {
		t.Fatalf("a key was queued after Run returned")
	}
}

func TestBackoffGrowsToTheCap(t *testing.T) {
	prevMax := time.Duration(0)
	for n := 1; n <= 12; n++ {
		d := Backoff(n, time.Second, time.Minute)
		if d < prevMax || d > 66*time.Second {
			t.Fatalf("Backoff(%d) = %v after a maximum of %v", n, d, prevMax)
		}
		prevMax = min(time.Second<<(n-1), time.Minute) * 9 / 10
	}
}
