package placement

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// connectFunc lets a test decide what a lazy connection finds. Integration
// tests in internal/e2e run the same rules against real agents.
type connectFunc func(ctx context.Context, nodeID string) (store.Node, []store.PoolMount, error)

func (f connectFunc) Connect(ctx context.Context, id string) (store.Node, []store.PoolMount, error) {
	return f(ctx, id)
}

// node describes one node's state and its view of pool "p".
type node struct {
	id      string
	state   store.NodeState
	mount   string // "yes", "no", "" (never reported)
	free    uint64
	connect string // what a lazy connect finds: "yes", "no", "fail", "" (not expected)
}

type world struct {
	nodes    []node
	assigned []string
	shared   bool
	loads    map[string]Load
}

func setup(t *testing.T, w world) (*Chooser, *[]string) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlstore.OpenSQLite(ctx, t.TempDir()+"/quarry.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Unix(1_700_000_000, 0).UTC()
	for i, n := range w.nodes {
		must(t, st.CreateNode(ctx, store.Node{ID: n.id, Name: n.id, Address: fmt.Sprintf("10.0.0.%d:9090", i+1),
			State: store.NodeUnknown, StateSince: now, CreatedAt: now}))
	}
	must(t, st.CreatePool(ctx, store.Pool{ID: "p", Name: "isos", Type: "dir", Path: "/srv/isos",
		Shared: w.shared, AssignedNodeIDs: w.assigned, CreatedAt: now}))
	for _, n := range w.nodes {
		var mounts []store.PoolMount
		switch n.mount {
		case "yes":
			mounts = []store.PoolMount{{NodeID: n.id, PoolID: "p", Mounted: true, FreeBytes: n.free, CheckedAt: now}}
		case "no":
			mounts = []store.PoolMount{{NodeID: n.id, PoolID: "p", Reason: "/srv/isos holds no pool marker", CheckedAt: now}}
		}
		reason := ""
		if n.state == store.NodeUnreachable {
			reason = "connection refused"
		}
		must(t, st.RecordNodeCheck(ctx, n.id, store.NodeStatus{State: n.state, StateReason: reason, StateSince: now, LastCheckedAt: now}, mounts))
	}
	var connected []string
	c := &Chooser{Store: st, Link: connectFunc(func(ctx context.Context, id string) (store.Node, []store.PoolMount, error) {
		connected = append(connected, id)
		nd, err := st.GetNode(ctx, id)
		if err != nil {
			return nd, nil, err
		}
		for _, n := range w.nodes {
			if n.id != id {
				continue
			}
			switch n.connect {
			case "fail", "":
				return nd, nil, errors.New("dial tcp: connection refused")
			}
			nd.State = store.NodeReady
			return nd, []store.PoolMount{{NodeID: id, PoolID: "p", Mounted: n.connect == "yes", Reason: "not the pool"}}, nil
		}
		return nd, nil, errors.New("unknown node")
	})}
	if w.loads != nil {
		c.Load = func(context.Context) (map[string]Load, error) { return w.loads, nil }
	}
	return c, &connected
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestChoose(t *testing.T) {
	ready, unreach, unknown := store.NodeReady, store.NodeUnreachable, store.NodeUnknown
	tests := []struct {
		name      string
		w         world
		want      []string // kept, in order
		connected []string // lazily connected, in order
		errHas    []string // fragments of the error when nothing is kept
	}{
		{
			name: "rule 2: assigned ready nodes first, in assignment order",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes"}, {id: "b", state: ready, mount: "yes"}},
				assigned: []string{"b", "a"}},
			want: []string{"b", "a"},
		},
		{
			name: "rule 2: affinity orders equals: fewer jobs, then throughput, then free space",
			w: world{nodes: []node{
				{id: "a", state: ready, mount: "yes", free: 100},
				{id: "b", state: ready, mount: "yes", free: 900},
				{id: "c", state: ready, mount: "yes", free: 500},
				{id: "d", state: ready, mount: "yes", free: 999},
			}, assigned: []string{"a", "b", "c", "d"},
				loads: map[string]Load{"d": {RunningJobs: 2}, "c": {Throughput: 50}}},
			want: []string{"c", "b", "a", "d"},
		},
		{
			name: "rule 1: a node whose directory is not the pool is never used",
			w: world{nodes: []node{{id: "a", state: ready, mount: "no"}, {id: "b", state: ready, mount: "yes"}},
				assigned: []string{"a", "b"}},
			want: []string{"b"},
		},
		{
			name: "rule 3: assigned node not ready is connected lazily and used",
			w: world{nodes: []node{{id: "a", state: unknown, connect: "yes"}},
				assigned: []string{"a"}},
			want: []string{"a"}, connected: []string{"a"},
		},
		{
			name: "rule 3: with a ready assigned node kept, nodes that are not ready are not dialed",
			w: world{nodes: []node{{id: "a", state: unreach, connect: "yes"}, {id: "b", state: ready, mount: "yes"}},
				assigned: []string{"a", "b"}},
			want: []string{"b"},
		},
		{
			name: "rule 3: a lazily connected node that does not mount the pool is dropped",
			w: world{nodes: []node{{id: "a", state: unreach, connect: "no"}, {id: "b", state: unreach, connect: "fail"}},
				assigned: []string{"a", "b"}},
			connected: []string{"a", "b"},
			errHas: []string{`no node can reach pool "isos" (/srv/isos)`, "a (assigned) connected, but does not mount it: not the pool",
				"b (assigned) unreachable since", "connecting now failed: dial tcp: connection refused"},
		},
		{
			name: "rule 3: a ready node that never reported on the pool is checked now",
			w: world{nodes: []node{{id: "a", state: ready, connect: "yes"}},
				assigned: []string{"a"}},
			want: []string{"a"}, connected: []string{"a"},
		},
		{
			name: "rule 4: shared pool falls back to other ready nodes that mount it",
			w: world{nodes: []node{
				{id: "a", state: unreach, connect: "fail"},
				{id: "b", state: ready, mount: "yes"},
				{id: "c", state: ready, mount: "no"},
				{id: "d", state: unreach},
			}, assigned: []string{"a"}, shared: true},
			want: []string{"b"}, connected: []string{"a"},
		},
		{
			name: "rule 4: a local pool never falls back to unassigned nodes",
			w: world{nodes: []node{{id: "a", state: unreach, connect: "fail"}, {id: "b", state: ready, mount: "yes"}},
				assigned: []string{"a"}},
			connected: []string{"a"},
			errHas:    []string{"b not assigned to the pool, and the pool is not shared", "assign another node"},
		},
		{
			name: "scenario 3: no assigned nodes: any ready node that mounts it",
			w: world{nodes: []node{
				{id: "a", state: ready, mount: "no"},
				{id: "b", state: ready, mount: "yes"},
				{id: "c", state: unreach},
			}},
			want: []string{"b"},
		},
		{
			name:   "rule 5: no nodes at all",
			w:      world{},
			errHas: []string{"no nodes are registered", "quarry node register"},
		},
		{
			name: "rule 5: every node named with its reason",
			w:    world{nodes: []node{{id: "a", state: ready, mount: "no"}, {id: "b", state: unknown}}},
			errHas: []string{"a does not mount it: /srv/isos holds no pool marker", "b never reached",
				"quarry pool update isos --assign NODE"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, connected := setup(t, tt.w)
			ch, err := c.Choose(t.Context(), "p")
			var kept []string
			if ch != nil {
				for _, k := range ch.Kept {
					kept = append(kept, k.Node.ID)
					if k.Reason == "" {
						t.Errorf("kept node %s has no reason", k.Node.ID)
					}
				}
				for _, r := range ch.Rejected {
					if r.Reason == "" {
						t.Errorf("rejected node %s has no reason", r.Node.ID)
					}
				}
			}
			if fmt.Sprint(kept) != fmt.Sprint(tt.want) {
				t.Errorf("kept %v; want %v", kept, tt.want)
			}
			if fmt.Sprint(*connected) != fmt.Sprint(tt.connected) {
				t.Errorf("lazily connected %v; want %v", *connected, tt.connected)
			}
			if len(tt.want) > 0 {
				if err != nil {
					t.Fatalf("Choose: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNoNode) {
				t.Fatalf("Choose error = %v; want ErrNoNode", err)
			}
			for _, frag := range tt.errHas {
				if !strings.Contains(err.Error(), frag) {
					t.Errorf("error %q\nlacks %q", err, frag)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestChooseUnknownPool(t *testing.T) {
	c, _ := setup(t, world{})
	if _, err := c.Choose(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Choose(unknown pool) = %v; want ErrNotFound", err)
	}
}
