package simscale

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// Config is the simulated cluster and the load put on it.
type Config struct {
	Nodes int
	// Pools in all; SharedPools of them are shared (each mounted by an
	// equal block of nodes, all of them assigned), the others are local to
	// one node each.
	Pools, SharedPools int
	ISOsPerPool        int
	// HealthInterval is the control plane's --health-interval.
	HealthInterval time.Duration
	// Clients list images concurrently for LoadFor.
	Clients int
	LoadFor time.Duration
	// Pace is how often each client asks for a page in the second half
	// of the list load (the first asks back to back).
	Pace time.Duration
	// FlapFor is how long nodes flap; FlapRate is the share of all nodes
	// that goes UNREACHABLE and back per minute (0.01). Each stays down
	// for DownFor.
	FlapFor  time.Duration
	FlapRate float64
	DownFor  time.Duration
	// EnrollWorkers enroll nodes in parallel.
	EnrollWorkers int
	// ListClients runs the list load's clients (StartListClients: in a
	// process of their own); nil: in this process.
	ListClients func(context.Context, ListJob) (ListSamples, error)
	// AgentsNice, when not 0, is the nice value this process (the
	// simulated agents, which stand for other machines) runs at while the
	// nodes flap and the clients list, so that the control plane and the
	// clients' process come first for a core; it is set back to 0 after
	// (which needs root).
	AgentsNice int
	// Log receives progress lines.
	Log io.Writer
}

// Defaults fills zero fields with the figures of the issue.
func (c *Config) Defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Nodes, 5000)
	def(&c.Pools, 1000)
	def(&c.SharedPools, 20)
	def(&c.ISOsPerPool, 100)
	def(&c.Clients, 50)
	def(&c.EnrollWorkers, 16)
	if c.HealthInterval == 0 {
		c.HealthInterval = 5 * time.Second
	}
	if c.LoadFor == 0 {
		c.LoadFor = 15 * time.Second
	}
	if c.Pace == 0 {
		c.Pace = time.Second
	}
	if c.FlapFor == 0 {
		c.FlapFor = time.Minute
	}
	if c.FlapRate == 0 {
		c.FlapRate = 0.01
	}
	if c.DownFor == 0 {
		c.DownFor = c.HealthInterval * 5 / 2
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Target is the control plane under test.
type Target struct {
	URL        string
	AdminToken string
	// PID is the control plane's process, for its resident set size.
	PID int
	// DBSize returns the database's size in bytes.
	DBSize func(ctx context.Context) (int64, error)
}

// Result holds the figures of one run.
type Result struct {
	Nodes, Pools, Images     int
	Enroll, PoolsCreate      time.Duration
	AllReady                 time.Duration // from the last enrollment
	Seed                     time.Duration // first full scan
	SeededImages             int           // images in the library after it
	Rescan                   time.Duration // second full scan: nothing changed
	List                     Latency       // clients back to back
	Paced                    Latency       // clients each a page every Pace
	ListRequests, ListErrors int
	ListRate, PacedRate      float64 // requests per second
	FullList                 time.Duration
	FullListImages           int
	Flaps                    int
	DownSeenP50, DownSeenMax time.Duration
	UpSeenP50, UpSeenMax     time.Duration
	FlapMissed               int           // flaps whose state change the API did not show in time
	FlapLost                 int           // of those, flaps not shown before the deadline at all
	StaleMax                 time.Duration // oldest last check of a READY node, over all samples
	ListNodesMax             time.Duration // the slowest ListNodes page (100 nodes) while flapping
	FullNodeList             time.Duration // every page of ListNodes, 1,000 a page, at the end
	RSS, RSSPeak             int64         // at the end; the most while flapping and serving the list load
	// The Go heap at the end: allocated, the collector's goal, and the
	// goroutine stacks (go_memstats_*).
	HeapAlloc, HeapGoal, Stacks int64
	CPUSeconds                  float64
	CPUFlap                     float64 // cores used while flapping and serving the list load
	ChecksFlap                  float64 // health checks the nodes answered a second meanwhile
	Goroutines                  []int   // after all READY, after scans, after flapping
	ConnsMaxPerNode             int
	ConnsOpen                   int
	ConnsAccepted               int
	DBSize                      int64
}

// Run builds the cluster in the control plane at t with a fleet of
// simulated agents, measures, and tears the fleet down.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	cfg.Defaults()
	b := &bench{t: t, cfg: cfg, r: &Result{Nodes: cfg.Nodes, Pools: cfg.Pools}, fleet: NewFleet(cfg.ISOsPerPool)}
	// The requests of this process come from 127.0.0.1 (the list clients'
	// from 127.0.0.2), and the control plane refuses one client address
	// more than 64 connections at once (it resets the 65th): requests past
	// 60 at once wait for one.
	hc := &http.Client{Transport: &auth.Transport{Token: t.AdminToken, Base: &http.Transport{MaxIdleConnsPerHost: 60, MaxConnsPerHost: 60}}}
	b.nodes = quarryv1connect.NewNodeServiceClient(hc, t.URL)
	b.pools = quarryv1connect.NewStoragePoolServiceClient(hc, t.URL)
	b.images = quarryv1connect.NewImageServiceClient(hc, t.URL)
	b.tokens = quarryv1connect.NewTokenServiceClient(hc, t.URL)
	b.hc = hc
	defer b.fleet.Close()
	stop := b.sampleProcess(ctx)
	err := b.run(ctx)
	stop()
	return b.r, err
}

