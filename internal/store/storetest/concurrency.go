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

// testConcurrency does what a busy control plane does: the node link records
// checks for every node while API calls create pools and read. No call may
// fail just because another one ran at the same time.
func testConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	const (
		nodes  = 6
		rounds = 15
		pools  = 12
	)
	var nodeIDs []string
	for i := range nodes {
		nodeIDs = append(nodeIDs, fmt.Sprintf("n%d", i+1))
	}
	mustCreateNodes(t, s, nodeIDs...)
	mustCreatePool(t, s, pool("p0", nodeIDs[0]))

	var wg sync.WaitGroup
	errs := make(chan error, nodes*rounds+pools*2)
	for _, id := range nodeIDs {
		wg.Go(func() {
			for r := range rounds {
				st := store.NodeStatus{State: store.NodeReady, LastCheckedAt: at(time.Duration(r) * time.Second)}
				ms := []store.PoolMount{{NodeID: id, PoolID: "p0", Mounted: true, FreeBytes: uint64(r), CheckedAt: st.LastCheckedAt}}
				if err := s.RecordNodeCheck(ctx, id, st, ms); err != nil {
					errs <- fmt.Errorf("RecordNodeCheck(%s) round %d: %w", id, r, err)
				}
			}
		})
	}
	for i := range pools {
		wg.Go(func() {
			p := pool(fmt.Sprintf("p%d", i+1), nodeIDs[i%nodes], nodeIDs[(i+1)%nodes])
			if err := s.CreatePool(ctx, p); err != nil {
				errs <- fmt.Errorf("CreatePool(%s): %w", p.ID, err)
			}
			if _, err := s.ListPools(ctx); err != nil {
				errs <- fmt.Errorf("ListPools: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	ps, err := s.ListPools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != pools+1 {
		t.Errorf("%d pools, want %d", len(ps), pools+1)
	}
	ms := mustMounts(t, s)
	if len(ms) != nodes {
		t.Fatalf("%d mounts, want %d", len(ms), nodes)
	}
	for _, m := range ms {
		if m.FreeBytes != rounds-1 {
			t.Errorf("mount of %s: FreeBytes = %d, want the last round's %d", m.NodeID, m.FreeBytes, rounds-1)
		}
	}
	for _, id := range nodeIDs {
		if got := mustGetNode(t, s, id).LastCheckedAt; !got.Equal(at((rounds - 1) * time.Second)) {
			t.Errorf("node %s LastCheckedAt = %v, want the last round's", id, got)
		}
	}
}

// testTokenConcurrency races uses of one token: the store, not the caller,
// must make "single use" hold, since every control-plane replica may be
// handed the same join token at once.
func testTokenConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	const racers = 20

	race := func(s store.Store, id string) (ok, conflicts int, errs []error) {
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		start := make(chan struct{})
		for i := range racers {
			wg.Go(func() {
				<-start
				_, err := s.UseToken(ctx, id, at(time.Duration(i+1)*time.Second))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, store.ErrConflict):
					conflicts++
				default:
					errs = append(errs, fmt.Errorf("UseToken(%s) #%d: %w", id, i, err))
				}
			})
		}
		close(start)
		wg.Wait()
		return ok, conflicts, errs
	}

	t.Run("single-use token", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, joinToken("j1"))
		ok, conflicts, errs := race(s, "j1")
		for _, err := range errs {
			t.Error(err)
		}
		if ok != 1 || conflicts != racers-1 {
			t.Errorf("%d uses succeeded and %d got ErrConflict; want 1 and %d", ok, conflicts, racers-1)
		}
		if got := mustGetToken(t, s, "j1"); got.UseCount != 1 || got.LastUsedAt.IsZero() {
			t.Errorf("after the race: UseCount = %d, LastUsedAt = %v; want 1 and the winner's time", got.UseCount, got.LastUsedAt)
		}
	})

	t.Run("reusable token", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, token("t1"))
		ok, conflicts, errs := race(s, "t1")
		for _, err := range errs {
			t.Error(err)
		}
		if ok != racers || conflicts != 0 {
			t.Errorf("%d uses succeeded and %d got ErrConflict; want %d and 0", ok, conflicts, racers)
		}
		if got := mustGetToken(t, s, "t1").UseCount; got != racers {
			t.Errorf("UseCount = %d after %d concurrent uses: uses were lost", got, racers)
		}
	})
}

