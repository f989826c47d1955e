package storetest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func testNodes(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("create and get", func(t *testing.T) {
		s := open(t)
		want := node("n1")
		want.State = store.NodeReady
		want.StateReason = "ok"
		want.StateSince = at(time.Second)
		want.LastCheckedAt = at(2 * time.Second)
		want.Hostname = "kvm1"
		want.AgentVersion = "v1.2.3"
		if err := s.CreateNode(ctx, want); err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetNode", mustGetNode(t, s, "n1"), want)
		got, err := s.GetNodeByName(ctx, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetNodeByName", got, want)
		got, err = s.GetNodeByAddress(ctx, want.Address)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetNodeByAddress", got, want)
		_, err = s.GetNodeByAddress(ctx, "192.0.2.99:9090")
		wantErr(t, "GetNodeByAddress of no node", err, store.ErrNotFound)
	})

	t.Run("times come back in UTC, to the microsecond", func(t *testing.T) {
		s := open(t)
		n := node("n1")
		n.CreatedAt = time.Date(2025, 3, 4, 7, 6, 7, 123456789, time.FixedZone("CEST", 2*3600))
		mustCreate(t, s, n)
		got := mustGetNode(t, s, "n1").CreatedAt
		if got.Location() != time.UTC || !got.Equal(n.CreatedAt.Truncate(time.Microsecond)) {
			t.Errorf("CreatedAt = %v, want %v in UTC", got, n.CreatedAt.Truncate(time.Microsecond))
		}
	})

	t.Run("never checked node", func(t *testing.T) {
		s := open(t)
		n := node("n1")
		n.State = ""
		mustCreate(t, s, n)
		got := mustGetNode(t, s, "n1")
		if got.State != store.NodeUnknown {
			t.Errorf("State = %q, want %q", got.State, store.NodeUnknown)
		}
		if !got.LastCheckedAt.IsZero() || !got.StateSince.IsZero() {
			t.Errorf("LastCheckedAt = %v, StateSince = %v, want zero times", got.LastCheckedAt, got.StateSince)
		}
	})

	t.Run("list ordered by name", func(t *testing.T) {
		s := open(t)
		if ns, err := s.ListNodes(ctx); err != nil || len(ns) != 0 {
			t.Fatalf("ListNodes on empty store = %v, %v", ns, err)
		}
		var want []store.Node
		for _, name := range []string{"charlie", "alpha", "bravo"} {
			n := node("n" + string(rune('1'+len(want))))
			n.Name = name
			mustCreate(t, s, n)
			want = append(want, n)
		}
		want = []store.Node{want[1], want[2], want[0]}
		got, err := s.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "ListNodes", got, want)
		ids, err := s.NodeIDs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ids)
		wantEqual(t, "NodeIDs (sorted)", ids, []string{"n1", "n2", "n3"})
		for _, tt := range []struct {
			ids  []string
			want []store.Node
		}{
			{nil, nil},
			{[]string{"n1"}, []store.Node{want[2]}},
			{[]string{"n1", "gone", "n2", "n1"}, []store.Node{want[0], want[2]}},
		} {
			got, err := s.GetNodes(ctx, tt.ids...)
			if err != nil {
				t.Fatal(err)
			}
			wantEqual(t, fmt.Sprintf("GetNodes(%q) (by name)", tt.ids), got, tt.want)
		}
	})

	t.Run("conflicts", func(t *testing.T) {
		tests := []struct {
			name   string
			edit   func(*store.Node)
			detail string
		}{
			{"same name", func(n *store.Node) { n.Name = "node-n1" }, "node-n1"},
			{"same address", func(n *store.Node) { n.Address = "10.0.0.1:9090" }, "10.0.0.1:9090"},
			{"same id", func(n *store.Node) { n.ID = "n1" }, "n1"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				mustCreateNodes(t, s, "n1")
				n := node("n2")
				tt.edit(&n)
				wantErr(t, "CreateNode", s.CreateNode(ctx, n), store.ErrConflict, tt.detail)
				ns, err := s.ListNodes(ctx)
				if err != nil || len(ns) != 1 {
					t.Errorf("after conflict ListNodes = %d nodes, %v; want 1", len(ns), err)
				}
			})
		}
	})

	t.Run("not found", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1")
		tests := []struct {
			name string
			op   func() error
		}{
			{"GetNode", func() error { _, err := s.GetNode(ctx, "nx"); return err }},
			{"GetNodeByName", func() error { _, err := s.GetNodeByName(ctx, "nx"); return err }},
			{"UpdateNode", func() error { return s.UpdateNode(ctx, "nx", "node-nx", "10.9.9.9:9090") }},
			{"DeleteNode", func() error { return s.DeleteNode(ctx, "nx") }},
			{"RecordNodeCheck", func() error {
				return s.RecordNodeCheck(ctx, "nx", store.NodeStatus{State: store.NodeReady}, nil)
			}},
			{"RecordNodeCheck with mounts", func() error {
				return s.RecordNodeCheck(ctx, "nx", store.NodeStatus{State: store.NodeReady}, []store.PoolMount{})
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, tt.name, tt.op(), store.ErrNotFound, "nx")
			})
		}
	})

	t.Run("update", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2")
		if err := s.UpdateNode(ctx, "n1", "renamed", "127.0.0.1:40001"); err != nil {
			t.Fatal(err)
		}
		if got := mustGetNode(t, s, "n1"); got.Address != "127.0.0.1:40001" || got.Name != "renamed" {
			t.Errorf("after update: name %q, address %q", got.Name, got.Address)
		}
		if err := s.UpdateNode(ctx, "n1", "renamed", "127.0.0.1:40001"); err != nil {
			t.Errorf("setting the same values again: %v", err)
		}
		wantErr(t, "UpdateNode to n2's address",
			s.UpdateNode(ctx, "n1", "renamed", "10.0.0.2:9090"), store.ErrConflict, "10.0.0.2:9090")
		wantErr(t, "UpdateNode to n2's name",
			s.UpdateNode(ctx, "n1", "node-n2", "127.0.0.1:40001"), store.ErrConflict, "node-n2")
		if got := mustGetNode(t, s, "n1"); got.Address != "127.0.0.1:40001" || got.Name != "renamed" {
			t.Errorf("after failed updates: name %q, address %q", got.Name, got.Address)
		}
	})
}

