package nodelink_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestKickChecksOnlyTheNodeNamed: a change to one node (here an update,
// as an enrollment) has that node checked now, not every node: with
// thousands of nodes, a full round per enrollment cost nodes² checks.
func TestKickChecksOnlyTheNodeNamed(t *testing.T) {
	// No scheduled check during the test: every check seen is a kick's.
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(time.Minute))
	n1 := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	n2 := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n2"})
	checked := func(id string) time.Time {
		t.Helper()
		n, err := s.Store.GetNode(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return n.LastCheckedAt
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if checked(n1.NodeID).IsZero() || checked(n2.NodeID).IsZero() {
			return errors.New("not both nodes checked yet")
		}
		return nil
	})
	// Three kicks of n1, each waited for: the loop checks in rounds, so once
	// a kick's check is stored, the round before has ended and any check of
	// n2 it made is stored too. The first kick's round lets the checks of
	// n2's start (its enrollment, its agent's announcement) end.
	var before2 time.Time
	for i := range 3 {
		if i == 1 {
			before2 = checked(n2.NodeID)
		}
		before1 := checked(n1.NodeID)
		if _, err := s.Nodes.UpdateNode(t.Context(), connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: n1.NodeID})); err != nil {
			t.Fatal(err)
		}
		quarrytest.Eventually(t, 10*time.Second, func() error {
			if !checked(n1.NodeID).After(before1) {
				return fmt.Errorf("n1 not checked after kick %d", i+1)
			}
			return nil
		})
	}
	if got := checked(n2.NodeID); !got.Equal(before2) {
		t.Errorf("n2 was checked at %v after kicks of n1 only (last check before: %v)", got, before2)
	}
}