// testAuditConcurrency appends from many goroutines at once, as concurrent
// API calls do: every entry gets its own id, ids grow in the order appends
// return, and the log lists them all.
func testAuditConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	const (
		writers = 10
		each    = 10
	)
	ids := make([][]int64, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := auditEntry(i)
				e.Actor = fmt.Sprintf("writer-%d", w)
				id, err := s.AppendAudit(ctx, e)
				if err != nil {
					errs <- fmt.Errorf("AppendAudit writer %d #%d: %w", w, i, err)
					continue
				}
				ids[w] = append(ids[w], id)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	seen := map[int64]bool{}
	for w, ws := range ids {
		for i, id := range ws {
			if seen[id] {
				t.Errorf("id %d handed out twice", id)
			}
			seen[id] = true
			// One writer's appends happen one after another, so their
			// ids must grow.
			if i > 0 && id <= ws[i-1] {
				t.Errorf("writer %d got id %d after %d", w, id, ws[i-1])
			}
		}
	}
	es := mustListAudit(t, s, 0, 1000)
	if len(es) != writers*each {
		t.Fatalf("ListAudit returned %d entries, want %d", len(es), writers*each)
	}
	for i, e := range es {
		if !seen[e.ID] {
			t.Errorf("listed id %d was not returned by AppendAudit", e.ID)
		}
		if i > 0 && e.ID >= es[i-1].ID {
			t.Errorf("ListAudit not newest first: id %d after %d", e.ID, es[i-1].ID)
		}
	}
}