type bench struct {
	t      Target
	cfg    Config
	r      *Result
	fleet  *Fleet
	hc     *http.Client
	nodes  quarryv1connect.NodeServiceClient
	pools  quarryv1connect.StoragePoolServiceClient
	images quarryv1connect.ImageServiceClient
	tokens quarryv1connect.TokenServiceClient

	poolIDs   []string
	mu        sync.Mutex
	stale     time.Duration
	staleSeen string        // when and on which node stale was seen
	listNodes time.Duration // the slowest page of sampleFreshness
	scrapes   []time.Time   // when sampleProcess scraped /metrics
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) run(ctx context.Context) error {
	cfg := b.cfg
	if err := b.fleet.Listen("sim", cfg.Nodes); err != nil {
		return err
	}
	tok, err := b.tokens.CreateToken(ctx, connect.NewRequest(&quarryv1.CreateTokenRequest{
		Name: "simscale", Kind: quarryv1.TokenKind_TOKEN_KIND_JOIN, TtlSeconds: 3600}))
	if err != nil {
		return fmt.Errorf("creating a join token: %w", err)
	}
	b.logf("enrolling %d nodes", cfg.Nodes)
	start := time.Now()
	if err := b.fleet.Enroll(ctx, b.t.URL, tok.Msg.GetSecret(), cfg.EnrollWorkers); err != nil {
		return err
	}
	b.r.Enroll = time.Since(start)
	b.logf("enrolled in %v; creating %d pools", b.r.Enroll.Round(time.Millisecond), cfg.Pools)

	start = time.Now()
	if err := b.createPools(ctx); err != nil {
		return err
	}
	b.r.PoolsCreate = time.Since(start)
	b.logf("pools created in %v; waiting for every node to be READY", b.r.PoolsCreate.Round(time.Millisecond))
	start = time.Now()
	if err := b.waitAllReady(ctx, 5*time.Minute); err != nil {
		return err
	}
	b.r.AllReady = time.Since(start)
	b.r.Goroutines = append(b.r.Goroutines, b.goroutines(ctx))
	b.logf("all READY after %v", b.r.AllReady.Round(time.Millisecond))

	start = time.Now()
	found, err := b.scanAll(ctx)
	if err != nil {
		return err
	}
	b.r.Seed = time.Since(start)
	// The pools' event streams, opened as the pools were created, have
	// their nodes' pools scanned already: the library holds the ISOs
	// whether this scan found them or those.
	if b.r.SeededImages, err = b.countImages(ctx); err != nil {
		return err
	}
	b.logf("first full scan in %v: %d ISOs discovered by it, %d images in the library", b.r.Seed.Round(time.Millisecond), found, b.r.SeededImages)
	start = time.Now()
	if _, err := b.scanAll(ctx); err != nil {
		return err
	}
	b.r.Rescan = time.Since(start)
	b.logf("full rescan in %v", b.r.Rescan.Round(time.Millisecond))
	b.r.Goroutines = append(b.r.Goroutines, b.goroutines(ctx))

	// Flapping, the list load and the freshness samples run together: the
	// health loop is measured while the API is busy.
	b.logf("flapping %.1f %% of the nodes per minute for %v; %d clients list images for %v",
		100*cfg.FlapRate, cfg.FlapFor, cfg.Clients, cfg.LoadFor)
	restore, err := b.reniceAgents()
	if err != nil {
		return err
	}
	defer restore()
	cpu0, _ := b.metric(ctx, "process_cpu_seconds_total")
	checks0 := b.factsAnswered()
	t0 := time.Now()
	sctx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Go(func() { b.sampleFreshness(sctx) })
	var load sync.WaitGroup
	var loadErr error
	load.Go(func() { loadErr = b.listLoad(ctx) })
	flapErr := b.flap(ctx)
	load.Wait()
	stopSampling()
	sampling.Wait()
	restore()
	cpu1, _ := b.metric(ctx, "process_cpu_seconds_total")
	b.r.CPUFlap = (cpu1 - cpu0) / time.Since(t0).Seconds()
	b.r.ChecksFlap = float64(b.factsAnswered()-checks0) / time.Since(t0).Seconds()
	b.r.StaleMax, b.r.ListNodesMax = b.stale, b.listNodes
	// When: the list load's phases are logged with their ends.
	b.logf("the oldest check of a READY node: %v old, seen %s", b.stale.Round(100*time.Millisecond), b.staleSeen)
	if err := errors.Join(loadErr, flapErr); err != nil {
		return err
	}
	b.r.Goroutines = append(b.r.Goroutines, b.goroutines(ctx))

	if b.r.RSS, err = processRSS(b.t.PID); err != nil {
		return fmt.Errorf("reading the control plane's RSS: %w", err)
	}
	b.r.CPUSeconds, _ = b.metric(ctx, "process_cpu_seconds_total")
	for name, v := range map[string]*int64{"go_memstats_heap_alloc_bytes": &b.r.HeapAlloc, "go_memstats_next_gc_bytes": &b.r.HeapGoal, "go_memstats_stack_inuse_bytes": &b.r.Stacks} {
		*v = int64(must(b.metric(ctx, name)))
	}
	for _, nd := range b.fleet.Nodes() {
		open, most, accepted := nd.Conns()
		b.r.ConnsOpen += open
		b.r.ConnsAccepted += accepted
		b.r.ConnsMaxPerNode = max(b.r.ConnsMaxPerNode, most)
	}
	if b.t.DBSize != nil {
		if b.r.DBSize, err = b.t.DBSize(ctx); err != nil {
			return fmt.Errorf("database size: %w", err)
		}
	}
	// Last, after RSS was read: what a walk of every page (1,000 images a
	// page, the most a page holds) costs.
	start = time.Now()
	if b.r.FullListImages, err = b.countImages(ctx); err != nil {
		return err
	}
	b.r.FullList = time.Since(start)
	b.r.Images = b.r.FullListImages
	b.logf("every page of ListImages (%d images, 1,000 a page): %v", b.r.FullListImages, b.r.FullList.Round(time.Millisecond))
	start = time.Now()
	if _, err := b.allNodes(ctx); err != nil {
		return err
	}
	b.r.FullNodeList = time.Since(start)
	b.logf("every page of ListNodes (%d nodes, 1,000 a page): %v", cfg.Nodes, b.r.FullNodeList.Round(time.Millisecond))
	return nil
}