func testNodeChecks(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	ready := store.NodeStatus{
		State:         store.NodeReady,
		StateSince:    at(time.Minute),
		LastCheckedAt: at(2 * time.Minute),
		Hostname:      "kvm1",
		AgentVersion:  "v0.1.0",
	}
	down := store.NodeStatus{
		State:         store.NodeUnreachable,
		StateReason:   "dial tcp 10.0.0.1:9090: connection refused",
		StateSince:    at(3 * time.Minute),
		LastCheckedAt: at(3 * time.Minute),
		Hostname:      "kvm1",
		AgentVersion:  "v0.1.0",
	}
	mount := func(nodeID, poolID string, mounted bool, d time.Duration) store.PoolMount {
		m := store.PoolMount{NodeID: nodeID, PoolID: poolID, Mounted: mounted, CheckedAt: at(d)}
		if mounted {
			m.FreeBytes, m.TotalBytes = 10<<30, 100<<30
		} else {
			m.Reason = "marker belongs to another pool"
		}
		return m
	}
	setup := func(t *testing.T) store.Store {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2")
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		mustCreatePool(t, s, pool("p3"))
		return s
	}
	record := func(t *testing.T, s store.Store, id string, st store.NodeStatus, ms []store.PoolMount) {
		t.Helper()
		if err := s.RecordNodeCheck(ctx, id, st, ms); err != nil {
			t.Fatalf("RecordNodeCheck(%s): %v", id, err)
		}
	}

	t.Run("status is stored", func(t *testing.T) {
		s := setup(t)
		record(t, s, "n1", down, nil)
		want := node("n1")
		want.State, want.StateReason, want.StateSince, want.LastCheckedAt = down.State, down.StateReason, down.StateSince, down.LastCheckedAt
		want.Hostname, want.AgentVersion = down.Hostname, down.AgentVersion
		wantEqual(t, "node after check", mustGetNode(t, s, "n1"), want)
		wantEqual(t, "other node", mustGetNode(t, s, "n2"), node("n2"))
	})

	tests := []struct {
		name   string
		second []store.PoolMount // n1's second check; n2 always reports p2
		want   []store.PoolMount
	}{
		{
			name:   "nil keeps previous mounts",
			second: nil,
			want:   []store.PoolMount{mount("n1", "p1", true, 0), mount("n2", "p2", true, 0), mount("n1", "p3", false, 0)},
		},
		{
			name:   "mounts replace previous mounts",
			second: []store.PoolMount{mount("n1", "p2", false, time.Hour)},
			want:   []store.PoolMount{mount("n1", "p2", false, time.Hour), mount("n2", "p2", true, 0)},
		},
		{
			name:   "empty mounts clear the node's mounts",
			second: []store.PoolMount{},
			want:   []store.PoolMount{mount("n2", "p2", true, 0)},
		},
		{
			name:   "mounts of vanished pools are dropped",
			second: []store.PoolMount{mount("n1", "gone", true, time.Hour), mount("n1", "p1", true, time.Hour)},
			// p1 was found as before: its row stays.
			want: []store.PoolMount{mount("n1", "p1", true, 0), mount("n2", "p2", true, 0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := setup(t)
			record(t, s, "n1", ready, []store.PoolMount{mount("n1", "p3", false, 0), mount("n1", "p1", true, 0)})
			record(t, s, "n2", ready, []store.PoolMount{mount("n2", "p2", true, 0)})
			record(t, s, "n1", down, tt.second)
			wantEqual(t, "ListPoolMounts (by pool, then node)", mustMounts(t, s), tt.want)
			if got := mustGetNode(t, s, "n1").State; got != store.NodeUnreachable {
				t.Errorf("State = %q, want the second check's", got)
			}
		})
	}

	t.Run("an unchanged mount keeps its row; the node says when it was seen", func(t *testing.T) {
		s := setup(t)
		checkAt := func(d time.Duration) store.NodeStatus {
			st := ready
			st.LastCheckedAt = at(d)
			return st
		}
		seen := func(when string, d time.Duration) {
			t.Helper()
			if got := mustGetNode(t, s, "n1").MountsSeenAt; !got.Equal(at(d)) {
				t.Errorf("MountsSeenAt %s = %v, want %v", when, got, at(d))
			}
		}
		first := mount("n1", "p1", true, time.Hour)
		record(t, s, "n1", checkAt(time.Hour), []store.PoolMount{first})
		seen("after the first check", time.Hour)
		// Found as it was, however much later: the row, and its
		// CheckedAt, stay; the node's MountsSeenAt moves.
		record(t, s, "n1", checkAt(3*time.Hour), []store.PoolMount{mount("n1", "p1", true, 3*time.Hour)})
		wantEqual(t, "mounts after an unchanged check", mustMounts(t, s), []store.PoolMount{first})
		seen("after an unchanged check", 3*time.Hour)
		// A failed check learns nothing about pools.
		failed := down
		failed.LastCheckedAt = at(4 * time.Hour)
		record(t, s, "n1", failed, nil)
		seen("after a failed check", 3*time.Hour)
		// Any change is written at once; a mount found as before, beside
		// it, keeps its row.
		changed := mount("n1", "p1", true, 5*time.Hour)
		changed.FreeBytes--
		p2 := mount("n1", "p2", false, 5*time.Hour)
		record(t, s, "n1", checkAt(5*time.Hour), []store.PoolMount{changed, p2})
		wantEqual(t, "mounts after a change", mustMounts(t, s), []store.PoolMount{changed, p2})
		record(t, s, "n1", checkAt(6*time.Hour), []store.PoolMount{mount("n1", "p1", true, 6*time.Hour), p2})
		wantEqual(t, "mounts after p1 was found as at first", mustMounts(t, s), []store.PoolMount{mount("n1", "p1", true, 6*time.Hour), p2})
		seen("after the last check", 6*time.Hour)
	})

	t.Run("mounts by node", func(t *testing.T) {
		s := setup(t)
		a, b, c := mount("n1", "p1", true, 0), mount("n1", "p3", false, 0), mount("n2", "p2", true, 0)
		record(t, s, "n1", ready, []store.PoolMount{b, a})
		record(t, s, "n2", ready, []store.PoolMount{c})
		for _, tt := range []struct {
			ids  []string
			want []store.PoolMount
		}{
			{nil, nil},
			{[]string{"n1"}, []store.PoolMount{a, b}},
			{[]string{"n2", "n1", "gone"}, []store.PoolMount{a, b, c}},
		} {
			got, err := s.ListNodeMounts(ctx, tt.ids...)
			if err != nil {
				t.Fatal(err)
			}
			wantEqual(t, fmt.Sprintf("ListNodeMounts(%q) (by node, then pool)", tt.ids), got, tt.want)
		}
	})

	t.Run("pool usages", func(t *testing.T) {
		s := setup(t)
		if got, err := s.PoolUsages(ctx); err != nil || len(got) != 0 {
			t.Fatalf("PoolUsages before any check = %v, %v; want none", got, err)
		}
		a := mount("n1", "p1", true, 0)
		a.FreeBytes, a.TotalBytes = 300, 1000
		b := mount("n2", "p1", true, 0)
		b.FreeBytes, b.TotalBytes = 200, 900
		c := mount("n1", "p2", false, 0)
		c.FreeBytes, c.TotalBytes = 5, 5 // not mounted: not counted
		d := mount("n2", "p2", false, 0)
		record(t, s, "n1", ready, []store.PoolMount{a, c})
		record(t, s, "n2", ready, []store.PoolMount{b, d})
		got, err := s.PoolUsages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "PoolUsages (by pool)", got, []store.PoolUsage{
			{PoolID: "p1", MountedNodes: 2, FreeBytes: 200, TotalBytes: 1000},
			{PoolID: "p2"},
		})
	})

	t.Run("mount node id may be left empty", func(t *testing.T) {
		s := setup(t)
		m := mount("", "p1", true, 0)
		record(t, s, "n1", ready, []store.PoolMount{m})
		m.NodeID = "n1"
		wantEqual(t, "ListPoolMounts", mustMounts(t, s), []store.PoolMount{m})
	})

	t.Run("large byte counts", func(t *testing.T) {
		s := setup(t)
		m := mount("n1", "p1", true, 0)
		m.FreeBytes, m.TotalBytes = 1<<62, math.MaxInt64
		record(t, s, "n1", ready, []store.PoolMount{m})
		wantEqual(t, "ListPoolMounts", mustMounts(t, s), []store.PoolMount{m})
	})

	t.Run("rejected checks change nothing", func(t *testing.T) {
		tests := []struct {
			name   string
			mounts []store.PoolMount
		}{
			{"mount of another node", []store.PoolMount{mount("n2", "p1", true, time.Hour)}},
			{"pool reported twice", []store.PoolMount{mount("n1", "p2", true, time.Hour), mount("n1", "p2", false, time.Hour)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := setup(t)
				record(t, s, "n1", ready, []store.PoolMount{mount("n1", "p1", true, 0)})
				if err := s.RecordNodeCheck(ctx, "n1", down, tt.mounts); err == nil {
					t.Fatal("RecordNodeCheck succeeded")
				}
				if got := mustGetNode(t, s, "n1").State; got != store.NodeReady {
					t.Errorf("State = %q after a rejected check, want it unchanged", got)
				}
				wantEqual(t, "ListPoolMounts", mustMounts(t, s), []store.PoolMount{mount("n1", "p1", true, 0)})
			})
		}
	})
}

