package cli

import (
	"bytes"
	"testing"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func TestPrintPlacement(t *testing.T) {
	var b bytes.Buffer
	err := printPlacement(&b, []*quarryv1.PlacementCandidate{
		{NodeName: "n2", Kept: true, Reason: "assigned #2, READY; 0 running jobs, 1.0 GiB free"},
		{NodeName: "n1", Kept: true, Reason: "assigned #1, READY; 2 running jobs, 1.0 GiB free"},
		{NodeId: "node-3", Reason: "not assigned to the pool, and the pool is not shared"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `
Placement (operations try the kept nodes in this order):
RANK     NODE    REASON
1        n2      assigned #2, READY; 0 running jobs, 1.0 GiB free
2        n1      assigned #1, READY; 2 running jobs, 1.0 GiB free
dropped  node-3  not assigned to the pool, and the pool is not shared
`
	if got := b.String(); got != want {
		t.Errorf("printPlacement wrote\n%s\nwant\n%s", got, want)
	}

	b.Reset()
	if err := printPlacement(&b, nil); err != nil || b.Len() != 0 {
		t.Errorf("no candidates: %q, %v; want nothing (an older server)", b.String(), err)
	}
}

func TestPrintMountResult(t *testing.T) {
	mount := func(id, name string, mounted bool, reason string) *quarryv1.PoolMount {
		return &quarryv1.PoolMount{NodeId: id, NodeName: name, Mounted: mounted, Reason: reason}
	}
	for _, tc := range []struct {
		name string
		pool *quarryv1.StoragePool
		warn string
	}{
		{"an assigned node mounts it", &quarryv1.StoragePool{Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{"a", "b"},
			Nodes: []*quarryv1.PoolMount{mount("a", "n1", false, "path /srv/isos does not exist on this node"), mount("b", "n2", true, "")}}, ""},
		{"no assigned node mounts it", &quarryv1.StoragePool{Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{"a"},
			Nodes: []*quarryv1.PoolMount{mount("a", "n1", false, "path /srv/isos does not exist on this node"), mount("c", "n3", true, "")}},
			"warning: no assigned node mounts pool isos at /srv/isos (n1: path /srv/isos does not exist on this node); " +
				"create the directory or mount the filesystem there on a node, and the next health check picks it up (quarry pool show isos)\n"},
		{"nothing assigned, nothing mounts it", &quarryv1.StoragePool{Name: "isos", Path: "/srv/isos"},
			"warning: no node mounts pool isos at /srv/isos; " +
				"create the directory or mount the filesystem there on a node, and the next health check picks it up (quarry pool show isos)\n"},
		{"nothing assigned, a node mounts it", &quarryv1.StoragePool{Name: "isos", Path: "/srv/isos",
			Nodes: []*quarryv1.PoolMount{mount("c", "n3", true, "")}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := printMountResult(&out, &errOut, tc.pool); err != nil {
				t.Fatal(err)
			}
			if errOut.String() != tc.warn {
				t.Errorf("warning %q, want %q", errOut.String(), tc.warn)
			}
			if !bytes.Contains(out.Bytes(), []byte("Nodes")) {
				t.Errorf("no per-node result:\n%s", out.String())
			}
		})
	}
}