// reniceAgents sets this process to Config.AgentsNice, if not 0, and
// returns the function that sets it back to 0 (once).
func (b *bench) reniceAgents() (restore func(), err error) {
	if b.cfg.AgentsNice == 0 {
		return func() {}, nil
	}
	if err := reniceThreads(b.cfg.AgentsNice); err != nil {
		return nil, err
	}
	return sync.OnceFunc(func() {
		if err := reniceThreads(0); err != nil {
			b.logf("the rest of this run keeps nice %d: %v", b.cfg.AgentsNice, err)
		}
	}), nil
}

// reniceThreads sets the nice value of every thread of this process to
// nice; threads started later take their starter's. Raising it needs no
// privilege, lowering it back does (root).
func reniceThreads(nice int) error {
	// Twice: a thread started while the first pass ran may have been
	// started by one not reniced yet.
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("setting thread %d's nice value to %d: %w", tid, nice, err)
			}
		}
	}
	return nil
}

// countImages walks every page of the library, 1,000 images a page (the
// most a page holds), and returns how many images it held.
func (b *bench) countImages(ctx context.Context) (int, error) {
	req := &quarryv1.ListImagesRequest{PageSize: 1000}
	n := 0
	for {
		page, err := b.images.ListImages(ctx, connect.NewRequest(req))
		if err != nil {
			return n, fmt.Errorf("listing every image: %w", err)
		}
		n += len(page.Msg.GetImages())
		if req.PageToken = page.Msg.GetNextPageToken(); req.PageToken == "" {
			return n, nil
		}
	}
}

func must(v float64, _ error) float64 { return v }