func mustCreate(t *testing.T, s store.Store, n store.Node) {
	t.Helper()
	if err := s.CreateNode(context.Background(), n); err != nil {
		t.Fatalf("CreateNode(%s): %v", n.ID, err)
	}
}

func testNodeCertificates(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	cert := store.NodeCertificate{Serial: "3f9a0c11d2e4b5a6978877665544332211", NotAfter: at(90 * 24 * time.Hour), IssuedAt: at(time.Hour)}
	set := func(t *testing.T, s store.Store, id string, c store.NodeCertificate) {
		t.Helper()
		if err := s.SetNodeCertificate(ctx, id, c); err != nil {
			t.Fatalf("SetNodeCertificate(%s): %v", id, err)
		}
	}

	t.Run("zero until enrolled", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1")
		if got := mustGetNode(t, s, "n1").Certificate; got != (store.NodeCertificate{}) {
			t.Errorf("Certificate of a new node = %+v, want zero", got)
		}
	})

	t.Run("set and read back by every read", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1", "n2")
		set(t, s, "n1", cert)
		want := node("n1")
		want.Certificate = cert
		wantEqual(t, "GetNode", mustGetNode(t, s, "n1"), want)
		got, err := s.GetNodeByName(ctx, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetNodeByName", got, want)
		ns, err := s.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "ListNodes", ns, []store.Node{want, node("n2")})
	})

	t.Run("renewal replaces the certificate", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1")
		set(t, s, "n1", cert)
		renewed := store.NodeCertificate{Serial: "01", NotAfter: at(180 * 24 * time.Hour), IssuedAt: at(80 * 24 * time.Hour)}
		set(t, s, "n1", renewed)
		wantEqual(t, "Certificate after renewal", mustGetNode(t, s, "n1").Certificate, renewed)
		set(t, s, "n1", store.NodeCertificate{})
		wantEqual(t, "Certificate after clearing", mustGetNode(t, s, "n1").Certificate, store.NodeCertificate{})
	})

	t.Run("times come back in UTC, to the microsecond", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1")
		cest := time.FixedZone("CEST", 2*3600)
		c := store.NodeCertificate{Serial: "aa",
			NotAfter: time.Date(2026, 1, 1, 0, 0, 0, 999999999, cest),
			IssuedAt: time.Date(2025, 1, 1, 0, 0, 0, 1500, cest)}
		set(t, s, "n1", c)
		got := mustGetNode(t, s, "n1").Certificate
		for _, tt := range []struct {
			name      string
			got, want time.Time
		}{{"NotAfter", got.NotAfter, c.NotAfter}, {"IssuedAt", got.IssuedAt, c.IssuedAt}} {
			if tt.got.Location() != time.UTC || !tt.got.Equal(tt.want.Truncate(time.Microsecond)) {
				t.Errorf("%s = %v, want %v in UTC", tt.name, tt.got, tt.want.Truncate(time.Microsecond))
			}
		}
	})

	t.Run("unknown node", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1")
		wantErr(t, "SetNodeCertificate", s.SetNodeCertificate(ctx, "nx", cert), store.ErrNotFound, "nx")
		if got := mustGetNode(t, s, "n1").Certificate; got != (store.NodeCertificate{}) {
			t.Errorf("other node's Certificate = %+v, want zero", got)
		}
	})

	t.Run("created with a certificate", func(t *testing.T) {
		s := open(t)
		n := node("n1")
		n.Certificate = cert
		mustCreate(t, s, n)
		wantEqual(t, "GetNode", mustGetNode(t, s, "n1"), n)
	})

	t.Run("kept by checks and updates", func(t *testing.T) {
		s := open(t)
		mustCreateNodes(t, s, "n1")
		set(t, s, "n1", cert)
		if err := s.RecordNodeCheck(ctx, "n1", store.NodeStatus{State: store.NodeReady, LastCheckedAt: at(time.Minute)}, []store.PoolMount{}); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateNode(ctx, "n1", "renamed", "10.9.9.9:9090"); err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "Certificate after check and update", mustGetNode(t, s, "n1").Certificate, cert)
	})
}
