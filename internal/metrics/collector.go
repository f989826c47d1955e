package metrics

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
}

// series makes the series of one scrape, which share their label pairs:
// every series of a pool (24 of quarry_images alone) has that pool's pair,
// and so on. At 1,000 pools and 5,000 nodes a scrape sends about 32,000
// series: as prometheus's constant metrics, each with pairs of its own,
// they are half as much garbage again (TestBenchmarkScrape), and keeping
// them from one scrape to the next to send them again held 20 MB of heap.
// Nothing is kept between scrapes.
type series struct {
	pairs map[labelPair]*dto.LabelPair
}

type labelPair struct{ name, value string }

// gaugeDesc describes a gauge of the collector, with its label names.
type gaugeDesc struct {
	*prometheus.Desc
	name   string
	labels []string
	// sorted is the order of labels by name, in which a series lists its
	// pairs.
	sorted []int
}

func newGaugeDesc(name, help string, labels ...string) *gaugeDesc {
	sorted := make([]int, len(labels))
	for i := range sorted {
		sorted[i] = i
	}
	slices.SortFunc(sorted, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	return &gaugeDesc{prometheus.NewDesc(name, help, labels, nil), name, labels, sorted}
}

// gauge is one series the collector sends, in one allocation; it does not
// change once sent.
type gauge struct {
	desc  *prometheus.Desc
	value float64
	dto   dto.Gauge
	n     int
	pairs [3]*dto.LabelPair // the first n, sorted by name, shared with other series
}

func (g *gauge) Desc() *prometheus.Desc { return g.desc }

// Write fills m with the series, sharing its parts: a written metric is
// immutable by prometheus's contract.
func (g *gauge) Write(m *dto.Metric) error {
	m.Label = g.pairs[:g.n:g.n]
	m.Gauge = &g.dto
	return nil
}

var (
	imagesDesc = newGaugeDesc("quarry_images",
		"Images in the library by pool, kind (CLOUD_IMAGE, ISO, DISK) and state.", "pool", "kind", "state")
	jobsDesc = newGaugeDesc("quarry_download_jobs",
		"Download jobs not finished yet, by state (QUEUED, RUNNING).", "state")
	// The pools' gauges are per pool, not per node and pool: a shared pool
	// is one filesystem however many nodes mount it, and per node and pool
	// a cluster of 5,000 nodes made 100,000 series of each.
	poolFreeDesc = newGaugeDesc("quarry_pool_free_bytes",
		"The least free bytes a node that mounts the pool reported at its last check.", "pool")
	poolSizeDesc = newGaugeDesc("quarry_pool_size_bytes",
		"The most total bytes a node that mounts the pool reported at its last check.", "pool")
	poolMountedDesc = newGaugeDesc("quarry_pool_mounted_nodes",
		"Nodes that mounted the pool at their last check (0: no node can reach it).", "pool")
	certExpiryDesc = newGaugeDesc("quarry_node_certificate_expiry_timestamp_seconds",
		"When the certificate of the node's agent expires (Unix time); the control plane renews it when a third is left.", "node")
	settlingDesc = newGaugeDesc("quarry_scan_settling_files",
		"Files the last scan of a pool left waiting until their writer is done.", "pool")

	gaugeDescs = []*gaugeDesc{imagesDesc, jobsDesc, poolFreeDesc, poolSizeDesc, poolMountedDesc, certExpiryDesc, settlingDesc}
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
	for _, d := range gaugeDescs {
		ch <- d.Desc
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
	s := &series{pairs: map[labelPair]*dto.LabelPair{}}
	if err := c.collect(ctx, ch, s); err != nil {
		log := c.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("metrics: reading the store for a scrape failed; the library's gauges are left out", "err", err)
	}
	if c.Settling != nil {
		for pool, n := range c.Settling() {
			ch <- s.gauge(settlingDesc, float64(n), pool)
		}
	}
}

// gauge returns the series of d with the label values at value v.
func (s *series) gauge(d *gaugeDesc, v float64, values ...string) prometheus.Metric {
	g := &gauge{desc: d.Desc, value: v, n: len(d.sorted)}
	g.dto.Value = &g.value
	for i, l := range d.sorted {
		k := labelPair{d.labels[l], values[l]}
		p := s.pairs[k]
		if p == nil {
			p = &dto.LabelPair{Name: &k.name, Value: &k.value}
			s.pairs[k] = p
		}
		g.pairs[i] = p
	}
	return g
}

func (c *StoreCollector) collect(ctx context.Context, ch chan<- prometheus.Metric, s *series) error {
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
			ch <- s.gauge(certExpiryDesc, float64(n.Certificate.NotAfter.Unix()), n.Name)
		}
	}

	type imageKey struct {
		pool  string
		kind  store.ImageKind
		state store.ImageState
	}
	counts := map[imageKey]int{}
	for _, ic := range imageCounts {
		counts[imageKey{ic.PoolID, ic.Kind, ic.State}] += ic.N
	}
	for _, p := range pools {
		for _, k := range imageKinds {
			for _, st := range imageStates {
				key := imageKey{p.ID, k, st}
				ch <- s.gauge(imagesDesc, float64(counts[key]), p.Name, string(k), string(st))
				delete(counts, key)
			}
		}
	}
	// A kind or state the lists above lack still counts.
	for k, n := range counts {
		if name, ok := poolName[k.pool]; ok {
			ch <- s.gauge(imagesDesc, float64(n), name, string(k.kind), string(k.state))
		}
	}

	byState := map[store.JobState]int{}
	for _, j := range jobs {
		byState[j.State]++
	}
	for _, st := range jobStates {
		ch <- s.gauge(jobsDesc, float64(byState[st]), string(st))
	}

	used := map[string]store.PoolUsage{}
	for _, u := range usages {
		used[u.PoolID] = u
	}
	for _, p := range pools {
		u := used[p.ID]
		ch <- s.gauge(poolMountedDesc, float64(u.MountedNodes), p.Name)
		if u.MountedNodes > 0 {
			ch <- s.gauge(poolFreeDesc, float64(u.FreeBytes), p.Name)
			ch <- s.gauge(poolSizeDesc, float64(u.TotalBytes), p.Name)
		}
	}
	return nil
}
