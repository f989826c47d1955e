package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/agent"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// cluster is a control plane with three in-process agents. n1 and n2 mount
// the shared directory at /srv/nfs (standing for NFS); n3 has its own,
// unrelated /srv/nfs on local disk.
type cluster struct {
	s      *quarrytest.Server
	agents map[string]*quarrytest.Agent
	ids    map[string]string // node name → id
	shared string
}

func newCluster(t *testing.T, opts ...quarrytest.ServerOption) *cluster {
	t.Helper()
	c := &cluster{
		s:      quarrytest.StartServer(t, opts...),
		agents: map[string]*quarrytest.Agent{},
		ids:    map[string]string{},
		shared: t.TempDir(),
	}
	mkdir(t, filepath.Join(c.shared, "isos"))
	for _, name := range []string{"n1", "n2", "n3"} {
		o := quarrytest.AgentOptions{Name: name}
		if name != "n3" {
			o.Binds = []agent.Bind{{Path: "/srv/nfs", Dir: c.shared}}
		}
		a := quarrytest.StartAgent(t, c.s, o)
		c.agents[name] = a
		c.ids[name] = a.NodeID // registered by its enrollment
	}
	for _, id := range c.ids {
		waitState(t, c.s, id, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	}
	// n3's own /srv/nfs/isos: same path, different disk.
	mkdir(t, c.agents["n3"].Opts.LocalPath("/srv/nfs/isos"))
	return c
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) createPool(t *testing.T, name, path string, shared bool, assign ...string) *quarryv1.StoragePool {
	t.Helper()
	var ids []string
	for _, n := range assign {
		ids = append(ids, c.ids[n])
	}
	resp, err := c.s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: name, Path: path, Shared: shared, AssignedNodeIds: ids}))
	if err != nil {
		t.Fatalf("creating pool %s: %v", name, err)
	}
	return resp.Msg.GetPool()
}

// waitMounts polls until the pool's per-node view matches want (node name →
// mounted) for every node named, returning the pool.
func (c *cluster) waitMounts(t *testing.T, poolID string, want map[string]bool) *quarryv1.StoragePool {
	t.Helper()
	var p *quarryv1.StoragePool
	quarrytest.Eventually(t, 10*time.Second, func() error {
		resp, err := c.s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: poolID}))
		if err != nil {
			return err
		}
		p = resp.Msg.GetPool()
		got := map[string]bool{}
		seen := map[string]bool{}
		for _, m := range p.GetNodes() {
			if m.GetCheckedAt() != nil {
				got[m.GetNodeName()], seen[m.GetNodeName()] = m.GetMounted(), true
			}
		}
		for n, w := range want {
			if !seen[n] || got[n] != w {
				return fmt.Errorf("pool %s: node %s mounted=%v (reported %v), want %v", p.GetName(), n, got[n], seen[n], w)
			}
		}
		return nil
	})
	return p
}

func (c *cluster) choose(t *testing.T, poolID string) ([]string, error) {
	t.Helper()
	ch, err := c.s.Placement.Choose(t.Context(), poolID)
	var kept []string
	if ch != nil {
		for _, k := range ch.Kept {
			kept = append(kept, k.Node.Name)
		}
	}
	return kept, err
}

func reasonOf(p *quarryv1.StoragePool, node string) string {
	for _, m := range p.GetNodes() {
		if m.GetNodeName() == node {
			return m.GetReason()
		}
	}
	return ""
}

