package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quarry-project/quarry/internal/store"
)

// StoreCollector reports how things are now, read from the store at each
// scrape: images by pool, kind and state; download jobs waiting and
// running; the nodes that mount each pool and its free and total bytes; when
// each node's certificate expires; and the files each pool's last scan left
// waiting to settle. A scrape that cannot read the store within Timeout
// reports none of these and logs why.
type StoreCollector struct {
	Store store.Store
	// Settling returns, by pool name, the files the last scan of each pool
	// left waiting until their writer is done; nil reports none.
	Settling func() map[string]int
	// Timeout bounds the store reads of one scrape (default 2 s).
	Timeout time.Duration
	Logger  *slog.Logger

	// The series of the last scrape, kept for the next, which sends again
	// those whose value did not change instead of building them anew: at
	// 1,000 pools and 5,000 nodes a scrape sends about 32,000 series, and
	// built each time they were about 40 MB of garbage a scrape, whose
	// collection a busy control plane's API requests waited behind.
	mu     sync.Mutex
	series map[seriesKey]*series
	scrape uint64 // the scrapes collected, the one in progress included
}

// seriesKey names a series of the collector: its descriptor and up to
// three label values.
type seriesKey struct {
	desc    *prometheus.Desc
	a, b, c string
}

type series struct {
	value  float64
	metric prometheus.Metric
	seen   uint64 // the scrape that last sent it
}

var (
	imagesDesc = prometheus.NewDesc("quarry_images",
		"Images in the library by pool, kind (CLOUD_IMAGE, ISO, DISK) and state.", []string{"pool", "kind", "state"}, nil)
	jobsDesc = prometheus.NewDesc("quarry_download_jobs",
		"Download jobs not finished yet, by state (QUEUED, RUNNING).", []string{"state"}, nil)
	// The pools' gauges are per pool, not per node and pool: a shared pool
	// is one filesystem however many nodes mount it, and per node and pool
	// a cluster of 5,000 nodes made 100,000 series of each.
	poolFreeDesc = prometheus.NewDesc("quarry_pool_free_bytes",
		"The least free bytes a node that mounts the pool reported at its last check.", []string{"pool"}, nil)
	poolSizeDesc = prometheus.NewDesc("quarry_pool_size_bytes",
		"The most total bytes a node that mounts the pool reported at its last check.", []string{"pool"}, nil)
	poolMountedDesc = prometheus.NewDesc("quarry_pool_mounted_nodes",
		"Nodes that mounted the pool at their last check (0: no node can reach it).", []string{"pool"}, nil)
	certExpiryDesc = prometheus.NewDesc("quarry_node_certificate_expiry_timestamp_seconds",
		"When the certificate of the node's agent expires (Unix time); the control plane renews it when a third is left.", []string{"node"}, nil)
	settlingDesc = prometheus.NewDesc("quarry_scan_settling_files",
		"Files the last scan of a pool left waiting until their writer is done.", []string{"pool"}, nil)
)

// The states and kinds reported even when no image has them, so that a
// count that drops to zero reads 0 and does not vanish.
var (
	imageKinds  = []store.ImageKind{store.KindCloudImage, store.KindISO, store.KindDisk}
	imageStates = []store.ImageState{store.ImagePending, store.ImageDownloading, store.ImageVerifying,
		store.ImageReady, store.ImageError, store.ImageMissing, store.ImageDeleting, store.ImageUploading}
	jobStates = []store.JobState{store.JobQueued, store.JobRunning}
)

// Describe sends every descriptor the collector reports.
func (c *StoreCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{imagesDesc, jobsDesc, poolFreeDesc, poolSizeDesc, poolMountedDesc, certExpiryDesc, settlingDesc} {
		ch <- d
	}
}

// Collect reads the store and sends the gauges.
func (c *StoreCollector) Collect(ch chan<- prometheus.Metric) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scrape++
	defer c.forgetUnsent()
	if err := c.collect(ctx, ch); err != nil {
		log := c.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("metrics: reading the store for a scrape failed; the library's gauges are left out", "err", err)
	}
	if c.Settling != nil {
		for pool, n := range c.Settling() {
			ch <- c.gauge(settlingDesc, float64(n), pool)
		}
	}
}

// gauge returns the series of desc with the label values (at most three)
// at value v: the last scrape's when it had that value. Called with c.mu
// held.
func (c *StoreCollector) gauge(desc *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	var l [3]string
	copy(l[:], labels)
	k := seriesKey{desc, l[0], l[1], l[2]}
	if c.series == nil {
		c.series = map[seriesKey]*series{}
	}
	s := c.series[k]
	if s == nil || s.value != v {
		s = &series{value: v, metric: prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)}
		c.series[k] = s
	}
	s.seen = c.scrape
	return s.metric
}

// forgetUnsent drops the series the scrape did not send (a deleted pool,
// a failed read). Called with c.mu held.
func (c *StoreCollector) forgetUnsent() {
	for k, s := range c.series {
		if s.seen != c.scrape {
			delete(c.series, k)
		}
	}
}

func (c *StoreCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	pools, err := c.Store.ListPools(ctx)
	if err != nil {
		return err
	}
	nodes, err := c.Store.ListNodes(ctx)
	if err != nil {
		return err
	}
	usages, err := c.Store.PoolUsages(ctx)
	if err != nil {
		return err
	}
	imageCounts, err := c.Store.CountImages(ctx)
	if err != nil {
		return err
	}
	jobs, err := c.Store.ListJobs(ctx, store.JobFilter{States: jobStates})
	if err != nil {
		return err
	}

	poolName := map[string]string{}
	for _, p := range pools {
		poolName[p.ID] = p.Name
	}
	for _, n := range nodes {
		if !n.Certificate.NotAfter.IsZero() {
			ch <- c.gauge(certExpiryDesc, float64(n.Certificate.NotAfter.Unix()), n.Name)
		}
	}

	type imageKey struct {
		pool  string
		kind  store.ImageKind
		state store.ImageState
	}
	counts := map[imageKey]int{}
	for _, p := range pools {
		for _, k := range imageKinds {
			for _, s := range imageStates {
				counts[imageKey{p.Name, k, s}] = 0
			}
		}
	}
	for _, ic := range imageCounts {
		if name, ok := poolName[ic.PoolID]; ok {
			counts[imageKey{name, ic.Kind, ic.State}] += ic.N
		}
	}
	for k, n := range counts {
		ch <- c.gauge(imagesDesc, float64(n), k.pool, string(k.kind), string(k.state))
	}

	byState := map[store.JobState]int{}
	for _, j := range jobs {
		byState[j.State]++
	}
	for _, s := range jobStates {
		ch <- c.gauge(jobsDesc, float64(byState[s]), string(s))
	}

	used := map[string]store.PoolUsage{}
	for _, u := range usages {
		used[u.PoolID] = u
	}
	for _, p := range pools {
		u := used[p.ID]
		ch <- c.gauge(poolMountedDesc, float64(u.MountedNodes), p.Name)
		if u.MountedNodes > 0 {
			ch <- c.gauge(poolFreeDesc, float64(u.FreeBytes), p.Name)
			ch <- c.gauge(poolSizeDesc, float64(u.TotalBytes), p.Name)
		}
	}
	return nil
}
