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

// TestRoundsReadOnlyDueNodes: a full round lists every node; the rounds
// between read only the nodes due (and the ones kicked, met or not), and
// the link forgets a node gone from the store.
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
	if err != nil || len(due) != 10 || st.lists != 1 {
		t.Fatalf("full round: %d due, %d listings, %v; want 10 from 1 listing", len(due), st.lists, err)
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
	if st.lists != 1 || len(st.byID) != 1 || !slices.Equal(st.byID[0], []string{"n1", "n11", "n2", "n3", "nope"}) {
		t.Errorf("round between full ones read %d listings and by id %v; want only the due and kicked nodes by id", st.lists-1, st.byID)
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
	if err != nil || len(due) != 0 || len(st.byID) != 1 || st.lists != 1 {
		t.Errorf("next round: %d due, by id %v, %d listings, %v; want nothing read", len(due), st.byID, st.lists, err)
	}

	due, err = l.dueNodes(ctx, true, now.Add(6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(due); len(got) != 12 || !slices.Contains(got, "n10") || st.lists != 2 {
		t.Errorf("full round: due %v, %d listings; want all 12 nodes, n10 met, from a second listing", got, st.lists)
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