// TestPoolMarker: a directory at the pool's path that lacks the pool's
// marker, or holds another pool's, is "not mounted" with the reason, and the
// node-choice helper never returns that node.
func TestPoolMarker(t *testing.T) {
	c := newCluster(t)
	p := c.createPool(t, "isos", "/srv/nfs/isos", true, "n1")
	p = c.waitMounts(t, p.GetId(), map[string]bool{"n1": true, "n2": true, "n3": false})
	if p.GetInitializedByNodeId() != c.ids["n1"] {
		t.Errorf("initialized by %q; want the first assigned node n1 (%s)", p.GetInitializedByNodeId(), c.ids["n1"])
	}
	if r := reasonOf(p, "n3"); !strings.Contains(r, "/srv/nfs/isos holds no pool marker") {
		t.Errorf("n3 reason = %q", r)
	}
	marker, err := os.ReadFile(filepath.Join(c.shared, "isos/.quarry/pool.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ ID string }
	if err := json.Unmarshal(marker, &m); err != nil || m.ID != p.GetId() {
		t.Fatalf("marker %s: id %q, %v; want %s", marker, m.ID, err, p.GetId())
	}
	if _, err := os.Stat(c.agents["n3"].Opts.LocalPath("/srv/nfs/isos/.quarry")); !os.IsNotExist(err) {
		t.Errorf("n3's unrelated directory was written to: %v", err)
	}
	kept, err := c.choose(t, p.GetId())
	if err != nil || strings.Join(kept, ",") != "n1,n2" {
		t.Errorf("Choose = %v, %v; want n1 then n2, never n3", kept, err)
	}

	// Another pool's marker on n3's local disk: still never n3.
	other := c.createPool(t, "other", "/srv/other", false, "n3")
	mkdir(t, c.agents["n3"].Opts.LocalPath("/srv/other"))
	c.s.Pools.UpdatePool(t.Context(), connect.NewRequest(&quarryv1.UpdatePoolRequest{Id: other.GetId()}))
	c.waitMounts(t, other.GetId(), map[string]bool{"n3": true})
	if err := os.RemoveAll(c.agents["n3"].Opts.LocalPath("/srv/nfs/isos")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(c.agents["n3"].Opts.LocalPath("/srv/other"), c.agents["n3"].Opts.LocalPath("/srv/nfs/isos")); err != nil {
		t.Fatal(err)
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		p = c.waitMounts(t, p.GetId(), map[string]bool{"n3": false})
		if r := reasonOf(p, "n3"); !strings.Contains(r, "holds the marker of another pool") {
			return fmt.Errorf("n3 reason = %q", r)
		}
		return nil
	})
	kept, err = c.choose(t, p.GetId())
	if err != nil || strings.Join(kept, ",") != "n1,n2" {
		t.Errorf("Choose = %v, %v; want n1 then n2, never n3", kept, err)
	}
}

// TestPlacementScenarios runs the shapes of DESIGN.md scenarios 1–8 against
// real agents. Downloads (1–4) and ISO scans (5–8) ask the same helper, so a
// shape is one pool layout and one question.
func TestPlacementScenarios(t *testing.T) {
	c := newCluster(t)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	mkdir(t, c.agents["n2"].Opts.LocalPath("/srv/unassigned"))

	local := c.createPool(t, "local", "/srv/local", false, "n1")
	shared := c.createPool(t, "isos", "/srv/nfs/isos", true, "n1")
	unassigned := c.createPool(t, "unassigned", "/srv/unassigned", false)
	nowhere := c.createPool(t, "nowhere", "/srv/nowhere", false, "n3")
	// A local pool is asked of its assigned nodes only: the others may
	// never use it (health checks would otherwise cost nodes × pools).
	for _, m := range c.waitMounts(t, local.GetId(), map[string]bool{"n1": true}).GetNodes() {
		if m.GetNodeName() != "n1" && m.GetCheckedAt() != nil {
			t.Errorf("pool local: node %s, not assigned, reported on it: mounted=%v %q", m.GetNodeName(), m.GetMounted(), m.GetReason())
		}
	}
	c.waitMounts(t, shared.GetId(), map[string]bool{"n1": true, "n2": true, "n3": false})
	c.waitMounts(t, unassigned.GetId(), map[string]bool{"n1": false, "n2": true, "n3": false})

	t.Run("1 and 5: an assigned node is connected: that node", func(t *testing.T) {
		for _, p := range []*quarryv1.StoragePool{local, shared} {
			if kept, err := c.choose(t, p.GetId()); err != nil || kept[0] != "n1" {
				t.Errorf("pool %s: Choose = %v, %v; want n1 first", p.GetName(), kept, err)
			}
		}
	})
	t.Run("3 and 7: no assigned nodes: any connected node that mounts it", func(t *testing.T) {
		if kept, err := c.choose(t, unassigned.GetId()); err != nil || strings.Join(kept, ",") != "n2" {
			t.Errorf("Choose = %v, %v; want n2", kept, err)
		}
	})
	t.Run("4 and 8: no node can reach the pool: one clear error", func(t *testing.T) {
		_, err := c.choose(t, nowhere.GetId())
		if !errors.Is(err, placement.ErrNoNode) {
			t.Fatalf("Choose = %v; want ErrNoNode", err)
		}
		for _, frag := range []string{`pool "nowhere" (/srv/nowhere)`, "n3 (assigned)", "path /srv/nowhere does not exist on this node",
			"n1 not assigned to the pool, and the pool is not shared", "quarry pool update nowhere --assign NODE"} {
			if !strings.Contains(err.Error(), frag) {
				t.Errorf("error %q\nlacks %q", err, frag)
			}
		}
	})
	t.Run("6: assigned node offline, another node mounts the shared pool", func(t *testing.T) {
		c.agents["n1"].Stop()
		waitState(t, c.s, c.ids["n1"], quarryv1.NodeState_NODE_STATE_UNREACHABLE, 10*time.Second)
		if kept, err := c.choose(t, shared.GetId()); err != nil || strings.Join(kept, ",") != "n2" {
			t.Errorf("Choose = %v, %v; want n2", kept, err)
		}
		_, err := c.choose(t, local.GetId())
		if !errors.Is(err, placement.ErrNoNode) || !strings.Contains(err.Error(), "n1 (assigned) unreachable since") {
			t.Errorf("local pool with its node down: %v", err)
		}
		c.agents["n1"].Restart()
	})
}

// TestPlacementLazyConnect is scenario 2: the assigned node is registered but
// not connected while its agent is up; the helper connects and uses it
// rather than failing or waiting for the next health check.
func TestPlacementLazyConnect(t *testing.T) {
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(time.Hour))
	// Silent: a restarted agent that announced itself would be READY at
	// once; this is about the link finding out by itself.
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1", Silent: true})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	id := a.NodeID
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{id}}))
	if err != nil {
		t.Fatal(err)
	}
	pool := resp.Msg.GetPool()
	if pool.GetInitializedByNodeId() != id {
		t.Fatalf("pool initialized by %q; want n1 (%s)", pool.GetInitializedByNodeId(), id)
	}

	// Lose the connection: stop the agent and have the link notice (an
	// update kicks a check of every node).
	a.Stop()
	s.Pools.UpdatePool(t.Context(), connect.NewRequest(&quarryv1.UpdatePoolRequest{Id: pool.GetId()}))
	waitState(t, s, id, quarryv1.NodeState_NODE_STATE_UNREACHABLE, 10*time.Second)
	a.Restart()

	// The next scheduled check is an hour away: only a lazy connect can
	// find the node now.
	ch, err := s.Placement.Choose(t.Context(), pool.GetId())
	if err != nil {
		t.Fatalf("Choose: %v", err)
	}
	if first := ch.First(); first.Node.Name != "n1" || first.Reason != "connected on demand and mounts the pool" {
		t.Errorf("Choose kept %s: %s", first.Node.Name, first.Reason)
	}
	if n, err := getNode(t.Context(), s, id); err != nil || n.GetState() != quarryv1.NodeState_NODE_STATE_READY {
		t.Errorf("after the lazy connect the node is %v, %v; want READY", n.GetState(), err)
	}
}

