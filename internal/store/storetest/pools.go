package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func testPools(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("create and get keep assignment order", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2", "n3")
		want := pool("p1", "n3", "n1", "n2")
		want.Shared = true
		mustCreatePool(t, s, want)
		wantEqual(t, "GetPool", mustGetPool(t, s, "p1"), want)
		got, err := s.GetPoolByName(ctx, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetPoolByName", got, want)
	})

	t.Run("pool without assigned nodes", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		if got := mustGetPool(t, s, "p1"); len(got.AssignedNodeIDs) != 0 || got.InitializedBy != "" || got.Shared {
			t.Errorf("GetPool = %+v", got)
		}
	})

	t.Run("list ordered by name", func(t *testing.T) {
		s := open(t)
		if ps, err := s.ListPools(ctx); err != nil || len(ps) != 0 {
			t.Fatalf("ListPools on empty store = %v, %v", ps, err)
		}
		mustCreateNodes(t, s, "n1", "n2")
		c, a, b := pool("p1", "n2", "n1"), pool("p2"), pool("p3", "n1")
		c.Name, a.Name, b.Name = "charlie", "alpha", "bravo"
		for _, p := range []store.Pool{c, a, b} {
			mustCreatePool(t, s, p)
		}
		got, err := s.ListPools(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "ListPools", got, []store.Pool{a, b, c})
	})

	t.Run("names by id", func(t *testing.T) {
		s := open(t)
		a, b := pool("p1"), pool("p2")
		a.Name, b.Name = "alpha", "bravo"
		mustCreatePool(t, s, a)
		mustCreatePool(t, s, b)
		for _, tt := range []struct {
			ids  []string
			want map[string]string
		}{
			{nil, map[string]string{}},
			{[]string{"p2"}, map[string]string{"p2": "bravo"}},
			{[]string{"p1", "gone", "p2"}, map[string]string{"p1": "alpha", "p2": "bravo"}},
		} {
			got, err := s.PoolNames(ctx, tt.ids...)
			if err != nil {
				t.Fatal(err)
			}
			wantEqual(t, fmt.Sprintf("PoolNames(%q)", tt.ids), got, tt.want)
		}
	})

	t.Run("pools assigned to nodes", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2", "n3")
		mustCreatePool(t, s, pool("p1", "n2", "n1"))
		mustCreatePool(t, s, pool("p2", "n1"))
		mustCreatePool(t, s, pool("p3"))
		got, err := s.PoolsAssignedTo(ctx, "n1", "n2", "n3", "gone")
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "PoolsAssignedTo", got, map[string][]string{"n1": {"p1", "p2"}, "n2": {"p1"}})
		if got, err := s.PoolsAssignedTo(ctx); err != nil || len(got) != 0 {
			t.Errorf("PoolsAssignedTo() = %v, %v; want nothing", got, err)
		}
	})

	t.Run("rejected creates", func(t *testing.T) {
		tests := []struct {
			name    string
			edit    func(*store.Pool)
			class   error
			details []string
		}{
			{"same name", func(p *store.Pool) { p.Name = "pool-p1" }, store.ErrConflict, []string{"pool-p1"}},
			{"same path", func(p *store.Pool) { p.Path = "/var/lib/quarry/p1" }, store.ErrConflict, []string{"/var/lib/quarry/p1"}},
			{"same id", func(p *store.Pool) { p.ID = "p1" }, store.ErrConflict, []string{"p1"}},
			{"unknown assigned node", func(p *store.Pool) { p.AssignedNodeIDs = []string{"n1", "nx"} }, store.ErrNotFound, []string{"nx"}},
			{"node assigned twice", func(p *store.Pool) { p.AssignedNodeIDs = []string{"n1", "n1"} }, store.ErrConflict, []string{"n1"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				mustCreateNodes(t, s, "n1")
				mustCreatePool(t, s, pool("p1"))
				p := pool("p2")
				tt.edit(&p)
				wantErr(t, "CreatePool", s.CreatePool(ctx, p), tt.class, tt.details...)
				ps, err := s.ListPools(ctx)
				if err != nil || len(ps) != 1 {
					t.Errorf("after failed create ListPools = %d pools, %v; want 1", len(ps), err)
				}
				// A failed create must not leave assignments pinning n1.
				if err := s.DeleteNode(ctx, "n1"); err != nil {
					t.Errorf("DeleteNode after failed create: %v", err)
				}
			})
		}
	})

	t.Run("not found", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		tests := []struct {
			name string
			op   func() error
		}{
			{"GetPool", func() error { _, err := s.GetPool(ctx, "px"); return err }},
			{"GetPoolByName", func() error { _, err := s.GetPoolByName(ctx, "px"); return err }},
			{"UpdatePool", func() error { return s.UpdatePool(ctx, pool("px")) }},
			{"MarkPoolInitialized", func() error { return s.MarkPoolInitialized(ctx, "px", "n1") }},
			{"DeletePool", func() error { return s.DeletePool(ctx, "px") }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, tt.name, tt.op(), store.ErrNotFound, "px")
			})
		}
	})
}

