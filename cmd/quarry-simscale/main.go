// Command quarry-simscale is the cluster-scale benchmark behind
// `make bench-scale`; it is not shipped. For each store it starts a real
// `quarry server` process (SQLite in a temp directory, then PostgreSQL in a
// throwaway cluster), plays thousands of agents against it from this
// process (internal/simscale), and prints the figures side by side.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/bytesize"
	"github.com/quarry-project/quarry/internal/simscale"
	"github.com/quarry-project/quarry/internal/store/pgtest"
)

// clientsMode is the first argument that makes this program the list
// load's clients' process (simscale.StartListClients).
const clientsMode = "list-clients"

func main() {
	if len(os.Args) == 2 && os.Args[1] == clientsMode {
		if err := simscale.ServeListClients(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "quarry-simscale list-clients:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quarry-simscale:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg simscale.Config
	quarry := flag.String("quarry", "bin/quarry", "the quarry binary to run as the control plane")
	stores := flag.String("stores", "sqlite,postgres", "stores to run the control plane on, in order")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	memLimit := flag.String("server-memory-limit", "", "GOMEMLIMIT of the control plane process only (for example 400MiB); empty: Go's default")
	flag.IntVar(&cfg.Nodes, "nodes", 5000, "simulated agents")
	flag.IntVar(&cfg.Pools, "pools", 1000, "storage pools")
	flag.IntVar(&cfg.SharedPools, "shared-pools", 20, "of the pools, shared ones (each mounted by an equal block of nodes); the rest are local to one node each")
	flag.IntVar(&cfg.ISOsPerPool, "isos-per-pool", 100, "ISO files in every pool")
	flag.DurationVar(&cfg.HealthInterval, "health-interval", 5*time.Second, "the control plane's --health-interval")
	flag.IntVar(&cfg.Clients, "clients", 50, "concurrent API clients listing images")
	flag.DurationVar(&cfg.LoadFor, "load-for", 15*time.Second, "how long the clients list images, back to back and then paced")
	flag.DurationVar(&cfg.Pace, "pace", time.Second, "how often each client asks for a page in the paced half of the list load")
	flag.DurationVar(&cfg.FlapFor, "flap-for", time.Minute, "how long nodes flap")
	flag.Float64Var(&cfg.FlapRate, "flap-rate", 0.01, "share of the nodes going UNREACHABLE and back per minute")
	clientsProcess := flag.Bool("clients-process", true, "run the list load's clients in a process of their own (false: in this one, with the simulated agents)")
	flag.IntVar(&cfg.AgentsNice, "agents-nice", 10, "the nice value of the simulated agents (this process) while nodes flap and clients list, behind the control plane and the clients' process; 0: the same as theirs (needs root otherwise)")
	flag.Parse()
	if cfg.AgentsNice != 0 && os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "not root: the simulated agents keep the control plane's priority (--agents-nice %d needs root to be undone after each store)\n", cfg.AgentsNice)
		cfg.AgentsNice = 0
	}
	cfg.Log = os.Stderr
	cfg.Defaults()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	raiseFileLimit()
	if *clientsProcess {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		listClients, stopClients, err := simscale.StartListClients(ctx, self, clientsMode)
		if err != nil {
			return err
		}
		defer stopClients() //nolint:errcheck // its failures went to stderr
		cfg.ListClients = listClients
	}
	var names []string
	var results []*result
	for _, name := range strings.Split(*stores, ",") {
		fmt.Fprintf(os.Stderr, "=== %s: %d nodes, %d pools (%d shared), %d ISOs each, health interval %v\n",
			name, cfg.Nodes, cfg.Pools, cfg.SharedPools, cfg.ISOsPerPool, cfg.HealthInterval)
		before := machineReference()
		r, err := runOne(ctx, *quarry, name, *memLimit, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		r.reference = [2]time.Duration{before, machineReference()}
		fmt.Fprintf(os.Stderr, "reference work, every core at once: %v before the run, %v after\n",
			r.reference[0].Round(time.Millisecond), r.reference[1].Round(time.Millisecond))
		names, results = append(names, name), append(results, r)
	}
	report(os.Stdout, cfg, *memLimit, names, results)
	return nil
}

type result struct {
	*simscale.Result
	peakRSS int64 // VmHWM of the control plane process
	// reference is machineReference before and after the run.
	reference [2]time.Duration
}

// runOne starts a control plane on the store and runs the benchmark on it.
func runOne(ctx context.Context, quarry, storeName, memLimit string, cfg simscale.Config) (*result, error) {
	dir, err := os.MkdirTemp("", "quarry-simscale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"server", "--listen", addr, "--data-dir", dir, "--health-interval", cfg.HealthInterval.String(),
		"--scan-interval", "0", "--log-level", "warn"}
	target := simscale.Target{URL: "http://" + addr}
	switch storeName {
	case "sqlite":
		target.DBSize = func(context.Context) (int64, error) { return filesSize(dir, "quarry.db*") }
	case "postgres":
		bin, err := postgresBin()
		if err != nil {
			return nil, err
		}
		c, err := pgtest.Start(bin)
		if err != nil {
			return nil, fmt.Errorf("starting PostgreSQL: %w", err)
		}
		defer c.Stop() //nolint:errcheck // a temp cluster
		url := c.URL("postgres")
		args = append(args, "--database-url", url)
		target.DBSize = func(ctx context.Context) (int64, error) { return pgSize(ctx, url) }
	default:
		return nil, fmt.Errorf("unknown store %q: use sqlite or postgres", storeName)
	}

	// Kept after the run (warnings only), for what went wrong meanwhile.
	logPath := filepath.Join(os.TempDir(), "quarry-simscale-"+storeName+".log")
	fmt.Printf("the control plane logs to %s\n", logPath)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(quarry, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if memLimit != "" {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+memLimit)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w (make build first)", quarry, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill() //nolint:errcheck
			<-exited
		}
	}()
	if err := waitReady(ctx, target.URL, exited); err != nil {
		return nil, fmt.Errorf("%w; its log:\n%s", err, tail(logPath))
	}
	token, err := os.ReadFile(auth.AdminTokenPath(dir))
	if err != nil {
		return nil, err
	}
	target.AdminToken = strings.TrimSpace(string(token))
	target.PID = cmd.Process.Pid

	r, err := simscale.Run(ctx, target, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w; the control plane's log ends:\n%s", err, tail(logPath))
	}
	return &result{Result: r, peakRSS: peakRSS(cmd.Process.Pid)}, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(ctx context.Context, url string, exited <-chan error) error {
	deadline := time.Now().Add(time.Minute)
	// A timeout per probe: a probe answered by nothing must not outlast
	// the control plane's exit.
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		resp, err := hc.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the control plane exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the control plane was not ready within a minute")
}

// postgresBin finds the newest installed PostgreSQL server binaries.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl): install the postgresql package, or run with --stores sqlite")
}

