package placement

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	const mib = 1 << 20
	tests := []struct {
		name      string
		w         world
		need      Need
		want      []string          // kept, in order
		reasons   map[string]string // node → a fragment of its reason, kept or dropped
		connected []string          // lazily connected, in order
		errHas    []string          // fragments of the error when nothing is kept
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
			name: "affinity: fewer running jobs ranks above the assignment order",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes", free: 512 * mib}, {id: "b", state: ready, mount: "yes", free: 512 * mib}},
				assigned: []string{"a", "b"}, loads: map[string]Load{"a": {RunningJobs: 2, Throughput: 3 * mib}}},
			want: []string{"b", "a"},
			reasons: map[string]string{
				"a": "assigned #1, READY; 2 running jobs at 3.0 MiB/s, 512.0 MiB free",
				"b": "assigned #2, READY; 0 running jobs, 512.0 MiB free",
			},
		},
		{
			name: "affinity: equal running jobs, better throughput first",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes", free: 900}, {id: "b", state: ready, mount: "yes", free: 100}},
				assigned: []string{"a", "b"}, loads: map[string]Load{"a": {RunningJobs: 1, Throughput: 10}, "b": {RunningJobs: 1, Throughput: 50}}},
			want:    []string{"b", "a"},
			reasons: map[string]string{"b": "1 running job at 50 B/s", "a": "1 running job at 10 B/s"},
		},
		{
			name: "affinity: equal jobs and throughput, more free space first",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes", free: 100 * mib}, {id: "b", state: ready, mount: "yes", free: 900 * mib}},
				assigned: []string{"a", "b"}},
			want:    []string{"b", "a"},
			reasons: map[string]string{"b": "0 running jobs, 900.0 MiB free", "a": "0 running jobs, 100.0 MiB free"},
		},
		{
			name: "affinity: all equal, the assignment order decides",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes", free: mib}, {id: "b", state: ready, mount: "yes", free: mib}},
				assigned: []string{"b", "a"}, loads: map[string]Load{"a": {RunningJobs: 1}, "b": {RunningJobs: 1}}},
			want:    []string{"b", "a"},
			reasons: map[string]string{"b": "assigned #1, READY", "a": "assigned #2, READY"},
		},
		{
			name: "need: a node with too little free space is dropped with the reason",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes", free: mib}, {id: "b", state: ready, mount: "yes", free: 1 << 30}},
				assigned: []string{"a", "b"}, loads: map[string]Load{"b": {RunningJobs: 2}}},
			need:    Need{Bytes: 100 * mib},
			want:    []string{"b"},
			reasons: map[string]string{"a": "assigned #1, READY; only 1.0 MiB free, 100.0 MiB needed"},
		},
		{
			name: "need: zero means unknown, and drops nobody",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes"}},
				assigned: []string{"a"}},
			want:    []string{"a"},
			reasons: map[string]string{"a": "assigned, READY; 0 running jobs, 0 B free"},
		},
		{
			name: "need: fallback and lazily connected nodes without room are dropped too",
			w: world{nodes: []node{
				{id: "a", state: unreach, connect: "yes"},
				{id: "b", state: ready, mount: "yes", free: mib},
				{id: "c", state: ready, mount: "yes", free: 2 * mib},
			}, assigned: []string{"a"}, shared: true},
			need:      Need{Bytes: 2 * mib},
			want:      []string{"c"},
			connected: []string{"a"},
			reasons: map[string]string{
				"a": "connected on demand and mounts the pool; only 0 B free, 2.0 MiB needed",
				"b": "not assigned, READY, mounts the shared pool (fallback); only 1.0 MiB free",
				"c": "(fallback); 0 running jobs, 2.0 MiB free",
			},
		},
		{
			name: "need: no node has room: the error says so and what to do",
			w: world{nodes: []node{{id: "a", state: ready, mount: "yes", free: mib}},
				assigned: []string{"a"}},
			need: Need{Bytes: 2 * mib},
			errHas: []string{`no node can reach pool "isos" (/srv/isos): a assigned, READY; only 1.0 MiB free, 2.0 MiB needed;`,
				"free space in the pool (`quarry image rm IMAGE`) or use another pool"},
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
			ch, err := c.ChooseFor(t.Context(), "p", tt.need)
			var kept []string
			if ch != nil {
				for id, frag := range tt.reasons {
					if r := reasonOf(ch, id); !strings.Contains(r, frag) {
						t.Errorf("node %s: reason %q\nlacks %q", id, r, frag)
					}
				}
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

func reasonOf(ch *Choice, id string) string {
	for _, c := range append(slices.Clone(ch.Kept), ch.Rejected...) {
		if c.Node.ID == id {
			return c.Reason
		}
	}
	return "(not considered)"
}

// TestPreview: the view for operators ranks like Choose but dials nobody,
// and a pool nobody can serve is no error there.
func TestPreview(t *testing.T) {
	c, connected := setup(t, world{nodes: []node{
		{id: "a", state: store.NodeUnreachable, connect: "yes"},
		{id: "b", state: store.NodeReady, mount: "no"},
	}, assigned: []string{"a", "b"}})
	ch, err := c.Preview(t.Context(), "p")
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	if len(ch.Kept) != 0 || len(*connected) != 0 {
		t.Errorf("Preview kept %v and connected %v; want neither", ch.Kept, *connected)
	}
	if r := reasonOf(ch, "a"); !strings.Contains(r, "unreachable since") || !strings.HasSuffix(r, "an operation would connect to it now") {
		t.Errorf("a: %q", r)
	}
	if r := reasonOf(ch, "b"); r != "does not mount it: /srv/isos holds no pool marker" {
		t.Errorf("b: %q", r)
	}
	if _, err := c.Preview(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Preview(unknown pool) = %v; want ErrNotFound", err)
	}
}

// TestJobLoad: the load placement ranks by comes from the RUNNING jobs in
// the store, so a node busy with jobs ranks below an idle one.
func TestJobLoad(t *testing.T) {
	c, _ := setup(t, world{nodes: []node{
		{id: "a", state: store.NodeReady, mount: "yes"},
		{id: "b", state: store.NodeReady, mount: "yes"},
	}, assigned: []string{"a", "b"}})
	ctx := t.Context()
	st := c.Store
	now := time.Unix(1_700_000_000, 0).UTC()
	run := func(id, nodeID string, bytesPerSec float64) {
		t.Helper()
		_, err := st.CreateDownload(ctx, store.Image{ID: "im-" + id, PoolID: "p", Name: id, RelPath: "images/" + id,
			Kind: store.KindDisk, CreatedAt: now, UpdatedAt: now}, store.Job{ID: id, Source: id, CreatedAt: now, UpdatedAt: now})
		must(t, err)
		j, err := st.ClaimJob(ctx, id, nodeID, now)
		must(t, err)
		j.BytesPerSec = bytesPerSec
		must(t, st.UpdateJob(ctx, j))
	}
	run("j1", "a", 1000)
	run("j2", "a", 24)
	run("j3", "b", 5)

	loads, err := JobLoad(st)(ctx)
	must(t, err)
	if want := map[string]Load{"a": {2, 1024}, "b": {1, 5}}; fmt.Sprint(loads) != fmt.Sprint(want) {
		t.Errorf("JobLoad = %v; want %v", loads, want)
	}
	c.Load = JobLoad(st)
	ch, err := c.Choose(ctx, "p")
	must(t, err)
	if first := ch.First(); first.Node.ID != "b" || first.Reason != "assigned #2, READY; 1 running job at 5 B/s, 0 B free" {
		t.Errorf("first %s: %q; want b, the node with fewer running jobs", first.Node.ID, first.Reason)
	}
}

func TestInitializers(t *testing.T) {
	nodes := []store.Node{{ID: "3", Name: "c"}, {ID: "1", Name: "a"}, {ID: "2", Name: "b"}}
	tests := []struct {
		assigned []string
		want     string
	}{
		{nil, "a b c"},
		{[]string{"3", "1"}, "c a"},
		{[]string{"2", "gone"}, "b"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.assigned), func(t *testing.T) {
			var got []string
			for _, n := range Initializers(store.Pool{AssignedNodeIDs: tt.assigned}, nodes) {
				got = append(got, n.Name)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("Initializers = %v; want %s", got, tt.want)
			}
		})
	}
	if nodes[0].Name != "c" {
		t.Errorf("Initializers reordered its argument: %v", nodes)
	}
}

// listCounter counts the listings of every node.
type listCounter struct {
	store.Store
	lists int
}

func (l *listCounter) ListNodes(ctx context.Context) ([]store.Node, error) {
	l.lists++
	return l.Store.ListNodes(ctx)
}

// TestLocalPoolReadsItsNodesOnly: choosing for a local pool with assigned
// nodes reads those nodes, not every node of the cluster, unless no node
// was found: then every other node is listed as not assigned, to explain.
func TestLocalPoolReadsItsNodesOnly(t *testing.T) {
	ready := store.NodeReady
	c, _ := setup(t, world{nodes: []node{{id: "a", state: ready, mount: "yes", free: 1 << 30}, {id: "b", state: ready, mount: "yes", free: 1 << 30}},
		assigned: []string{"a"}})
	counter := &listCounter{Store: c.Store}
	c.Store = counter
	ch, err := c.Choose(t.Context(), "p")
	if err != nil || len(ch.Kept) != 1 || ch.Kept[0].Node.ID != "a" || counter.lists != 0 {
		t.Fatalf("Choose = %+v, %v after %d listings of every node; want a, and no listing", ch, err, counter.lists)
	}

	// a no longer mounts the pool: nothing is kept, and b is explained.
	must(t, counter.Store.RecordNodeCheck(t.Context(), "a", store.NodeStatus{State: ready, LastCheckedAt: time.Now()},
		[]store.PoolMount{{NodeID: "a", PoolID: "p", Reason: "/srv/isos holds no pool marker", CheckedAt: time.Now()}}))
	_, err = c.Choose(t.Context(), "p")
	if err == nil || !strings.Contains(err.Error(), "b "+notAssigned) || counter.lists != 1 {
		t.Fatalf("Choose error = %v after %d listings; want b %s, from one listing", err, counter.lists, notAssigned)
	}
}

// TestSharedPoolReadsMountingNodesOnly: an operation on a shared pool reads
// the nodes that mount it, not every node of the cluster, while one of
// them is kept; when none is, every node is read, to find one to connect
// to or to explain. Preview, which shows every node's reason, reads them all.
func TestSharedPoolReadsMountingNodesOnly(t *testing.T) {
	ready := store.NodeReady
	c, connected := setup(t, world{shared: true, nodes: []node{
		{id: "a", state: ready, mount: "yes", free: 1 << 30},
		{id: "b", state: ready, mount: "no"},
		{id: "c", state: ready, connect: "no"},
	}})
	counter := &listCounter{Store: c.Store}
	c.Store = counter
	ch, err := c.Choose(t.Context(), "p")
	if err != nil || len(ch.Kept) != 1 || ch.Kept[0].Node.ID != "a" || counter.lists != 0 || len(*connected) != 0 {
		t.Fatalf("Choose = %+v, %v after %d listings of every node, connecting to %v; want a, no listing, no connection", ch, err, counter.lists, *connected)
	}
	if _, err := c.Preview(t.Context(), "p"); err != nil || counter.lists != 1 {
		t.Fatalf("Preview: %v after %d listings; want one", err, counter.lists)
	}

	// a no longer mounts the pool: every node is read, c (which never
	// reported on the pool) is connected to, and b and c are explained.
	must(t, counter.Store.RecordNodeCheck(t.Context(), "a", store.NodeStatus{State: ready, LastCheckedAt: time.Now()},
		[]store.PoolMount{{NodeID: "a", PoolID: "p", Reason: "/srv/isos holds no pool marker", CheckedAt: time.Now()}}))
	_, err = c.Choose(t.Context(), "p")
	if err == nil || !strings.Contains(err.Error(), "b does not mount it") || !strings.Contains(err.Error(), "c connected, but does not mount it") || counter.lists != 2 {
		t.Fatalf("Choose error = %v after %d listings; want b and c explained, from one more listing", err, counter.lists)
	}
	if !slices.Equal(*connected, []string{"c"}) {
		t.Errorf("connected to %v, want c", *connected)
	}
}
