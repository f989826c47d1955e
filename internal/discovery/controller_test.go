package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// listerFunc lets a test control what a node lists and when. End-to-end
// tests in internal/e2e scan through real agents.
type listerFunc func(ctx context.Context, nodeID string, pool store.Pool, progress func(int)) ([]File, error)

func (f listerFunc) ListISOs(ctx context.Context, nodeID string, pool store.Pool, progress func(int)) ([]File, error) {
	return f(ctx, nodeID, pool, progress)
}

type noConnect struct{}

func (noConnect) Connect(context.Context, string) (store.Node, []store.PoolMount, error) {
	return store.Node{}, nil, errors.New("not reachable")
}

// fixture is a store with node n1 READY and mounting pool "isos", and pool
// "nowhere" that no node mounts.
func fixture(t *testing.T, lister Lister) (*Controller, store.Store) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlstore.OpenSQLite(ctx, t.TempDir()+"/q.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateNode(ctx, store.Node{ID: "n1", Name: "n1", Address: "10.0.0.1:9090", State: store.NodeUnknown, CreatedAt: now}))
	must(st.CreatePool(ctx, store.Pool{ID: "p", Name: "isos", Type: "dir", Path: "/srv/isos", AssignedNodeIDs: []string{"n1"}, CreatedAt: now}))
	must(st.CreatePool(ctx, store.Pool{ID: "q", Name: "nowhere", Type: "dir", Path: "/srv/nowhere", CreatedAt: now}))
	must(st.RecordNodeCheck(ctx, "n1", store.NodeStatus{State: store.NodeReady, StateSince: now, LastCheckedAt: now},
		[]store.PoolMount{{NodeID: "n1", PoolID: "p", Mounted: true, CheckedAt: now}, {NodeID: "n1", PoolID: "q", Reason: "path /srv/nowhere does not exist on this node", CheckedAt: now}}))
	c := New(Config{Store: st, Chooser: &placement.Chooser{Store: st, Link: noConnect{}}, Lister: lister,
		Interval: -1, StartDelay: time.Hour, Settle: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, st
}

func TestScanCoalesces(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	entered := make(chan int, 10)
	c, _ := fixture(t, listerFunc(func(ctx context.Context, _ string, _ store.Pool, _ func(int)) ([]File, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		entered <- n
		if n == 1 {
			<-release
		}
		return []File{{RelPath: "iso/a.iso", Size: 1, ModTime: time.Unix(1, 0)}}, nil
	}))

	first := make(chan []Result, 1)
	go func() {
		r, _ := c.Scan(t.Context(), "p")
		first <- r
	}()
	<-entered // scan 1 is running
	for range 3 {
		c.Trigger("p", TriggerEvent)
	}
	second := make(chan []Result, 1)
	go func() {
		r, _ := c.Scan(t.Context(), "p")
		second <- r
	}()
	// The manual scan must wait for the scan after the running one.
	waitFor(t, func() bool {
		running, _ := c.Status()
		return len(running) == 1
	})
	close(release)
	r1 := <-first
	r2 := <-second
	if r1[0].Discovered != 1 || r2[0].Discovered != 0 {
		t.Errorf("first scan discovered %d, second %d; want 1 then 0", r1[0].Discovered, r2[0].Discovered)
	}
	if n := <-entered; n != 2 {
		t.Fatalf("follow-up scan number %d", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("%d scans ran; want 2 (one running + one coalesced follow-up)", calls)
	}
	if r2[0].NodeName != "n1" || r2[0].PoolName != "isos" {
		t.Errorf("result %+v", r2[0])
	}
}

func TestScanSkipsUnreachablePool(t *testing.T) {
	c, _ := fixture(t, listerFunc(func(context.Context, string, store.Pool, func(int)) ([]File, error) {
		t.Error("the lister must not be asked about a pool no node mounts")
		return nil, nil
	}))
	rs, err := c.Scan(t.Context(), "q")
	if err != nil {
		t.Fatal(err)
	}
	if !rs[0].Skipped || !strings.Contains(rs[0].SkipReason, `no node can reach pool "nowhere"`) ||
		!strings.Contains(rs[0].SkipReason, "does not exist on this node") {
		t.Errorf("result %+v", rs[0])
	}
}

func TestScanDefersFilesBeingWritten(t *testing.T) {
	var mu sync.Mutex
	writing := true
	c, st := fixture(t, listerFunc(func(context.Context, string, store.Pool, func(int)) ([]File, error) {
		mu.Lock()
		defer mu.Unlock()
		return []File{{RelPath: "iso/big.iso", Size: 9, ModTime: time.Unix(1, 0), Writing: writing, Settled: !writing}}, nil
	}))
	rs, err := c.Scan(t.Context(), "p")
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Deferred != 1 || rs[0].Discovered != 0 {
		t.Fatalf("result %+v; want the file deferred", rs[0])
	}
	mu.Lock()
	writing = false
	mu.Unlock()
	// The settle rescan registers it without anyone asking.
	waitFor(t, func() bool {
		ims, err := st.ListImages(t.Context(), store.ImageFilter{PoolID: "p"})
		return err == nil && len(ims) == 1 && ims[0].State == store.ImageReady
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventScanMoves: a scan triggered by a file event after a rename
// moves the image in the store: same id, new path, nothing MISSING, and
// the result counts it.
func TestEventScanMoves(t *testing.T) {
	var mu sync.Mutex
	listed := []File{{RelPath: "iso/a.iso", Size: 7, ModTime: time.Unix(100, 0), Label: "A"}}
	c, st := fixture(t, listerFunc(func(context.Context, string, store.Pool, func(int)) ([]File, error) {
		mu.Lock()
		defer mu.Unlock()
		return append([]File(nil), listed...), nil
	}))
	if _, err := c.Scan(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	before, err := st.ListImages(t.Context(), store.ImageFilter{PoolID: "p"})
	if err != nil || len(before) != 1 {
		t.Fatalf("images %v, %v; want a.iso", before, err)
	}
	mu.Lock()
	listed = []File{{RelPath: "iso/sub/b.iso", Size: 7, ModTime: time.Unix(100, 0), Label: "A"}}
	mu.Unlock()
	c.Trigger("p", TriggerEvent)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, last := c.Status()
		if len(last) == 1 && last[0].Trigger == TriggerEvent {
			if last[0].Moved != 1 || last[0].Missing != 0 || last[0].Discovered != 0 {
				t.Errorf("event scan %+v; want 1 moved", last[0].Counts)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no event scan within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, err := st.ListImages(t.Context(), store.ImageFilter{PoolID: "p"})
	if err != nil || len(after) != 1 || after[0].ID != before[0].ID || after[0].RelPath != "iso/sub/b.iso" ||
		after[0].Name != "b.iso" || after[0].State != store.ImageReady {
		t.Errorf("images after the rename %+v, %v; want %s at iso/sub/b.iso", after, err, before[0].ID)
	}
}
