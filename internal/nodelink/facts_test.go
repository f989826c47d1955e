package nodelink_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestChecksAskOnlyUsablePools: a health check asks a node about the pools
// it may work on (shared ones, ones with no assigned node, and the local
// pools assigned to it), not about every pool of the cluster: a local pool
// of another node is neither asked about nor recorded as a mount, so what a
// round costs grows with nodes, not nodes × pools.
func TestChecksAskOnlyUsablePools(t *testing.T) {
	s := quarrytest.StartServer(t)
	n1 := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	n2 := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n2"})
	create := func(name string, shared bool, assigned ...string) string {
		resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
			Name: name, Path: "/srv/" + name, Shared: shared, AssignedNodeIds: assigned}))
		if err != nil {
			t.Fatalf("creating pool %s: %v", name, err)
		}
		return resp.Msg.GetPool().GetId()
	}
	local1 := create("local1", false, n1.NodeID)
	shared := create("shared", true, n1.NodeID)
	anyNode := create("anynode", false)

	want := map[string][]string{
		n1.NodeID: {anyNode, local1, shared},
		n2.NodeID: {anyNode, shared},
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		mounts, err := s.Store.ListPoolMounts(t.Context())
		if err != nil {
			return err
		}
		got := map[string][]string{}
		for _, m := range mounts {
			got[m.NodeID] = append(got[m.NodeID], m.PoolID)
		}
		for node, pools := range want {
			slices.Sort(got[node])
			w := slices.Clone(pools)
			slices.Sort(w)
			if !slices.Equal(got[node], w) {
				return fmt.Errorf("node %s reported on pools %s, want %s", node, strings.Join(got[node], ","), strings.Join(w, ","))
			}
		}
		return nil
	})
}
