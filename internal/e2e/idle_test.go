package e2e

import (
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestIdleStoreStatements: an idle control plane (one node, one pool,
// 1,000 finished jobs, default intervals) runs only its health checks and
// the file-event watch's resync against the store: no controller re-reads
// jobs on a timer. It prints the statements per minute.
func TestIdleStoreStatements(t *testing.T) {
	if testing.Short() {
		t.Skip("watches an idle control plane for 20 s")
	}
	const interval = 5 * time.Second // the default --health-interval
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval))
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 30*time.Second)
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	poolID := resp.Msg.GetPool().GetId()
	ctx := t.Context()
	now := time.Now()
	for i := range 1000 {
		id := fmt.Sprintf("%04d", i)
		im := store.Image{ID: "img-" + id, PoolID: poolID, Name: id + ".img", RelPath: "images/" + id + ".img",
			Kind: store.KindCloudImage, Format: "raw", State: store.ImagePending, CreatedAt: now, UpdatedAt: now}
		j := store.Job{ID: "job-" + id, Kind: "download", State: store.JobQueued, ImageID: im.ID, PoolID: poolID,
			Source: "https://example.com/" + id, URL: "https://example.com/" + id, CreatedAt: now, UpdatedAt: now}
		if _, err := s.Store.CreateDownload(ctx, im, j); err != nil {
			t.Fatal(err)
		}
		j.State, j.FinishedAt, j.Message = store.JobFailed, now, "seeded"
		im.State = store.ImageError
		if err := s.Store.FinishJob(ctx, j, im); err != nil {
			t.Fatal(err)
		}
	}
	// Past the startup scan (5 s after start), which is not idle work.
	quarrytest.Eventually(t, 30*time.Second, func() error {
		st, err := s.Images.GetScanStatus(ctx, connect.NewRequest(&quarryv1.GetScanStatusRequest{}))
		if err != nil {
			return err
		}
		if len(st.Msg.GetLast()) == 0 || len(st.Msg.GetRunning()) > 0 {
			return fmt.Errorf("the startup scan has not finished")
		}
		return nil
	})
	const window = 20 * time.Second
	before := s.Statements()
	time.Sleep(window) // the measurement: whatever runs in these 20 s
	n := s.Statements() - before
	perMinute := float64(n) * float64(time.Minute) / float64(window)
	checks := float64(time.Minute) / float64(interval)
	t.Logf("idle control plane, 1 node, 1 pool, 1,000 finished jobs: %d statements in %v = %.0f per minute (%.1f per health check)",
		n, window, perMinute, perMinute/checks)
	// A controller that re-read the jobs every second would add 60.
	if perMinute > 12*checks {
		t.Errorf("%.0f statements per minute while idle; want at most 12 per health check (%.0f)", perMinute, 12*checks)
	}
}