// testContext checks that a cancelled context stops every method.
func testContext(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateNodes(t, s, "n1")
	mustCreatePool(t, s, pool("p1", "n1"))
	im := image("im1", "p1", "iso/a.iso")
	mustCreateImages(t, s, im)
	mustCreateTokens(t, s, token("t1"))
	mustCreateSessions(t, s, session("s1", "t1"))
	if _, err := s.AppendAudit(context.Background(), auditEntry(1)); err != nil {
		t.Fatal(err)
	}
	dlIm, dlJob := download("j1", "im-dl", "p1", "src")
	mustCreateDownload(t, s, dlIm, dlJob)
	ev := store.JobEvent{JobID: "j1", Time: t0, Message: "queued"}
	if err := s.AppendJobEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	ops := []struct {
		name string
		op   func() error
	}{
		{"CreateNode", func() error { return s.CreateNode(ctx, node("n2")) }},
		{"GetNode", func() error { _, err := s.GetNode(ctx, "n1"); return err }},
		{"GetNodeByName", func() error { _, err := s.GetNodeByName(ctx, "node-n1"); return err }},
		{"ListNodes", func() error { _, err := s.ListNodes(ctx); return err }},
		{"UpdateNode", func() error { return s.UpdateNode(ctx, "n1", "node-n1", "10.1.1.1:9090") }},
		{"DeleteNode", func() error { return s.DeleteNode(ctx, "n1") }},
		{"RecordNodeCheck", func() error { return s.RecordNodeCheck(ctx, "n1", store.NodeStatus{}, nil) }},
		{"CreatePool", func() error { return s.CreatePool(ctx, pool("p2")) }},
		{"GetPool", func() error { _, err := s.GetPool(ctx, "p1"); return err }},
		{"GetPoolByName", func() error { _, err := s.GetPoolByName(ctx, "pool-p1"); return err }},
		{"ListPools", func() error { _, err := s.ListPools(ctx); return err }},
		{"UpdatePool", func() error { return s.UpdatePool(ctx, pool("p1")) }},
		{"MarkPoolInitialized", func() error { return s.MarkPoolInitialized(ctx, "p1", "n1") }},
		{"DeletePool", func() error { return s.DeletePool(ctx, "p1") }},
		{"ListPoolMounts", func() error { _, err := s.ListPoolMounts(ctx); return err }},
		{"CreateImage", func() error { return s.CreateImage(ctx, image("im2", "p1", "iso/b.iso")) }},
		{"GetImage", func() error { _, err := s.GetImage(ctx, "im1"); return err }},
		{"ListImages", func() error { _, err := s.ListImages(ctx, store.ImageFilter{}); return err }},
		{"UpdateImage", func() error { return s.UpdateImage(ctx, image("im1", "p1", "iso/a.iso")) }},
		{"DeleteImage", func() error { return s.DeleteImage(ctx, "im1") }},
		{"ApplyScan", func() error {
			_, err := s.ApplyScan(ctx, "p1", store.ScanChanges{Create: []store.Image{image("im3", "p1", "iso/c.iso")}})
			return err
		}},
		{"SetNodeCertificate", func() error {
			return s.SetNodeCertificate(ctx, "n1", store.NodeCertificate{Serial: "01", IssuedAt: t0})
		}},
		{"CreateToken", func() error { return s.CreateToken(ctx, token("t2")) }},
		{"GetToken", func() error { _, err := s.GetToken(ctx, "t1"); return err }},
		{"ListTokens", func() error { _, err := s.ListTokens(ctx); return err }},
		{"RevokeToken", func() error { return s.RevokeToken(ctx, "t1", t0) }},
		{"UseToken", func() error { _, err := s.UseToken(ctx, "t1", t0); return err }},
		{"CreateSession", func() error { return s.CreateSession(ctx, session("s2", "t1")) }},
		{"GetSession", func() error { _, err := s.GetSession(ctx, "s1"); return err }},
		{"DeleteSession", func() error { return s.DeleteSession(ctx, "s1") }},
		{"DeleteExpiredSessions", func() error { return s.DeleteExpiredSessions(ctx, at(1000*time.Hour)) }},
		{"DeleteExpiredSSOTokens", func() error { _, err := s.DeleteExpiredSSOTokens(ctx, at(1000*time.Hour)); return err }},
		{"AppendAudit", func() error { _, err := s.AppendAudit(ctx, auditEntry(2)); return err }},
		{"ListAudit", func() error { _, err := s.ListAudit(ctx, 0, 10); return err }},
		{"CreateDownload", func() error {
			im, j := download("j2", "im-dl2", "p1", "src-2")
			_, err := s.CreateDownload(ctx, im, j)
			return err
		}},
		{"GetJob", func() error { _, err := s.GetJob(ctx, "j1"); return err }},
		{"ListJobs", func() error { _, err := s.ListJobs(ctx, store.JobFilter{}); return err }},
		{"UpdateJob", func() error {
			j := dlJob
			j.Message = "changed"
			return s.UpdateJob(ctx, j)
		}},
		{"ClaimJob", func() error { _, err := s.ClaimJob(ctx, "j1", "n1", t0); return err }},
		{"FinishJob", func() error { return s.FinishJob(ctx, finished(dlJob, store.JobSucceeded, time.Hour), dlIm) }},
		{"AppendJobEvent", func() error { return s.AppendJobEvent(ctx, store.JobEvent{JobID: "j1", Time: t0}) }},
		{"ListJobEvents", func() error { _, err := s.ListJobEvents(ctx, "j1"); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	}
	for _, tt := range ops {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want context.Canceled", tt.name, err)
			}
		})
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after cancelled calls: %v", err)
	}
	wantEqual(t, "node after cancelled calls", mustGetNode(t, s, "n1"), node("n1"))
	wantEqual(t, "token after cancelled calls", mustGetToken(t, s, "t1"), token("t1"))
	wantEqual(t, "images after cancelled calls", mustListImages(t, s, store.ImageFilter{}), []store.Image{im, dlIm})
	wantEqual(t, "jobs after cancelled calls", mustListJobs(t, s, store.JobFilter{}), []store.Job{dlJob})
	wantEqual(t, "job events after cancelled calls", mustListJobEvents(t, s, "j1"), []store.JobEvent{ev})
	wantSessions(t, s, []string{"s1", "s2"}, "s1")
	if es := mustListAudit(t, s, 0, 10); len(es) != 1 {
		t.Errorf("%d audit entries after cancelled calls, want 1", len(es))
	}
}