// createPools makes the shared pools, each assigned to and mounted by one
// block of nodes, and the local pools, each on one node, 8 at a time.
func (b *bench) createPools(ctx context.Context) error {
	cfg, nodes := b.cfg, b.fleet.Nodes()
	reqs := make([]*quarryv1.CreatePoolRequest, 0, cfg.Pools)
	block := max(1, len(nodes)/max(1, cfg.SharedPools))
	for i := range cfg.SharedPools {
		path := fmt.Sprintf("/srv/nfs/shared-%04d", i+1)
		req := &quarryv1.CreatePoolRequest{Name: fmt.Sprintf("shared-%04d", i+1), Path: path, Shared: true}
		for _, nd := range nodes[min(i*block, len(nodes)-1):min((i+1)*block, len(nodes))] {
			b.fleet.Mount(nd.Name, path)
			req.AssignedNodeIds = append(req.AssignedNodeIds, nd.ID)
		}
		reqs = append(reqs, req)
	}
	for i := range cfg.Pools - cfg.SharedPools {
		nd := nodes[i%len(nodes)]
		path := fmt.Sprintf("/var/lib/quarry/local-%04d", i+1)
		b.fleet.Mount(nd.Name, path)
		reqs = append(reqs, &quarryv1.CreatePoolRequest{Name: fmt.Sprintf("local-%04d", i+1), Path: path, AssignedNodeIds: []string{nd.ID}})
	}
	ids := make([]string, len(reqs))
	err := parallel(8, len(reqs), func(i int) error {
		resp, err := b.pools.CreatePool(ctx, connect.NewRequest(reqs[i]))
		if err != nil {
			return fmt.Errorf("creating pool %s: %w", reqs[i].GetName(), err)
		}
		ids[i] = resp.Msg.GetPool().GetId()
		return nil
	})
	b.poolIDs = ids
	return err
}

