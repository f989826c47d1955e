package simscale_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
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
	if r.StaleMax <= 0 || r.ListNodesMax <= 0 || r.FullNodeList <= 0 || r.ChecksFlap <= 0 {
		t.Errorf("node figures missing: oldest check %v, slowest ListNodes page %v, every page %v, checks a second %.1f",
			r.StaleMax, r.ListNodesMax, r.FullNodeList, r.ChecksFlap)
	}
	if len(r.Goroutines) != 3 || r.RSS == 0 {
		t.Errorf("process figures missing: goroutines %v, RSS %d", r.Goroutines, r.RSS)
	}
}

// TestChecksGoOnUnderKicks: while one node is kicked (here: updated) a
// hundred times a second, the control plane keeps checking every other
// node on its interval. Rounds that gave way to every kick started next to
// none of their checks: with pools created one after another, thousands of
// nodes went unchecked for minutes.
func TestChecksGoOnUnderKicks(t *testing.T) {
	const (
		interval = 2 * time.Second
		nodes    = 300
		kickFor  = 2 * interval
	)
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval))
	f := simscale.NewFleet(0)
	defer f.Close()
	if err := f.Listen("n", nodes); err != nil {
		t.Fatal(err)
	}
	if err := f.Enroll(t.Context(), s.URL, s.JoinToken(t, false, time.Hour), 8); err != nil {
		t.Fatal(err)
	}
	kicked, others := f.Nodes()[0], f.Nodes()[1:]
	quarrytest.Eventually(t, 30*time.Second, func() error {
		for _, nd := range others {
			if nd.FactsAnswered() == 0 {
				return fmt.Errorf("node %s not checked yet", nd.Name)
			}
		}
		return nil
	})
	answered := func() (n int64) {
		for _, nd := range others {
			n += nd.FactsAnswered()
		}
		return n
	}
	before, start := answered(), time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Since(start) >= kickFor {
			break
		}
		if _, err := s.Nodes.UpdateNode(t.Context(), connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: kicked.ID})); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	got, want := answered()-before, int64(float64(len(others))*took.Seconds()/interval.Seconds())
	t.Logf("%d checks of the other nodes in %v, %d due", got, took.Round(time.Millisecond), want)
	if got < want/2 {
		t.Errorf("while node %s was kicked every 10 ms, the other %d nodes were checked %d times in %v; want about %d (one per node each %v)",
			kicked.Name, len(others), got, took.Round(time.Millisecond), want, interval)
	}
}
