package e2e

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

// mountOf returns the pool's view of node, or nil.
func mountOf(p *quarryv1.StoragePool, node string) *quarryv1.PoolMount {
	for _, m := range p.GetNodes() {
		if m.GetNodeName() == node {
			return m
		}
	}
	return nil
}

// TestPoolChangeAnswersMounts: CreatePool and UpdatePool answer with what
// each node reports about the pool now. The node that wrote the marker
// mounts it, a node without the directory says so, each checked during the
// call; the CLI prints that and warns when no assigned node mounts the pool.
func TestPoolChangeAnswersMounts(t *testing.T) {
	c := newCluster(t)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/own"))
	before := time.Now()
	p := c.createPool(t, "own", "/srv/own", false, "n1", "n2")
	if p.GetInitializedByNodeId() != c.ids["n1"] {
		t.Errorf("initialized by %q, want n1", p.GetInitializedByNodeId())
	}
	wantMount := func(p *quarryv1.StoragePool, node string, mounted bool, reason string) {
		t.Helper()
		m := mountOf(p, node)
		switch {
		case m == nil:
			t.Errorf("pool %s: no view of node %s in the answer: %v", p.GetName(), node, p.GetNodes())
		case m.GetMounted() != mounted || !strings.Contains(m.GetReason(), reason):
			t.Errorf("pool %s, node %s: mounted %v (%q) in the answer, want %v (%q)", p.GetName(), node, m.GetMounted(), m.GetReason(), mounted, reason)
		case m.GetCheckedAt().AsTime().Before(before):
			t.Errorf("pool %s, node %s: checked at %v, before the call", p.GetName(), node, m.GetCheckedAt().AsTime())
		}
	}
	wantMount(p, "n1", true, "")
	wantMount(p, "n2", false, "does not exist")

	before = time.Now()
	resp, err := c.s.Pools.UpdatePool(t.Context(), connect.NewRequest(&quarryv1.UpdatePoolRequest{Id: p.GetId(),
		AssignedNodeIds: &quarryv1.NodeIDs{Ids: []string{c.ids["n1"], c.ids["n2"], c.ids["n3"]}}}))
	if err != nil {
		t.Fatal(err)
	}
	wantMount(resp.Msg.GetPool(), "n1", true, "")
	wantMount(resp.Msg.GetPool(), "n3", false, "does not exist")

	url := c.s.URL
	useToken(url, c.s.AdminToken)
	r := quarry(t, url, "pool", "create", "--name", "nowhere", "--path", "/srv/nowhere", "--assign", "n2,n3")
	if r.code != 0 {
		t.Fatalf("pool create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if f := tableRow(r.stdout, "n2"); len(f) < 4 || f[3] != "no" {
		t.Errorf("pool create shows n2 as %v, want not mounted:\n%s", f, r.stdout)
	}
	if !strings.Contains(r.stderr, "warning: no assigned node mounts pool nowhere at /srv/nowhere") ||
		!strings.Contains(r.stderr, "n2: path /srv/nowhere does not exist") {
		t.Errorf("pool create warned %q; want that no assigned node mounts it, and why", r.stderr)
	}
	mkdir(t, c.agents["n3"].Opts.LocalPath("/srv/later"))
	r = quarry(t, url, "pool", "create", "--name", "later", "--path", "/srv/later", "--assign", "n3")
	if r.code != 0 || r.stderr != "" {
		t.Errorf("pool create of a mounted pool: exit %d, stderr %q; want 0 and no warning", r.code, r.stderr)
	}
	if f := tableRow(r.stdout, "n3"); len(f) < 4 || f[3] != "yes" {
		t.Errorf("pool create shows n3 as %v, want mounted:\n%s", f, r.stdout)
	}
}