// parallel runs f(0..n-1), at most workers at a time, and returns the
// first error.
func parallel(workers, n int, f func(i int) error) error {
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					first = cmp(first, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waitAllReady polls ListNodes until every node is READY.
func (b *bench) waitAllReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		nodes, err := b.allNodes(ctx)
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes {
			if n.GetState() == quarryv1.NodeState_NODE_STATE_READY {
				ready++
			}
		}
		if ready == b.cfg.Nodes {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes READY after %v", ready, b.cfg.Nodes, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// allNodes lists every node, a page of 1,000 (the most) at a time.
func (b *bench) allNodes(ctx context.Context) ([]*quarryv1.Node, error) {
	req := &quarryv1.ListNodesRequest{PageSize: 1000}
	var all []*quarryv1.Node
	for {
		resp, err := b.nodes.ListNodes(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, fmt.Errorf("listing nodes: %w", err)
		}
		all = append(all, resp.Msg.GetNodes()...)
		if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
			return all, nil
		}
	}
}

// scanAll scans every pool and returns the ISOs discovered; a pool skipped
// is an error.
func (b *bench) scanAll(ctx context.Context) (int, error) {
	resp, err := b.images.ScanISOs(ctx, connect.NewRequest(&quarryv1.ScanISOsRequest{}))
	if err != nil {
		return 0, fmt.Errorf("scanning every pool: %w", err)
	}
	if got := len(resp.Msg.GetResults()); got != b.cfg.Pools {
		return 0, fmt.Errorf("the scan reported %d pools, want %d", got, b.cfg.Pools)
	}
	for _, r := range resp.Msg.GetResults() {
		if r.GetSkipped() {
			return 0, fmt.Errorf("the scan skipped pool %s: %s", r.GetStoragePoolName(), r.GetSkipReason())
		}
	}
	return int(resp.Msg.GetDiscoveredCount()), nil
}

// listLoad runs the clients for LoadFor twice and records the latencies:
// first each asking its next page as soon as it has the last (the most the
// control plane serves, and its latency when saturated), then each asking
// one page every Pace (an offered load below saturation).
func (b *bench) listLoad(ctx context.Context) error {
	r := b.r
	var err error
	r.ListRequests, r.ListErrors, r.ListRate, r.List, err = b.listClients(ctx, 0)
	b.logf("ListImages, %d clients back to back: %d requests, %.0f/s, p50 %v, p99 %v, max %v, %d errors; in the control plane p99 ≤ %v, %.1f %% over 20 ms; %s",
		b.cfg.Clients, r.ListRequests, r.ListRate, r.List.P50, r.List.P99, r.List.Max, r.ListErrors, r.List.Handler.P99Within, 100*r.List.Handler.Over, r.List.CPU)
	if err != nil {
		return err
	}
	n, errs, rate, lat, err := b.listClients(ctx, b.cfg.Pace)
	r.ListRequests, r.ListErrors, r.PacedRate, r.Paced = r.ListRequests+n, r.ListErrors+errs, rate, lat
	b.logf("ListImages, %d clients each a page every %v: %d requests, %.0f/s, p50 %v, p99 %v, max %v, %d errors; sent late p99 %v; in the control plane p99 ≤ %v, %.1f %% over 20 ms; %s",
		b.cfg.Clients, b.cfg.Pace, n, rate, lat.P50, lat.P99, lat.Max, errs, lat.LateP99, lat.Handler.P99Within, 100*lat.Handler.Over, lat.CPU)
	return err
}

// Latency is a distribution's median, 99th percentile and maximum, as
// the clients saw it, and what the control plane took (from each
// request's arrival to its answer).
type Latency struct {
	P50, P99, Max time.Duration
	// LateP99 is the 99th percentile of how late the clients sent their
	// requests (this process's own delay, counted in the latency).
	LateP99 time.Duration
	Handler HandlerLatency
	// CPU is what the machine's cores did meanwhile.
	CPU CPUShare
}

// CPUShare is how many cores were busy over a span: in the control plane
// (process_cpu_seconds_total), in this process (the simulated agents and
// the clients), and in the whole machine (/proc/stat), of its CPUs.
type CPUShare struct {
	Server, Simulator, Machine float64
	// Clients is the clients' process's (Config.ListClients); with the
	// clients in this process, they are the simulator's.
	Clients float64
	// Stolen is the cores' time the machine's hypervisor gave to others
	// while this machine had work for them (/proc/stat's steal): on a
	// shared host, time no process here could run.
	Stolen float64
	CPUs   int
}

func (c CPUShare) String() string {
	return fmt.Sprintf("cores busy: control plane %.2f, simulator %.2f, clients %.2f, machine %.2f of %d (%.2f stolen)",
		c.Server, c.Simulator, c.Clients, c.Machine, c.CPUs, c.Stolen)
}

// cpuTimes is a reading of the counters CPUShare is made of, in seconds.
type cpuTimes struct {
	at                                 time.Time
	server, simulator, machine, stolen float64
	cpus                               int
}

// cpuNow reads this process's and the machine's CPU time; the control
// plane's comes with the scrape of reading.
func cpuNow() (cpuTimes, error) {
	t := cpuTimes{at: time.Now()}
	t.simulator = processCPU().Seconds()
	var err error
	t.machine, t.stolen, t.cpus, err = machineBusy()
	return t, err
}

func (t cpuTimes) since(u cpuTimes) CPUShare {
	d := t.at.Sub(u.at).Seconds()
	return CPUShare{Server: (t.server - u.server) / d, Simulator: (t.simulator - u.simulator) / d,
		Machine: (t.machine - u.machine) / d, Stolen: (t.stolen - u.stolen) / d, CPUs: t.cpus}
}

// machineBusy returns the seconds the machine's CPUs have been busy (user,
// nice, system, irq and softirq time from /proc/stat, in the kernel's
// USER_HZ of 100; guest time is counted in user time already), the seconds
// stolen from them (steal) and how many CPUs it has.
func machineBusy() (busy, stolen float64, cpus int, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		switch {
		case len(fields) > 5 && fields[0] == "cpu":
			for i, f := range fields[1:] {
				v, err := strconv.ParseFloat(f, 64)
				if err != nil {
					return 0, 0, 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
				}
				switch i {
				case 0, 1, 2, 5, 6: // user, nice, system, irq, softirq
					busy += v / 100
				case 7:
					stolen += v / 100
				}
			}
		case len(fields) > 0 && strings.HasPrefix(fields[0], "cpu"):
			cpus++
		}
	}
	return busy, stolen, cpus, nil
}

// listClients runs the clients for LoadFor, each asking a page every pace
// (0: back to back), and returns the requests made, the failed ones, the
// rate of answered requests and their latencies. A request is timed from
// when it was due, so a slow answer is not hidden by the requests it
// delayed.
func (b *bench) listClients(ctx context.Context, pace time.Duration) (n, errs int, rate float64, lat Latency, err error) {
	job := ListJob{URL: b.t.URL, Token: b.t.AdminToken, PoolIDs: b.poolIDs, ISOsPerPool: b.cfg.ISOsPerPool,
		Clients: b.cfg.Clients, Pace: pace, For: b.cfg.LoadFor}
	if u, err := url.Parse(b.t.URL); err == nil && u.Hostname() == "127.0.0.1" {
		// Clients of their own address, as of a machine of their own: the
		// simulator's requests from 127.0.0.1 do not count against theirs.
		job.SourceIP = "127.0.0.2"
	}
	before, cpu0, herr := b.reading(ctx)
	start := time.Now()
	var s ListSamples
	if b.cfg.ListClients != nil {
		if s, err = b.cfg.ListClients(ctx, job); err != nil {
			return 0, 0, 0, lat, err
		}
	} else {
		s = RunListClients(ctx, job)
	}
	if s.Errs > 0 {
		// Counted and reported, not the end of the run.
		b.logf("%d of %d list requests failed, the last with: %s", s.Errs, len(s.Lats)+s.Errs, s.LastErr)
	}
	rate = float64(len(s.Lats)) / s.Elapsed.Seconds()
	if pace > 0 {
		b.logf("the slowest 1 %% of the paced requests, when due: %s; /metrics scraped at %s", slowest(s, 0.01), b.scrapedWithin(start, s.Elapsed))
	}
	lat = Latency{P50: quantile(s.Lats, 0.5), P99: quantile(s.Lats, 0.99), Max: quantile(s.Lats, 1), LateP99: quantile(s.Lates, 0.99)}
	after, cpu1, aerr := b.reading(ctx)
	if err := cmp(herr, aerr); err != nil {
		return len(s.Lats) + s.Errs, s.Errs, rate, lat, fmt.Errorf("reading the control plane's latency histogram and CPU time: %w", err)
	}
	lat.Handler, lat.CPU = after.since(before).latency(), cpu1.since(cpu0)
	if b.cfg.ListClients != nil {
		lat.CPU.Clients = s.CPU.Seconds() / s.Elapsed.Seconds()
	}
	return len(s.Lats) + s.Errs, s.Errs, rate, lat, ctx.Err()
}

// scrapedWithin lists when sampleProcess scraped /metrics in the d from
// start, in seconds from start, to set beside the slowest requests: a
// scrape of a large cluster is a burst of work for the control plane.
func (b *bench) scrapedWithin(start time.Time, d time.Duration) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var at []string
	for _, t := range b.scrapes {
		if off := t.Sub(start); off >= 0 && off <= d {
			at = append(at, fmt.Sprintf("%.2f s", off.Seconds()))
		}
	}
	if len(at) == 0 {
		return "none"
	}
	return strings.Join(at, ", ")
}

