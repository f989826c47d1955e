package nodelink

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// readsNodes records how a store's nodes are read.
type readsNodes struct {
	store.Store
	mu    sync.Mutex
	lists int
	// idLists counts the listings of the nodes' ids.
	idLists int
	// poolLists counts the listings of the pools.
	poolLists int
	byID      [][]string
}

func (s *readsNodes) ListNodes(ctx context.Context) ([]store.Node, error) {
	s.mu.Lock()
	s.lists++
	s.mu.Unlock()
	return s.Store.ListNodes(ctx)
}

func (s *readsNodes) NodeIDs(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	s.idLists++
	s.mu.Unlock()
	return s.Store.NodeIDs(ctx)
}

func (s *readsNodes) ListPools(ctx context.Context) ([]store.Pool, error) {
	s.mu.Lock()
	s.poolLists++
	s.mu.Unlock()
	return s.Store.ListPools(ctx)
}

func (s *readsNodes) GetNodes(ctx context.Context, ids ...string) ([]store.Node, error) {
	s.mu.Lock()
	s.byID = append(s.byID, slices.Sorted(slices.Values(ids)))
	s.mu.Unlock()
	return s.Store.GetNodes(ctx, ids...)
}

// openSQLite opens a new SQLite store, closed at the test's end.
func openSQLite(t *testing.T) *sqlstore.Store {
	t.Helper()
	sq, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	return sq
}

// TestRoundsReadOnlyDueNodes: a full round lists every node's id, the
// rounds between none; each reads only the records of the nodes due (and
// the ones kicked, met or not) unless more than maxDueRead are; the link
// forgets a node gone from the store.
func TestRoundsReadOnlyDueNodes(t *testing.T) {
	ctx := context.Background()
	sq := openSQLite(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &readsNodes{Store: sq}
	l := New(Config{Store: st, Interval: 5 * time.Second, Now: func() time.Time { return now }})
	create := func(id string) {
		t.Helper()
		if err := sq.CreateNode(ctx, store.Node{ID: id, Name: "name-" + id, Address: id + ":7443", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		create(fmt.Sprintf("n%d", i))
	}
	ids := func(due []dueCheck) []string {
		var out []string
		for _, d := range due {
			out = append(out, d.n.ID)
		}
		slices.Sort(out)
		return out
	}
	// done ends the round's claims as checks do: next due at the time given.
	done := func(due []dueCheck, next func(id string) time.Time) {
		for _, d := range due {
			l.mu.Lock()
			d.st.inflight, d.st.next = false, next(d.n.ID)
			l.mu.Unlock()
		}
	}

	due, err := l.dueNodes(ctx, true, now)
	if err != nil || len(due) != 10 || st.idLists != 1 || st.lists != 0 || len(st.byID) != 1 || len(st.byID[0]) != 10 {
		t.Fatalf("full round: %d due, %d listings of ids, %d of records, by id %v, %v; want 10 read by id after 1 listing of ids",
			len(due), st.idLists, st.lists, st.byID, err)
	}
	// n1 and n2 due within the next round's horizon, the others later.
	done(due, func(id string) time.Time {
		if id == "n1" || id == "n2" {
			return now.Add(time.Second)
		}
		return now.Add(5 * time.Second)
	})
	create("n10") // no kick: met at the next full round only
	create("n11") // kicked, as an enrollment does
	l.Kick("n11", "n3", "nope")
	if all, pools := l.takeKicks(); all || pools {
		t.Errorf("takeKicks = all %v, pools %v after a kick of three nodes", all, pools)
	}
	due, err = l.dueNodes(ctx, false, now.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(due), []string{"n1", "n11", "n2", "n3"}; !slices.Equal(got, want) {
		t.Errorf("round between full ones: due %v; want %v", got, want)
	}
	if st.lists != 0 || st.idLists != 1 || len(st.byID) != 2 || !slices.Equal(st.byID[1], []string{"n1", "n11", "n2", "n3", "nope"}) {
		t.Errorf("round between full ones read %d listings of records, %d of ids, and by id %v; want only the due and kicked nodes by id",
			st.lists, st.idLists-1, st.byID[1:])
	}
	done(due, func(string) time.Time { return now.Add(5 * time.Second) })
	// A node the store no longer has is forgotten, not read again.
	l.mu.Lock()
	_, kept := l.nodes["nope"]
	l.mu.Unlock()
	if kept {
		t.Errorf("the link still knows a node the store does not have")
	}
	due, err = l.dueNodes(ctx, false, now.Add(2*time.Second))
	if err != nil || len(due) != 0 || len(st.byID) != 2 || st.lists != 0 || st.idLists != 1 {
		t.Errorf("next round: %d due, by id %v, %d listings, %v; want nothing read", len(due), st.byID, st.lists+st.idLists-1, err)
	}

	due, err = l.dueNodes(ctx, true, now.Add(6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(due); len(got) != 12 || !slices.Contains(got, "n10") || st.idLists != 2 || st.lists != 0 || len(st.byID) != 3 {
		t.Errorf("full round: due %v, %d listings of ids, %d of records, %d reads by id; want all 12 nodes, n10 met, by id after a second listing of ids",
			got, st.idLists, st.lists, len(st.byID))
	}
	done(due, func(string) time.Time { return now.Add(10 * time.Second) })

	// More due than a round reads by id: one listing of every record.
	defer func(n int) { maxDueRead = n }(maxDueRead)
	maxDueRead = 5
	due, err = l.dueNodes(ctx, true, now.Add(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(due); len(got) != 12 || st.lists != 1 || len(st.byID) != 3 {
		t.Errorf("full round with 12 due: due %v, %d listings of records, %d reads by id; want all 12 from one listing", got, st.lists, len(st.byID))
	}
}

// TestRoundsShareThePools: a round given the pools of an earlier one does
// not list them again; a kick of a pool says they are to be listed anew.
func TestRoundsShareThePools(t *testing.T) {
	ctx := context.Background()
	sq := openSQLite(t)
	now := time.Now()
	pool := store.Pool{ID: "p1", Name: "p1", Path: "/srv/p1", Shared: true, CreatedAt: now}
	if err := sq.CreatePool(ctx, pool); err != nil {
		t.Fatal(err)
	}
	st := &readsNodes{Store: sq}
	l := New(Config{Store: st, Interval: 5 * time.Second})
	var (
		s      starter
		checks sync.WaitGroup
	)
	pools := l.round(ctx, time.Second, true, nil, &s, &checks)
	if len(pools) != 1 || st.poolLists != 1 {
		t.Fatalf("a round without pools: %d pools from %d listings; want 1 from 1", len(pools), st.poolLists)
	}
	if again := l.round(ctx, time.Second, false, pools, &s, &checks); len(again) != 1 || st.poolLists != 1 {
		t.Fatalf("a round given the pools: %d pools, %d listings in all; want 1 from the first listing", len(again), st.poolLists)
	}
	checks.Wait()
	l.KickPool(pool)
	if _, kicked := l.takeKicks(); !kicked {
		t.Fatal("takeKicks after KickPool does not say a pool was kicked")
	}
	if _, kicked := l.takeKicks(); kicked {
		t.Fatal("a pool kick is taken twice")
	}
}
