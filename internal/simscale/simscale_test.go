package simscale_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/simscale"
)

// clientsEnv makes this test binary the list load's clients' process
// (simscale.StartListClients) instead of running the tests.
const clientsEnv = "QUARRY_SIMSCALE_TEST_CLIENTS"

func TestMain(m *testing.M) {
	if os.Getenv(clientsEnv) == "1" {
		if err := simscale.ServeListClients(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmallCluster runs the whole benchmark at a small scale against an
// in-process control plane: 20 simulated agents enroll with a join token
// and become READY, their pools are scanned through them, two of them flap
// and are seen UNREACHABLE and READY again, and no node is dialed over more
// than one connection at a time. The list clients run in the test's
// process, then in a process of their own with the agents reniced.
func TestSmallCluster(t *testing.T) {
	t.Run("clients in the simulator's process", func(t *testing.T) { smallCluster(t, false) })
	t.Run("clients in a process of their own", func(t *testing.T) { smallCluster(t, true) })
}

func smallCluster(t *testing.T, clientsProcess bool) {
	const interval = 500 * time.Millisecond
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval), quarrytest.WithMaxBackoff(2*interval))
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := simscale.Config{
		Nodes: 20, Pools: 8, SharedPools: 2, ISOsPerPool: 10,
		HealthInterval: interval,
		Clients:        4, LoadFor: time.Second,
		FlapFor: 3 * time.Second, FlapRate: 2, // 2 of 20 nodes in 3 s
		EnrollWorkers: 4,
		Log:           &log,
	}
	if clientsProcess {
		t.Setenv(clientsEnv, "1")
		run, stop, err := simscale.StartListClients(ctx, os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := stop(); err != nil {
				t.Errorf("the clients' process: %v", err)
			}
		}()
		cfg.ListClients = run
		if os.Geteuid() == 0 { // only root can set it back after
			cfg.AgentsNice = 5
		}
	}
	r, err := simscale.Run(ctx, simscale.Target{URL: s.URL, AdminToken: s.AdminToken, PID: os.Getpid()}, cfg)
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
	c := r.List.CPU
	clients := c.Simulator // the clients' CPU time is the simulator's
	if clientsProcess {
		clients = c.Clients
	}
	if c.CPUs < 1 || c.Machine <= 0 || c.Server <= 0 || clients <= 0 {
		t.Errorf("cores busy while listing back to back: %+v; want the clients', the control plane's and the machine's above zero", c)
	}
	// The freshness samples paged through the nodes while they flapped.
	if r.StaleMax <= 0 || r.ListNodesMax <= 0 || r.FullNodeList <= 0 {
		t.Errorf("node figures missing: oldest check %v, slowest ListNodes page %v, every page %v", r.StaleMax, r.ListNodesMax, r.FullNodeList)
	}
	if len(r.Goroutines) != 3 || r.RSS == 0 {
		t.Errorf("process figures missing: goroutines %v, RSS %d", r.Goroutines, r.RSS)
	}
}