// slowest lists the share q of s's answered requests that took longest, in
// the order they were due, as "due (s from the start) +latency": whether
// they came together (the control plane, or the machine, stalled) or
// spread out.
func slowest(s ListSamples, q float64) string {
	idx := make([]int, len(s.Lats))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return int(s.Lats[b] - s.Lats[a]) })
	idx = idx[:min(len(idx), int(math.Ceil(q*float64(len(idx)))))]
	slices.SortFunc(idx, func(a, b int) int { return int(s.Dues[a] - s.Dues[b]) })
	var out []string
	for _, i := range idx {
		out = append(out, fmt.Sprintf("%.2f s +%v", s.Dues[i].Seconds(), s.Lats[i].Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// flap takes FlapRate of the nodes per minute down for DownFor and back up,
// spread over FlapFor, and measures how long the API takes to show each
// change.
func (b *bench) flap(ctx context.Context) error {
	cfg := b.cfg
	count := max(1, int(math.Round(float64(cfg.Nodes)*cfg.FlapRate*cfg.FlapFor.Minutes())))
	nodes := b.fleet.Nodes()
	perm := rand.Perm(len(nodes))
	gap := cfg.FlapFor / time.Duration(count)
	var (
		mu         sync.Mutex
		down, up   []time.Duration
		missed     int
		lost       int
		wg         sync.WaitGroup
		firstError error
	)
	limit := 2 * cfg.HealthInterval
	for i := range count {
		nd := nodes[perm[i%len(nodes)]]
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(gap):
		}
		wg.Go(func() {
			t0 := time.Now()
			nd.Down()
			// The node stays down until the API showed it so; the deadlines
			// only keep a lost change from hanging the run: what counts is
			// whether it showed within limit.
			downSeen, err := b.waitState(ctx, nd.ID, quarryv1.NodeState_NODE_STATE_UNREACHABLE, t0.Add(cfg.DownFor+5*limit))
			time.Sleep(time.Until(t0.Add(cfg.DownFor)))
			t1 := time.Now()
			uerr := nd.Up(ctx)
			upSeen, err2 := b.waitState(ctx, nd.ID, quarryv1.NodeState_NODE_STATE_READY, t1.Add(5*limit))
			mu.Lock()
			defer mu.Unlock()
			if e := errors.Join(err, uerr, err2); e != nil {
				// Not shown within the deadline: a miss, not the end of the run.
				missed++
				lost++
				firstError = cmp(firstError, e)
				return
			}
			dd, ud := downSeen.Sub(t0), upSeen.Sub(t1)
			down, up = append(down, dd), append(up, ud)
			if dd > limit || ud > limit {
				missed++
			}
		})
	}
	wg.Wait()
	b.r.Flaps, b.r.FlapMissed = count, missed
	b.r.DownSeenP50, b.r.DownSeenMax = quantile(down, 0.5), quantile(down, 1)
	b.r.UpSeenP50, b.r.UpSeenMax = quantile(up, 0.5), quantile(up, 1)
	b.logf("%d flaps: UNREACHABLE shown after p50 %v max %v; READY again after p50 %v max %v; %d not shown at all",
		count, b.r.DownSeenP50, b.r.DownSeenMax, b.r.UpSeenP50, b.r.UpSeenMax, lost)
	if lost > 0 {
		b.logf("the first flap not shown: %v", firstError)
	}
	b.r.FlapLost = lost
	return ctx.Err()
}

// waitState polls the node every tenth of a health interval until the
// API shows it in state and returns when it did; an error past deadline.
func (b *bench) waitState(ctx context.Context, id string, state quarryv1.NodeState, deadline time.Time) (time.Time, error) {
	start := time.Now()
	// The checks the API showed meanwhile, for a change shown late.
	var checks []string
	var lastCheck time.Time
	for {
		resp, err := b.nodes.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{Id: id}))
		if n := resp.Msg.GetNode(); err == nil && !n.GetLastCheckedAt().AsTime().Equal(lastCheck) {
			lastCheck = n.GetLastCheckedAt().AsTime()
			checks = append(checks, fmt.Sprintf("%v at %+.1fs", n.GetState(), lastCheck.Sub(start).Seconds()))
		}
		if err == nil && resp.Msg.GetNode().GetState() == state {
			if took := time.Since(start); took > 2*b.cfg.HealthInterval {
				b.logf("node %s shown %v after %v; the checks the API showed meanwhile: %s", id, state, took.Round(time.Millisecond), strings.Join(checks, ", "))
			}
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("node %s not %v after %v (%v)", id, state, time.Since(start).Round(time.Millisecond), err)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(b.cfg.HealthInterval / 10):
		}
	}
}