func testUpdatePool(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	setup := func(t *testing.T) (store.Store, store.Pool) {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2", "n3")
		p := pool("p1", "n1", "n2")
		mustCreatePool(t, s, p)
		mustCreatePool(t, s, pool("p2"))
		if err := s.MarkPoolInitialized(ctx, "p1", "n1"); err != nil {
			t.Fatal(err)
		}
		p.InitializedBy = "n1"
		return s, p
	}

	tests := []struct {
		name string
		edit func(*store.Pool)
	}{
		{"rename", func(p *store.Pool) { p.Name = "renamed" }},
		{"keep own name", func(p *store.Pool) {}},
		{"share", func(p *store.Pool) { p.Shared = true }},
		{"reorder assigned nodes", func(p *store.Pool) { p.AssignedNodeIDs = []string{"n2", "n1"} }},
		{"replace assigned nodes", func(p *store.Pool) { p.AssignedNodeIDs = []string{"n3", "n1"} }},
		{"clear assigned nodes", func(p *store.Pool) { p.AssignedNodeIDs = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, want := setup(t)
			want.AssignedNodeIDs = append([]string(nil), want.AssignedNodeIDs...)
			tt.edit(&want)
			// Fields UpdatePool must not touch are sent changed, too.
			in := want
			in.Path, in.Type, in.CreatedAt, in.InitializedBy = "/elsewhere", "nfs", at(time.Hour), ""
			if err := s.UpdatePool(ctx, in); err != nil {
				t.Fatal(err)
			}
			wantEqual(t, "GetPool", mustGetPool(t, s, "p1"), want)
		})
	}

	rejected := []struct {
		name    string
		edit    func(*store.Pool)
		class   error
		details []string
	}{
		{"name of another pool", func(p *store.Pool) { p.Name = "pool-p2"; p.Shared = true }, store.ErrConflict, []string{"pool-p2"}},
		{"unknown assigned node", func(p *store.Pool) { p.Name = "x"; p.AssignedNodeIDs = []string{"n3", "nx"} }, store.ErrNotFound, []string{"nx"}},
		{"node assigned twice", func(p *store.Pool) { p.AssignedNodeIDs = []string{"n3", "n3"} }, store.ErrConflict, []string{"n3"}},
	}
	for _, tt := range rejected {
		t.Run(tt.name, func(t *testing.T) {
			s, want := setup(t)
			in := want
			in.AssignedNodeIDs = append([]string(nil), want.AssignedNodeIDs...)
			tt.edit(&in)
			wantErr(t, "UpdatePool", s.UpdatePool(ctx, in), tt.class, tt.details...)
			wantEqual(t, "GetPool after rejected update", mustGetPool(t, s, "p1"), want)
		})
	}
}

