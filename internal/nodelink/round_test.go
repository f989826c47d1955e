package nodelink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/simscale"
)

// TestHungNodeHoldsNoOneBack: while one node hangs (its checks run into the
// 3 s check timeout), the others are still checked on every interval: the
// health loop does not wait for a round's slowest check before the next.
func TestHungNodeHoldsNoOneBack(t *testing.T) {
	const interval = 250 * time.Millisecond
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval))
	nodes := enrolledFleet(t, s, 3)
	quarrytest.Eventually(t, 10*time.Second, func() error {
		for _, nd := range nodes {
			if nd.FactsAnswered() == 0 {
				return fmt.Errorf("%s not checked yet", nd.Name)
			}
		}
		return nil
	})
	nodes[0].Hang()
	before := nodes[1].FactsAnswered()
	// Within 2.5 s, less than one check timeout of the hung node, the
	// others get about 10 checks; a loop waiting for the hung node's check
	// gave them 1 or 2.
	quarrytest.Eventually(t, 2500*time.Millisecond, func() error {
		if got := nodes[1].FactsAnswered() - before; got < 5 {
			return fmt.Errorf("%s checked %d times since %s hung", nodes[1].Name, got, nodes[0].Name)
		}
		return nil
	})
}

func TestCheckSlotsGrowWithTheCluster(t *testing.T) {
	for _, tt := range []struct{ nodes, least, want int }{
		{0, 8, 8}, {30, 8, 8}, {1000, 8, 200}, {5000, 8, 1000}, {50000, 8, 1024}, {50000, 1200, 1200},
	} {
		if got := nodelink.CheckSlots(tt.nodes, tt.least); got != tt.want {
			t.Errorf("checkSlots(%d, %d) = %d, want %d", tt.nodes, tt.least, got, tt.want)
		}
	}
}

// enrolledFleet is n simulated nodes enrolled with s, closed when the test
// ends.
func enrolledFleet(t *testing.T, s *quarrytest.Server, n int) []*simscale.Node {
	t.Helper()
	fleet := simscale.NewFleet(0)
	t.Cleanup(fleet.Close)
	if err := fleet.Listen("sim", n); err != nil {
		t.Fatal(err)
	}
	tok, err := s.Tokens.CreateToken(t.Context(), connect.NewRequest(&quarryv1.CreateTokenRequest{
		Name: "sim", Kind: quarryv1.TokenKind_TOKEN_KIND_JOIN}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := fleet.Enroll(ctx, s.URL, tok.Msg.GetSecret(), n); err != nil {
		t.Fatal(err)
	}
	return fleet.Nodes()
}