// TestPlacementAffinity: among READY assigned nodes, fewer running jobs
// ranks above the pool's assignment order. n1 is busy with two RUNNING
// downloads into its local pool; a download into the shared pool, assigned
// n1 then n2, goes to the idle n2. The per-node limit leaves n1 room, so
// only the ranking sends the job elsewhere.
func TestPlacementAffinity(t *testing.T) {
	c := newCluster(t, quarrytest.WithDownloadLimits(4, 8))
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	local := c.createPool(t, "local", "/srv/local", false, "n1")
	shared := c.createPool(t, "isos", "/srv/nfs/isos", true, "n1", "n2")
	c.waitMounts(t, local.GetId(), map[string]bool{"n1": true})
	c.waitMounts(t, shared.GetId(), map[string]bool{"n1": true, "n2": true})

	o := origintest.New(t)
	var busy []string
	for i := range 2 {
		slow := o.Add(fmt.Sprintf("/slow%d.img", i), origintest.Random(64*mib, uint64(40+i)))
		slow.RateLimit(256 << 10) // minutes: still running when the test ends
		m := download(t, c.s, local.GetId(), slow.URL(), "")
		busy = append(busy, m.GetJob().GetId())
	}
	t.Cleanup(func() {
		for _, id := range busy {
			c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: id}))
		}
	})
	for _, id := range busy {
		waitProgress(t, c.s, id, 1)
		resp, err := c.s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if j := resp.Msg.GetJob(); j.GetState() != quarryv1.JobState_JOB_STATE_RUNNING || j.GetNodeName() != "n1" {
			t.Fatalf("busy job %s is %v on %q; want RUNNING on n1", id, j.GetState(), j.GetNodeName())
		}
	}

	next := o.Add("/next.img", origintest.Random(mib, 42))
	m := download(t, c.s, shared.GetId(), next.URL(), "sha256:"+next.SHA256())
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n2" {
		t.Fatalf("next download %v on %q (%s); want SUCCEEDED on the idle n2, not the busy n1 assigned first",
			j.GetState(), j.GetNodeName(), j.GetMessage())
	}

	// The pool's view says the same, and why.
	resp, err := c.s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: shared.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, cand := range resp.Msg.GetCandidates() {
		got = append(got, fmt.Sprintf("%s kept=%v: %s", cand.GetNodeName(), cand.GetKept(), cand.GetReason()))
	}
	t.Logf("candidates:\n%s", strings.Join(got, "\n"))
	want := []string{"n2 kept=true: assigned #2, READY; 0 running jobs, ", "n1 kept=true: assigned #1, READY; 2 running jobs",
		"n3 kept=false: does not mount it: "}
	if len(got) != len(want) {
		t.Fatalf("candidates:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("candidate %d: %q; want it to start with %q", i, got[i], want[i])
		}
	}
}