func testMarkPoolInitialized(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	mustCreateNodes(t, s, "n1", "n2")
	mustCreatePool(t, s, pool("p1", "n1", "n2"))

	steps := []struct {
		name  string
		node  string
		class error
	}{
		{"first node wins", "n1", nil},
		{"same node again succeeds", "n1", nil},
		{"another node conflicts", "n2", store.ErrConflict},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := s.MarkPoolInitialized(ctx, "p1", st.node)
			if st.class == nil && err != nil {
				t.Fatalf("MarkPoolInitialized(%s): %v", st.node, err)
			}
			if st.class != nil {
				wantErr(t, "MarkPoolInitialized", err, st.class, "n1")
			}
			if got := mustGetPool(t, s, "p1").InitializedBy; got != "n1" {
				t.Errorf("InitializedBy = %q, want n1", got)
			}
		})
	}

	t.Run("racing nodes: exactly one wins", func(t *testing.T) {
		s := open(t)
		ids := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
		mustCreateNodes(t, s, ids...)
		mustCreatePool(t, s, pool("p1"))
		errs := make(chan error, len(ids))
		for _, id := range ids {
			go func() { errs <- s.MarkPoolInitialized(ctx, "p1", id) }()
		}
		wins := 0
		for range ids {
			switch err := <-errs; {
			case err == nil:
				wins++
			default:
				wantErr(t, "MarkPoolInitialized", err, store.ErrConflict)
			}
		}
		if wins != 1 {
			t.Errorf("%d nodes initialized the pool, want 1", wins)
		}
	})
}

func testDeletes(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	mount := func(nodeID, poolID string) store.PoolMount {
		return store.PoolMount{NodeID: nodeID, PoolID: poolID, Mounted: true, CheckedAt: t0}
	}
	setup := func(t *testing.T) store.Store {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2", "n3")
		a, b := pool("p1", "n1"), pool("p2", "n2", "n1")
		a.Name, b.Name = "alpha", "bravo"
		mustCreatePool(t, s, a)
		mustCreatePool(t, s, b)
		for _, n := range []string{"n1", "n2", "n3"} {
			ms := []store.PoolMount{mount(n, "p1"), mount(n, "p2")}
			if err := s.RecordNodeCheck(ctx, n, store.NodeStatus{State: store.NodeReady, LastCheckedAt: t0}, ms); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}

	t.Run("assigned node is in use", func(t *testing.T) {
		s := setup(t)
		wantErr(t, "DeleteNode", s.DeleteNode(ctx, "n1"), store.ErrInUse, "n1", "alpha", "bravo")
		mustGetNode(t, s, "n1")
		if got := len(mustMounts(t, s)); got != 6 {
			t.Errorf("%d mounts after refused delete, want 6", got)
		}
	})

	t.Run("mounts of one pool", func(t *testing.T) {
		s := setup(t)
		got, err := s.ListPoolMounts(ctx, "p2")
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "ListPoolMounts(p2)", got, []store.PoolMount{mount("n1", "p2"), mount("n2", "p2"), mount("n3", "p2")})
		got, err = s.ListPoolMounts(ctx, "p2", "p1", "nope")
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "ListPoolMounts(p2, p1, nope)", got, mustMounts(t, s))
	})

	t.Run("unassigned node goes with its mounts", func(t *testing.T) {
		s := setup(t)
		if err := s.DeleteNode(ctx, "n3"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetNode(ctx, "n3"); err == nil {
			t.Error("GetNode after delete succeeded")
		}
		wantEqual(t, "ListPoolMounts", mustMounts(t, s), []store.PoolMount{
			mount("n1", "p1"), mount("n2", "p1"), mount("n1", "p2"), mount("n2", "p2"),
		})
	})

	t.Run("node freed by UpdatePool can go", func(t *testing.T) {
		s := setup(t)
		for _, id := range []string{"p1", "p2"} {
			p := mustGetPool(t, s, id)
			p.AssignedNodeIDs = []string{"n2"}
			if err := s.UpdatePool(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteNode(ctx, "n1"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pool goes with its assignments and mounts", func(t *testing.T) {
		s := setup(t)
		for _, id := range []string{"p1", "p2"} {
			if err := s.DeletePool(ctx, id); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "GetPool after delete", func() error { _, err := s.GetPool(ctx, id); return err }(), store.ErrNotFound)
		}
		if got := mustMounts(t, s); len(got) != 0 {
			t.Errorf("mounts after deleting every pool: %+v", got)
		}
		if err := s.DeleteNode(ctx, "n1"); err != nil {
			t.Errorf("DeleteNode after its pools went: %v", err)
		}
		wantErr(t, "DeletePool twice", s.DeletePool(ctx, "p1"), store.ErrNotFound, "p1")
	})
}