func pgSize(ctx context.Context, url string) (int64, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, err
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	var n sql.NullInt64
	err = db.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
	return n.Int64, err
}

func filesSize(dir, pattern string) (int64, error) {
	paths, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}

// peakRSS is the process's peak resident memory (VmHWM), 0 when unknown.
func peakRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// raiseFileLimit lets this process hold a listener and a connection per
// simulated node.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l) //nolint:errcheck // Listen says so when too low
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// report prints the figures of every store side by side, with the targets.
func report(w *os.File, cfg simscale.Config, memLimit string, names []string, rs []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\n%d nodes, %d pools (%d shared, %d local), %d images, health interval %v, %d list clients\n",
		cfg.Nodes, cfg.Pools, cfg.SharedPools, cfg.Pools-cfg.SharedPools, cfg.Pools*cfg.ISOsPerPool, cfg.HealthInterval, cfg.Clients)
	if memLimit != "" {
		fmt.Fprintf(tw, "control plane run with GOMEMLIMIT=%s\n", memLimit)
	}
	if cfg.ListClients != nil {
		fmt.Fprintln(tw, "list clients in a process of their own")
	} else {
		fmt.Fprintln(tw, "list clients in the simulator's process")
	}
	if cfg.AgentsNice != 0 {
		fmt.Fprintf(tw, "simulated agents at nice %d while flapping and listing\n", cfg.AgentsNice)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "figure\t%s\ttarget\n", strings.Join(names, "\t"))
	row := func(label, target string, f func(r *result) string) {
		cells := make([]string, len(rs))
		for i, r := range rs {
			cells[i] = f(r)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", label, strings.Join(cells, "\t"), target)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	sec := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	mib := func(n int64) string { return bytesize.Format(uint64(max(n, 0))) }
	row("reference work on every core, before / after the run", "", func(r *result) string {
		return ms(r.reference[0]) + " / " + ms(r.reference[1])
	})
	row("enroll every node (API, 16 at a time)", "", func(r *result) string { return sec(r.Enroll) })
	row("create every pool (API, 8 at a time)", "", func(r *result) string { return sec(r.PoolsCreate) })
	row("every node READY after", "", func(r *result) string { return sec(r.AllReady) })
	row("first full scan", "", func(r *result) string { return sec(r.Seed) })
	row("images in the library after it", "", func(r *result) string { return strconv.Itoa(r.SeededImages) })
	row("full-cluster ISO rescan", "", func(r *result) string { return sec(r.Rescan) })
	row("images listed", "", func(r *result) string { return strconv.Itoa(r.Images) })
	lat := func(l simscale.Latency) string { return ms(l.P50) + " / " + ms(l.P99) + " / " + ms(l.Max) }
	row(fmt.Sprintf("ListImages (100) p50/p99/max, %d clients back to back", cfg.Clients), "p99 ≤ 20 ms", func(r *result) string { return lat(r.List) })
	row("  requests answered per second", "", func(r *result) string { return fmt.Sprintf("%.0f", r.ListRate) })
	handler := func(l simscale.Latency) string {
		within := "≤ " + ms(l.Handler.P99Within)
		if l.Handler.P99Within == math.MaxInt64 {
			within = "over the last bound"
		}
		return fmt.Sprintf("p99 %s, %.1f %% over 20 ms", within, 100*l.Handler.Over)
	}
	row("  in the control plane, arrival to answer", "", func(r *result) string { return handler(r.List) })
	cores := func(c simscale.CPUShare) string {
		return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f of %d (%.2f)", c.Server, c.Simulator, c.Clients, c.Machine, c.CPUs, c.Stolen)
	}
	const coresLabel = "  cores busy: control plane / simulator / clients / machine (stolen)"
	row(coresLabel, "", func(r *result) string { return cores(r.List.CPU) })
	row(fmt.Sprintf("ListImages (100) p50/p99/max, %d clients each one every %v", cfg.Clients, cfg.Pace), "p99 ≤ 20 ms", func(r *result) string { return lat(r.Paced) })
	row("  requests answered per second", "", func(r *result) string { return fmt.Sprintf("%.0f", r.PacedRate) })
	row("  in the control plane, arrival to answer", "", func(r *result) string { return handler(r.Paced) })
	row("  requests sent late by the clients, p99", "", func(r *result) string { return ms(r.Paced.LateP99) })
	row(coresLabel, "", func(r *result) string { return cores(r.Paced.CPU) })
	row("ListImages errors", "0", func(r *result) string { return strconv.Itoa(r.ListErrors) })
	row("every ListImages page (1,000 a page)", "", func(r *result) string { return sec(r.FullList) })
	row("every ListNodes page (1,000 a page)", "", func(r *result) string { return sec(r.FullNodeList) })
	row("flaps", "", func(r *result) string { return strconv.Itoa(r.Flaps) })
	row("UNREACHABLE shown after, p50 / max", "≤ "+(2*cfg.HealthInterval).String(), func(r *result) string {
		return ms(r.DownSeenP50) + " / " + ms(r.DownSeenMax)
	})
	row("READY again after, p50 / max", "≤ "+(2*cfg.HealthInterval).String(), func(r *result) string {
		return ms(r.UpSeenP50) + " / " + ms(r.UpSeenMax)
	})
	row("flaps not shown within 2 intervals", "0", func(r *result) string { return strconv.Itoa(r.FlapMissed) })
	row("flaps not shown at all (deadline)", "0", func(r *result) string { return strconv.Itoa(r.FlapLost) })
	row("oldest check of a READY node", "≤ "+(2*cfg.HealthInterval).String(), func(r *result) string { return sec(r.StaleMax) })
	row("slowest ListNodes page (100 nodes) meanwhile", "", func(r *result) string { return ms(r.ListNodesMax) })
	row("RSS at the end", "", func(r *result) string { return mib(r.RSS) })
	row("Go heap at the end: allocated / GC goal / stacks", "", func(r *result) string {
		return mib(r.HeapAlloc) + " / " + mib(r.HeapGoal) + " / " + mib(r.Stacks)
	})
	row("peak RSS while flapping + list load", "≤ 512 MiB", func(r *result) string { return mib(r.RSSPeak) })
	row("peak RSS in all (setup included)", "", func(r *result) string { return mib(max(r.peakRSS, r.RSSPeak)) })
	row("CPU while flapping + list load", "", func(r *result) string { return fmt.Sprintf("%.2f cores", r.CPUFlap) })
	row("health checks answered a second meanwhile", fmt.Sprintf("%d due", int(float64(cfg.Nodes)/cfg.HealthInterval.Seconds())),
		func(r *result) string { return fmt.Sprintf("%.0f", r.ChecksFlap) })
	row("CPU in all", "", func(r *result) string { return fmt.Sprintf("%.0f s", r.CPUSeconds) })
	row("goroutines: ready / scanned / flapped", "bounded", func(r *result) string {
		return strings.Trim(strings.Join(strings.Fields(fmt.Sprint(r.Goroutines)), " / "), "[]")
	})
	row("goroutines per node", "", func(r *result) string {
		return fmt.Sprintf("%.1f", float64(r.Goroutines[len(r.Goroutines)-1])/float64(r.Nodes))
	})
	row("connections per node, most at once", "≤ 1", func(r *result) string { return strconv.Itoa(r.ConnsMaxPerNode) })
	row("connections open / accepted in all", "", func(r *result) string {
		return fmt.Sprintf("%d / %d", r.ConnsOpen, r.ConnsAccepted)
	})
	row("database size", "", func(r *result) string { return mib(r.DBSize) })
	tw.Flush()
}
