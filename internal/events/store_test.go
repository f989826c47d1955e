package events

import (
	"context"
	"slices"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
)

// checkRecorder is the store under a publishing store: it takes every
// check.
type checkRecorder struct{ store.Store }

func (checkRecorder) RecordNodeCheck(context.Context, string, store.NodeStatus, []store.PoolMount) error {
	return nil
}

// TestRecordNodeCheckPublishesChanges: a check publishes a node event when
// what a person sees of the node changed, and a pool event when whether it
// mounts each pool (or why not) changed; free space and times do not count.
func TestRecordNodeCheckPublishesChanges(t *testing.T) {
	hub := NewHub()
	var got []Event
	hub.Forward(func(evs []Event) { got = append(got, evs...) })
	s := Store(checkRecorder{}, hub)

	ready := store.NodeStatus{State: store.NodeReady, Hostname: "kvm1", AgentVersion: "v1"}
	mount := func(pool string, mounted bool, reason string, free uint64) store.PoolMount {
		return store.PoolMount{NodeID: "n1", PoolID: pool, Mounted: mounted, Reason: reason, FreeBytes: free}
	}
	node, pool := Event{Resource: Node, ID: "n1"}, Event{Resource: Pool}
	for _, step := range []struct {
		name   string
		status store.NodeStatus
		mounts []store.PoolMount
		want   []Event
	}{
		{"first check", ready, []store.PoolMount{mount("p1", true, "", 10)}, []Event{node, pool}},
		{"same, less free space", ready, []store.PoolMount{mount("p1", true, "", 5)}, nil},
		{"a pool no longer mounted", ready, []store.PoolMount{mount("p1", false, "gone", 5)}, []Event{pool}},
		{"another reason", ready, []store.PoolMount{mount("p1", false, "still gone", 5)}, []Event{pool}},
		{"another pool", ready, []store.PoolMount{mount("p1", false, "still gone", 5), mount("p2", true, "", 1)}, []Event{pool}},
		{"failed: mounts kept", store.NodeStatus{State: store.NodeUnreachable, StateReason: "refused", Hostname: "kvm1", AgentVersion: "v1"}, nil, []Event{node}},
		{"back, as before", ready, []store.PoolMount{mount("p1", false, "still gone", 5), mount("p2", true, "", 1)}, []Event{node}},
		{"new agent version", store.NodeStatus{State: store.NodeReady, Hostname: "kvm1", AgentVersion: "v2"}, []store.PoolMount{mount("p1", false, "still gone", 5), mount("p2", true, "", 1)}, []Event{node}},
		{"no pools at all", store.NodeStatus{State: store.NodeReady, Hostname: "kvm1", AgentVersion: "v2"}, []store.PoolMount{}, []Event{pool}},
	} {
		got = nil
		if err := s.RecordNodeCheck(context.Background(), "n1", step.status, step.mounts); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("%s: published %v, want %v", step.name, got, step.want)
		}
	}
}
