package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// TestSQLiteWriteOutwaitsBusyTimeout: a write that arrives while another
// transaction holds SQLite's write lock for longer than busy_timeout (5 s)
// waits its turn and succeeds; it used to fail with SQLITE_BUSY, which
// thousands of nodes' health checks made routine. A write whose context
// ends while it waits returns that error.
func TestSQLiteWriteOutwaitsBusyTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a transaction for 5.5 s")
	}
	s := openSQLite(t, filepath.Join(t.TempDir(), "quarry.db"))
	defer s.Close()
	ctx := context.Background()
	n := store.Node{ID: "n1", Name: "n1", Address: "10.0.0.1:9090", CreatedAt: time.Now()}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	holding, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.tx(ctx, func(tx *txn) error {
			if _, err := tx.exec(ctx, `UPDATE nodes SET hostname = 'a' WHERE id = ?`, n.ID); err != nil {
				return err
			}
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	time.AfterFunc(5500*time.Millisecond, func() { close(release) })

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := s.UpdateNode(short, n.ID, "n1", "10.0.0.2:9090"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a write whose context ended while waiting: %v, want context.DeadlineExceeded", err)
	}
	if err := s.RecordNodeCheck(ctx, n.ID, store.NodeStatus{State: store.NodeReady, LastCheckedAt: time.Now()}, nil); err != nil {
		t.Errorf("a write waiting past busy_timeout: %v", err)
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNode(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.NodeReady || got.Hostname != "" {
		t.Errorf("node after both writes: state %s, hostname %q; want READY and the second write's empty hostname", got.State, got.Hostname)
	}
}

// TestSQLiteGroupedChecks: health checks queued behind another write are
// committed together once it ends, each caller learning its own outcome: a
// check of a node deleted meanwhile fails alone.
func TestSQLiteGroupedChecks(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "quarry.db"))
	defer s.Close()
	groupedChecks(t, s)
	sameNodeTwiceInAGroup(t, s)
	groupsKeepFences(t, s)
	unchangedChecks(t, s)
}

// unchangedChecks: a check that finds a node's pools as the node's last
// check wrote them (in any order) writes only the node's row, without
// reading its mounts, however long after: a row changed behind the
// store's back stays as it is. A check that finds any pool changed reads
// and writes them.
func unchangedChecks(t *testing.T, s *Store) {
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Microsecond)
	for _, id := range []string{"p-a", "p-b"} {
		if err := s.CreatePool(ctx, store.Pool{ID: id, Name: id, Type: "dir", Path: "/srv/" + id, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateNode(ctx, store.Node{ID: "n-same", Name: "n-same", Address: "10.0.1.1:9090", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	check := func(at time.Time, freeA uint64, reversed bool) {
		t.Helper()
		ms := []store.PoolMount{
			{PoolID: "p-a", Mounted: true, FreeBytes: freeA, TotalBytes: 1000, CheckedAt: at},
			{PoolID: "p-b", Reason: "not mounted", CheckedAt: at},
		}
		if reversed {
			ms[0], ms[1] = ms[1], ms[0]
		}
		if err := s.RecordNodeCheck(ctx, "n-same", store.NodeStatus{State: store.NodeReady, StateSince: t0, LastCheckedAt: at}, ms); err != nil {
			t.Fatal(err)
		}
		n, err := s.GetNode(ctx, "n-same")
		if err != nil || !n.LastCheckedAt.Equal(at) {
			t.Fatalf("node after a check at %v: checked at %v, %v", at, n.LastCheckedAt, err)
		}
	}
	tamper := func() {
		t.Helper()
		if _, err := s.db.ExecContext(ctx, s.q(`UPDATE pool_mounts SET reason = 'tampered' WHERE node_id = 'n-same' AND pool_id = 'p-b'`)); err != nil {
			t.Fatal(err)
		}
	}
	reasonB := func(when string, want string) {
		t.Helper()
		ms, err := s.ListNodeMounts(ctx, "n-same")
		if err != nil || len(ms) != 2 {
			t.Fatalf("mounts %s: %+v, %v; want p-a and p-b", when, ms, err)
		}
		if ms[1].Reason != want {
			t.Errorf("p-b's reason %s: %q, want %q", when, ms[1].Reason, want)
		}
	}
	check(t0, 100, false)
	tamper()
	check(t0.Add(time.Second), 100, true)
	reasonB("after a check that found the same", "tampered")
	check(t0.Add(2*time.Second), 99, false)
	reasonB("after a check that found p-a changed", "not mounted")
	tamper()
	check(t0.Add(24*time.Hour), 99, true)
	reasonB("after the same, a day later", "tampered")
}

// sameNodeTwiceInAGroup: a node's pool is recorded mounted; two checks of
// the node in one group find it unmounted, then mounted again: the second
// is what stays recorded (it must not be compared with what the group
// read before the first).
func sameNodeTwiceInAGroup(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Microsecond)
	if err := s.CreatePool(ctx, store.Pool{ID: "p-twice", Name: "twice", Type: "dir", Path: "/srv/twice", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	st := store.NodeStatus{State: store.NodeReady, StateSince: now, LastCheckedAt: now}
	mounted := []store.PoolMount{{PoolID: "p-twice", Mounted: true, FreeBytes: 1 << 30, TotalBytes: 2 << 30, CheckedAt: now}}
	if err := s.RecordNodeCheck(ctx, "n0", st, mounted); err != nil {
		t.Fatal(err)
	}
	for range cap(s.checkTurn) {
		s.checkTurn <- struct{}{}
	}
	first := make(chan error, 1)
	go func() {
		st := store.NodeStatus{State: store.NodeUnreachable, StateReason: "first", StateSince: now, LastCheckedAt: now, Hostname: "first"}
		first <- s.RecordNodeCheck(ctx, "n0", st, []store.PoolMount{{PoolID: "p-twice", Mounted: false, Reason: "gone", CheckedAt: now}})
	}()
	waitQueued(t, s, 1)
	second := make(chan error, 1)
	st.Hostname = "second"
	go func() { second <- s.RecordNodeCheck(ctx, "n0", st, mounted) }()
	waitQueued(t, s, 2)
	for range cap(s.checkTurn) {
		<-s.checkTurn
	}
	if err := errors.Join(<-first, <-second); err != nil {
		t.Fatal(err)
	}
	ms, err := s.ListNodeMounts(ctx, "n0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || !ms[0].Mounted || ms[0].Reason != "" {
		t.Errorf("mounts of n0 after two checks in one group: %+v; want p-twice mounted, as the second found it", ms)
	}
	if n, err := s.GetNode(ctx, "n0"); err != nil || n.State != store.NodeReady || n.StateReason != "" || n.Hostname != "second" {
		t.Errorf("n0 after two checks in one group: %s (%q), hostname %q, %v; want READY, as the second found it, on host \"second\"",
			n.State, n.StateReason, n.Hostname, err)
	}
}

// groupsKeepFences: a leader's check at an epoch that lost the lease and
// a request's unfenced check, queued together, are committed apart: the
// first is refused, the second written.
func groupsKeepFences(t *testing.T, s *Store) {
	ctx := context.Background()
	a, err := s.TryLease(ctx, store.LeaseRequest{Holder: "a", TTL: time.Minute})
	if err != nil || !a.Held {
		t.Fatalf("TryLease(a) = %+v, %v", a, err)
	}
	if err := s.ReleaseLease(ctx, "a", a.Epoch); err != nil {
		t.Fatal(err)
	}
	if b, err := s.TryLease(ctx, store.LeaseRequest{Holder: "b", TTL: time.Minute}); err != nil || !b.Held {
		t.Fatalf("TryLease(b) = %+v, %v", b, err)
	}
	stale := store.WithFence(ctx, store.Fence{Epoch: a.Epoch})
	now := time.Now().Truncate(time.Microsecond)
	for range cap(s.checkTurn) {
		s.checkTurn <- struct{}{}
	}
	fenced, unfenced := make(chan error, 1), make(chan error, 1)
	go func() {
		fenced <- s.RecordNodeCheck(stale, "n1", store.NodeStatus{State: store.NodeUnreachable, StateSince: now, LastCheckedAt: now}, nil)
	}()
	waitQueued(t, s, 1)
	go func() {
		unfenced <- s.RecordNodeCheck(ctx, "n2", store.NodeStatus{State: store.NodeReady, StateSince: now, LastCheckedAt: now}, nil)
	}()
	waitQueued(t, s, 2)
	for range cap(s.checkTurn) {
		<-s.checkTurn
	}
	if err := <-fenced; !errors.Is(err, store.ErrFenced) {
		t.Errorf("the check at the lost epoch: %v; want ErrFenced", err)
	}
	if err := <-unfenced; err != nil {
		t.Errorf("the unfenced check: %v", err)
	}
	for id, want := range map[string]store.NodeState{"n1": store.NodeReady, "n2": store.NodeReady} {
		if n, err := s.GetNode(ctx, id); err != nil || n.State != want {
			t.Errorf("node %s: %s, %v; want %s", id, n.State, err, want)
		}
	}
}

// waitQueued waits until n checks are queued for a group commit.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.checksMu.Lock()
		queued := len(s.checks)
		s.checksMu.Unlock()
		if queued == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d checks queued for a group commit after 10 s", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// groupedChecks: health checks queued while every check turn is taken
// (on SQLite, the writer's) are committed together once one is free, each
// caller learning its own outcome: a check of a node deleted meanwhile
// fails alone. The checks are more than one statement's batch of rows
// (rowsBatch), each with values of its own.
func groupedChecks(t *testing.T, s *Store) {
	ctx := context.Background()
	const nodes = rowsBatch + 8
	for i := range nodes {
		id := fmt.Sprintf("n%d", i)
		if err := s.CreateNode(ctx, store.Node{ID: id, Name: id, Address: fmt.Sprintf("10.0.0.%d:9090", i), CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Truncate(time.Microsecond)
	seen := map[string]time.Time{} // each node's MountsSeenAt, as expected
	// round queues a check of nodes n0 to n<checks-1>, the ones past the
	// nodes made above missing, each reporting on pool when one is given
	// (the even nodes only, when evenOnly), then commits them together and
	// checks every outcome.
	round := func(r, checks int, pool string, evenOnly bool) {
		t.Helper()
		now := base.Add(time.Duration(r) * time.Hour)
		status := func(i int) store.NodeStatus {
			return store.NodeStatus{State: store.NodeReady, StateReason: fmt.Sprintf("reason %d/%d", r, i), StateSince: now.Add(-time.Duration(i) * time.Second),
				LastCheckedAt: now.Add(time.Duration(i) * time.Microsecond), Hostname: fmt.Sprintf("host-%d-%d", r, i), AgentVersion: fmt.Sprintf("v%d.%d", r, i)}
		}
		for range cap(s.checkTurn) {
			s.checkTurn <- struct{}{}
		}
		errs := make(chan error, checks)
		mounts := func(i int) []store.PoolMount {
			if pool == "" || evenOnly && i%2 == 1 {
				return nil
			}
			return []store.PoolMount{{PoolID: pool, Mounted: true, FreeBytes: uint64(1000*r + i), TotalBytes: 1 << 40, CheckedAt: now}}
		}
		for i := range checks {
			go func() { errs <- s.RecordNodeCheck(ctx, fmt.Sprintf("n%d", i), status(i), mounts(i)) }()
		}
		waitQueued(t, s, checks)
		before := s.Statements()
		<-s.checkTurn
		var notFound int
		for range checks {
			switch err := <-errs; {
			case errors.Is(err, store.ErrNotFound):
				notFound++
			case err != nil:
				t.Errorf("round %d: a check of an existing node: %v", r, err)
			}
		}
		batches := uint64((checks + rowsBatch - 1) / rowsBatch)
		if used := s.Statements() - before; checks <= nodes && pool == "" && used != batches {
			t.Errorf("round %d: %d statements wrote %d checks; want %d, a batch of rows each", r, used, checks, batches)
		}
		if want := max(0, checks-nodes); notFound != want {
			t.Errorf("round %d: %d checks failed with ErrNotFound, want %d (the missing nodes')", r, notFound, want)
		}
		for range cap(s.checkTurn) - 1 {
			<-s.checkTurn
		}
		for i := range nodes {
			n, err := s.GetNode(ctx, fmt.Sprintf("n%d", i))
			if err != nil {
				t.Fatal(err)
			}
			want := status(i)
			got := store.NodeStatus{State: n.State, StateReason: n.StateReason, StateSince: n.StateSince,
				LastCheckedAt: n.LastCheckedAt, Hostname: n.Hostname, AgentVersion: n.AgentVersion}
			if !got.StateSince.Equal(want.StateSince) || !got.LastCheckedAt.Equal(want.LastCheckedAt) {
				t.Errorf("round %d: node %s: since %v, checked at %v; want %v, %v", r, n.ID, got.StateSince, got.LastCheckedAt, want.StateSince, want.LastCheckedAt)
			}
			got.StateSince, got.LastCheckedAt, want.StateSince, want.LastCheckedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if got != want {
				t.Errorf("round %d: node %s: %+v; want %+v", r, n.ID, got, want)
			}
			if mounts(i) == nil {
				if !n.MountsSeenAt.Equal(seen[n.ID]) {
					t.Errorf("round %d: node %s, its pools not reported: mounts seen at %v; want %v, as before", r, n.ID, n.MountsSeenAt, seen[n.ID])
				}
				continue
			}
			if seen[n.ID] = status(i).LastCheckedAt; !n.MountsSeenAt.Equal(seen[n.ID]) {
				t.Errorf("round %d: node %s: mounts seen at %v; want its check's time, %v", r, n.ID, n.MountsSeenAt, seen[n.ID])
			}
			ms, err := s.ListNodeMounts(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if wm := mounts(i)[0]; len(ms) != 1 || ms[0].FreeBytes != wm.FreeBytes || !ms[0].CheckedAt.Equal(wm.CheckedAt) {
				t.Errorf("round %d: node %s's mounts %+v; want %d bytes free, checked at %v", r, n.ID, ms, wm.FreeBytes, wm.CheckedAt)
			}
		}
	}
	round(1, nodes, "", false)   // written a batch of rows at a time
	round(2, nodes+1, "", false) // one node missing: written check by check
	if err := s.CreatePool(ctx, store.Pool{ID: "p-g", Name: "grouped", Type: "dir", Path: "/srv/grouped", CreatedAt: base}); err != nil {
		t.Fatal(err)
	}
	round(3, nodes, "p-g", false) // the mounts made
	round(4, nodes, "p-g", false) // and rewritten, a batch of rows at a time
	round(5, nodes, "p-g", true)  // half the nodes report on their pools
}

// TestSQLiteConnectionsBounded: however many statements run at once, the
// store opens at most sqliteConns connections to SQLite; the others wait
// for one and then succeed.
func TestSQLiteConnectionsBounded(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "quarry.db"))
	defer s.Close()
	ctx := context.Background()
	const readers = 3 * sqliteConns
	release := make(chan struct{})
	var open atomic.Int64
	errs := make(chan error, readers)
	for range readers {
		go func() {
			// Rows not yet read hold their connection.
			rows, err := s.db.DB.QueryContext(ctx, `SELECT 1 UNION ALL SELECT 2`)
			if err != nil {
				errs <- err
				return
			}
			open.Add(1)
			<-release
			for rows.Next() {
			}
			errs <- errors.Join(rows.Err(), rows.Close())
			open.Add(-1)
		}()
	}
	// Wait until the pool is full and the rest queue for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.db.Stats()
		if st.OpenConnections > sqliteConns {
			close(release)
			t.Fatalf("%d connections open at once, want at most %d", st.OpenConnections, sqliteConns)
		}
		if open.Load() == sqliteConns && st.WaitCount > 0 {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("after 10 s: %d statements hold a connection, %d waited for one", open.Load(), st.WaitCount)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	for range readers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := s.db.Stats().OpenConnections; n > sqliteConns {
		t.Errorf("%d connections open after, want at most %d", n, sqliteConns)
	}
}
