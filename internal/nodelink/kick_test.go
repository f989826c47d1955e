package nodelink_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
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
	kick := func(i int) {
		t.Helper()
		before := checked(n1.NodeID)
		if _, err := s.Nodes.UpdateNode(t.Context(), connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: n1.NodeID})); err != nil {
			t.Fatal(err)
		}
		quarrytest.Eventually(t, 10*time.Second, func() error {
			if !checked(n1.NodeID).After(before) {
				return fmt.Errorf("n1 not checked after kick %d", i)
			}
			return nil
		})
	}
	// n2's start checks it more than once, at times of its own (its
	// enrollment's kick, its agent's announcement), and a round's checks
	// end in any order. Kick n1, waiting for its check each time, until two
	// kicks in a row left n2 as it was: n2's start is over then, since a
	// check started in a round ends well before the next round, half a
	// second on. A loop that checked every node at every kick never gets
	// there.
	before2, still := checked(n2.NodeID), 0
	for i := 1; still < 2; i++ {
		if i > 8 {
			t.Fatalf("n2 was checked again within %d kicks of n1 only", i-1)
		}
		kick(i)
		if got := checked(n2.NodeID); got.Equal(before2) {
			still++
		} else {
			before2, still = got, 0
		}
	}
	for i := range 3 {
		kick(100 + i)
	}
	if got := checked(n2.NodeID); !got.Equal(before2) {
		t.Errorf("n2 was checked at %v after kicks of n1 only (last check before: %v)", got, before2)
	}
}

// TestKickDuringCheckIsNotLost: a node kicked while the health loop checks
// it is checked again once that check ends, not an interval later: the
// check in flight may have asked before the change the kick is about (a
// pool assigned to the node).
func TestKickDuringCheckIsNotLost(t *testing.T) {
	// Neither the server's link nor the test's checks on schedule during
	// the test: every check seen is a kick's.
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(time.Minute))
	nd := enrolledFleet(t, s, 1)[0]
	quarrytest.Eventually(t, 10*time.Second, func() error {
		n, err := s.Store.GetNode(t.Context(), nd.ID)
		if err != nil {
			return err
		}
		if n.State != store.NodeReady {
			return fmt.Errorf("node %s is %s", nd.Name, n.State)
		}
		return nil
	})

	l := nodelink.New(nodelink.Config{Store: s.Store, Issuer: testIssuer(t, s.CA), Logger: quarrytest.Logger(t), Interval: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	var loop sync.WaitGroup
	defer loop.Wait()
	defer cancel()
	loop.Go(func() { l.Run(ctx) })
	release := nd.Hold()
	defer release()
	// The loop's first round checks the node: it waits for its answer.
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if w := nd.Waiting(); w != 1 {
			return fmt.Errorf("%d checks wait for their answer, want 1", w)
		}
		return nil
	})
	l.Kick(nd.ID)
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if n := nodelink.KicksPending(l); n != 0 {
			return fmt.Errorf("the loop has not taken the kick yet (%d pending)", n)
		}
		return nil
	})
	before := nd.FactsAnswered()
	release()
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if nd.FactsAnswered() == before {
			return errors.New("the node was not checked again after a kick during its check")
		}
		return nil
	})
}
