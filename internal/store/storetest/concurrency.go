package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// testConcurrency does what a busy control plane does: the node link records
// checks for every node while API calls create pools and read. No call may
// fail just because another one ran at the same time.
func testConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	const (
		nodes  = 6
		rounds = 15
		pools  = 12
	)
	var nodeIDs []string
	for i := range nodes {
		nodeIDs = append(nodeIDs, fmt.Sprintf("n%d", i+1))
	}
	mustCreateNodes(t, s, nodeIDs...)
	mustCreatePool(t, s, pool("p0", nodeIDs[0]))

	var wg sync.WaitGroup
	errs := make(chan error, nodes*rounds+pools*2)
	for _, id := range nodeIDs {
		wg.Go(func() {
			for r := range rounds {
				st := store.NodeStatus{State: store.NodeReady, LastCheckedAt: at(time.Duration(r) * time.Second)}
				ms := []store.PoolMount{{NodeID: id, PoolID: "p0", Mounted: true, FreeBytes: uint64(r), CheckedAt: st.LastCheckedAt}}
				if err := s.RecordNodeCheck(ctx, id, st, ms); err != nil {
					errs <- fmt.Errorf("RecordNodeCheck(%s) round %d: %w", id, r, err)
				}
			}
		})
	}
	for i := range pools {
		wg.Go(func() {
			p := pool(fmt.Sprintf("p%d", i+1), nodeIDs[i%nodes], nodeIDs[(i+1)%nodes])
			if err := s.CreatePool(ctx, p); err != nil {
				errs <- fmt.Errorf("CreatePool(%s): %w", p.ID, err)
			}
			if _, err := s.ListPools(ctx); err != nil {
				errs <- fmt.Errorf("ListPools: %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	ps, err := s.ListPools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != pools+1 {
		t.Errorf("%d pools, want %d", len(ps), pools+1)
	}
	ms := mustMounts(t, s)
	if len(ms) != nodes {
		t.Fatalf("%d mounts, want %d", len(ms), nodes)
	}
	for _, m := range ms {
		if m.FreeBytes != rounds-1 {
			t.Errorf("mount of %s: FreeBytes = %d, want the last round's %d", m.NodeID, m.FreeBytes, rounds-1)
		}
	}
	for _, id := range nodeIDs {
		if got := mustGetNode(t, s, id).LastCheckedAt; !got.Equal(at((rounds - 1) * time.Second)) {
			t.Errorf("node %s LastCheckedAt = %v, want the last round's", id, got)
		}
	}
}

// testContext checks that a cancelled context stops every method.
func testContext(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustCreateNodes(t, s, "n1")
	mustCreatePool(t, s, pool("p1", "n1"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	ops := []struct {
		name string
		op   func() error
	}{
		{"CreateNode", func() error { return s.CreateNode(ctx, node("n2")) }},
		{"GetNode", func() error { _, err := s.GetNode(ctx, "n1"); return err }},
		{"GetNodeByName", func() error { _, err := s.GetNodeByName(ctx, "node-n1"); return err }},
		{"ListNodes", func() error { _, err := s.ListNodes(ctx); return err }},
		{"UpdateNode", func() error { return s.UpdateNode(ctx, "n1", "node-n1", "10.1.1.1:9090") }},
		{"DeleteNode", func() error { return s.DeleteNode(ctx, "n1") }},
		{"RecordNodeCheck", func() error { return s.RecordNodeCheck(ctx, "n1", store.NodeStatus{}, nil) }},
		{"CreatePool", func() error { return s.CreatePool(ctx, pool("p2")) }},
		{"GetPool", func() error { _, err := s.GetPool(ctx, "p1"); return err }},
		{"GetPoolByName", func() error { _, err := s.GetPoolByName(ctx, "pool-p1"); return err }},
		{"ListPools", func() error { _, err := s.ListPools(ctx); return err }},
		{"UpdatePool", func() error { return s.UpdatePool(ctx, pool("p1")) }},
		{"MarkPoolInitialized", func() error { return s.MarkPoolInitialized(ctx, "p1", "n1") }},
		{"DeletePool", func() error { return s.DeletePool(ctx, "p1") }},
		{"ListPoolMounts", func() error { _, err := s.ListPoolMounts(ctx); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	}
	for _, tt := range ops {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want context.Canceled", tt.name, err)
			}
		})
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after cancelled calls: %v", err)
	}
	wantEqual(t, "node after cancelled calls", mustGetNode(t, s, "n1"), node("n1"))
}
