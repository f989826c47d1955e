package simscale_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/simscale"
)

// TestSmallCluster runs the whole benchmark at a small scale against an
// in-process control plane: 20 simulated agents enroll with a join token
// and become READY, their pools are scanned through them, two of them flap
// and are seen UNREACHABLE and READY again, and no node is dialed over more
// than one connection at a time.
func TestSmallCluster(t *testing.T) {
	const interval = 500 * time.Millisecond
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval), quarrytest.WithMaxBackoff(2*interval))
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := simscale.Run(ctx, simscale.Target{URL: s.URL, AdminToken: s.AdminToken, PID: os.Getpid()}, simscale.Config{
		Nodes: 20, Pools: 8, SharedPools: 2, ISOsPerPool: 10,
		HealthInterval: interval,
		Clients:        4, LoadFor: time.Second,
		FlapFor: 3 * time.Second, FlapRate: 2, // 2 of 20 nodes in 3 s
		EnrollWorkers: 4,
		Log:           &log,
	})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	if r.Images != 80 || r.FullListImages != 80 {
		t.Errorf("%d images listed, want 8 pools × 10", r.Images)
	}
	if r.ListErrors != 0 || r.FlapLost != 0 {
		t.Errorf("%d list requests failed, %d flaps never shown", r.ListErrors, r.FlapLost)
	}
	if r.Flaps != 2 {
		t.Errorf("%d flaps, want 2", r.Flaps)
	}
	if r.ConnsMaxPerNode > 1 {
		t.Errorf("a node was dialed over %d connections at once, want at most 1", r.ConnsMaxPerNode)
	}
	if r.ListRequests == 0 || r.List.P99 == 0 || r.Paced.P99 == 0 {
		t.Errorf("no list latency measured: %+v", r)
	}
	// The control plane's histogram saw every list request, and nothing else.
	if got := r.List.Handler.Calls + r.Paced.Handler.Calls; got != r.ListRequests || r.List.Handler.P99Within <= 0 || r.Paced.Handler.P99Within <= 0 {
		t.Errorf("the handlers' histogram counted %d list calls (p99 within %v and %v), want the %d requests made",
			got, r.List.Handler.P99Within, r.Paced.Handler.P99Within, r.ListRequests)
	}
	// Back to back, the clients keep the cores busy.
	if c := r.List.CPU; c.CPUs < 1 || c.Machine <= 0 || c.Server <= 0 || c.Simulator <= 0 {
		t.Errorf("cores busy while listing back to back: %+v; want every figure above zero", c)
	}
	if len(r.Goroutines) != 3 || r.RSS == 0 {
		t.Errorf("process figures missing: goroutines %v, RSS %d", r.Goroutines, r.RSS)
	}
}
