package nodelink_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestNeverReinitialize: once a pool's marker was written, the link never
// writes another, even when the marker vanishes (a shared filesystem that is
// not mounted): a new marker would make whatever directory is there look
// like the pool.
func TestNeverReinitialize(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	dir := a.Opts.LocalPath("/srv/isos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nodeID := a.NodeID
	created, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{nodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	pool := created.Msg.GetPool()
	if pool.GetInitializedByNodeId() != nodeID {
		t.Fatalf("initialized by %q, want %s", pool.GetInitializedByNodeId(), nodeID)
	}
	marker := filepath.Join(dir, ".quarry", "pool.json")
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}

	// Let several health rounds pass, each of which sees the missing marker.
	var checks []time.Time
	quarrytest.Eventually(t, 10*time.Second, func() error {
		resp, err := s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: pool.GetId()}))
		if err != nil {
			return err
		}
		m := resp.Msg.GetPool().GetNodes()[0]
		if m.GetMounted() || !strings.Contains(m.GetReason(), "holds no pool marker") {
			return fmt.Errorf("n1: mounted=%v %q", m.GetMounted(), m.GetReason())
		}
		if at := m.GetCheckedAt().AsTime(); len(checks) == 0 || at.After(checks[len(checks)-1]) {
			checks = append(checks, at)
		}
		if len(checks) < 4 {
			return fmt.Errorf("%d checks seen", len(checks))
		}
		return nil
	})
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the marker was written again: %v", err)
	}
	resp, err := s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: pool.GetId()}))
	if err != nil || resp.Msg.GetPool().GetInitializedByNodeId() != nodeID {
		t.Fatalf("initialized by changed: %v, %v", resp.Msg.GetPool().GetInitializedByNodeId(), err)
	}
}