// factsAnswered is how many health checks the fleet's nodes answered.
func (b *bench) factsAnswered() (n int64) {
	for _, nd := range b.fleet.Nodes() {
		n += nd.FactsAnswered()
	}
	return n
}

// freshnessPage is how many nodes a page of sampleFreshness holds, the
// API's default page.
const freshnessPage = 100

// sampleFreshness pages through the nodes, 100 at a time, as a dashboard
// paging the node list would, spreading each walk of every node over a
// health interval, and keeps the age of the oldest check of a READY node
// as of when its page was asked for. Walked 1,000 nodes a page, every
// node at once each interval, the walk was about a fifth of the control
// plane's CPU and of its garbage, in bursts that the list clients' pages
// queued behind.
func (b *bench) sampleFreshness(ctx context.Context) {
	pages := max(1, (b.cfg.Nodes+freshnessPage-1)/freshnessPage)
	t := time.NewTicker(b.cfg.HealthInterval / time.Duration(pages))
	defer t.Stop()
	req := &quarryv1.ListNodesRequest{PageSize: freshnessPage}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		asked := time.Now()
		resp, err := b.nodes.ListNodes(ctx, connect.NewRequest(req))
		if err != nil {
			req.PageToken = ""
			continue
		}
		b.mu.Lock()
		b.listNodes = max(b.listNodes, time.Since(asked))
		for _, n := range resp.Msg.GetNodes() {
			if n.GetState() != quarryv1.NodeState_NODE_STATE_READY || n.GetLastCheckedAt() == nil {
				continue
			}
			if age := asked.Sub(n.GetLastCheckedAt().AsTime()); age > b.stale {
				b.stale = age
				b.staleSeen = fmt.Sprintf("at %s on node %s", asked.Format("15:04:05.0"), n.GetName())
			}
		}
		b.mu.Unlock()
		req.PageToken = resp.Msg.GetNextPageToken()
	}
}

