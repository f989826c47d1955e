package api

import (
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// TestMountViewCheckedAt: a mount was last checked when its row was
// written or, if later, when a check last found the node's pools as
// recorded (which leaves the rows alone), whatever the node's state now.
func TestMountViewCheckedAt(t *testing.T) {
	written := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	p := store.Pool{ID: "p1", Name: "isos"}
	m := store.PoolMount{NodeID: "n1", PoolID: "p1", Mounted: true, CheckedAt: written}
	for _, tt := range []struct {
		name  string
		state store.NodeState
		seen  time.Time
		want  time.Time
	}{
		{"found unchanged since", store.NodeReady, written.Add(time.Hour), written.Add(time.Hour)},
		{"unreachable since", store.NodeUnreachable, written.Add(time.Hour), written.Add(time.Hour)},
		{"written by the last check", store.NodeReady, written, written},
		{"written after an older sighting", store.NodeReady, written.Add(-time.Hour), written},
	} {
		n := store.Node{ID: "n1", Name: "kvm1", State: tt.state, LastCheckedAt: written.Add(2 * time.Hour), MountsSeenAt: tt.seen}
		if got := (&snapshot{}).mountView(n, p, &m).GetCheckedAt().AsTime(); !got.Equal(tt.want) {
			t.Errorf("%s: checked at %v, want %v", tt.name, got, tt.want)
		}
	}
}