// sampleProcess reads the control plane's resident memory every second,
// keeping the peak, until the returned function is called.
func (b *bench) sampleProcess(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			if rss, err := processRSS(b.t.PID); err == nil {
				b.mu.Lock()
				b.r.RSSPeak = max(b.r.RSSPeak, rss)
				b.mu.Unlock()
			}
			// A Prometheus scraping every 15 s, its default interval.
			if i%15 == 0 {
				b.mu.Lock()
				b.scrapes = append(b.scrapes, time.Now())
				b.mu.Unlock()
				b.metric(ctx, "go_goroutines") //nolint:errcheck // load only
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// processRSS is the resident set size of process pid.
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0, err
	}
	var size, rss int64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		return 0, err
	}
	return rss * int64(os.Getpagesize()), nil
}

func (b *bench) goroutines(ctx context.Context) int {
	return int(must(b.metric(ctx, "go_goroutines")))
}

// metric reads one unlabelled value from the control plane's /metrics.
func (b *bench) metric(ctx context.Context, name string) (float64, error) {
	v, found := 0.0, false
	err := b.scrape(ctx, func(line string) error {
		s, ok := strings.CutPrefix(line, name+" ")
		if !ok || found {
			return nil
		}
		var err error
		v, err = strconv.ParseFloat(s, 64)
		found = err == nil
		return err
	})
	if err == nil && !found {
		err = fmt.Errorf("the control plane's /metrics has no %s", name)
	}
	return v, err
}

// scrape calls f with every line of the control plane's /metrics.
func (b *bench) scrape(ctx context.Context, f func(line string) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.t.URL+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := f(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// histogram is a cumulative histogram: counts[i] observations were at
// most bounds[i], in ascending order, the last bound +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

// reading reads, in one scrape of the control plane's /metrics, its
// histogram of the time ListImages calls spend in it
// (quarry_api_request_duration_seconds: from the request's arrival, once
// read, until the page is built, so without writing the answer, and
// without any wait of the client's own) and its CPU time, with this
// process's and the machine's (cpuNow).
func (b *bench) reading(ctx context.Context) (histogram, cpuTimes, error) {
	const prefix = `quarry_api_request_duration_seconds_bucket{procedure="` + quarryv1connect.ImageServiceListImagesProcedure + `",le="`
	var h histogram
	cpu, err := cpuNow()
	if err != nil {
		return h, cpu, err
	}
	server := false
	err = b.scrape(ctx, func(line string) error {
		if v, ok := strings.CutPrefix(line, "process_cpu_seconds_total "); ok {
			var err error
			cpu.server, err = strconv.ParseFloat(v, 64)
			server = err == nil
			return err
		}
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			return nil
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			return fmt.Errorf("unexpected /metrics line %q", line)
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return err
		}
		n, err := strconv.ParseFloat(count, 64)
		if err != nil {
			return err
		}
		h.bounds, h.counts = append(h.bounds, bound), append(h.counts, n)
		return nil
	})
	if err == nil && !server {
		err = errors.New("the control plane's /metrics has no process_cpu_seconds_total")
	}
	return h, cpu, err
}

// since returns the observations h has and before had not: both must be
// the same histogram's (before may be empty: nothing observed then).
func (h histogram) since(before histogram) histogram {
	d := histogram{bounds: h.bounds, counts: slices.Clone(h.counts)}
	if len(before.counts) == len(h.counts) {
		for i := range d.counts {
			d.counts[i] -= before.counts[i]
		}
	}
	return d
}

// HandlerLatency says how long a share of calls took in the control
// plane, from its histogram: P99Within is the bucket bound the
// 99th percentile is under (math.MaxInt64 when it is in the last, +Inf
// bucket), Over is the share of calls above handlerBound (20 ms).
type HandlerLatency struct {
	P99Within time.Duration
	Over      float64
	Calls     int
}

// handlerBound is the latency the share Over is counted against.
const handlerBound = 0.02

func (h histogram) latency() HandlerLatency {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return HandlerLatency{}
	}
	total := h.counts[len(h.counts)-1]
	l := HandlerLatency{Calls: int(total), P99Within: -1}
	for i, b := range h.bounds {
		if l.P99Within < 0 && h.counts[i] >= 0.99*total {
			l.P99Within = time.Duration(b * float64(time.Second))
			if math.IsInf(b, 1) {
				l.P99Within = math.MaxInt64
			}
		}
		if b == handlerBound {
			l.Over = 1 - h.counts[i]/total
		}
	}
	return l
}
