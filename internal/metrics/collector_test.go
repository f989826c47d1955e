package metrics

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/quarry-project/quarry/internal/store"
)

// fakeStore answers what StoreCollector reads from a store, from memory.
type fakeStore struct {
	store.Store // the rest: unused
	pools       []store.Pool
	nodes       []store.Node
	usages      []store.PoolUsage
	counts      []store.ImageCount
}

func (f *fakeStore) ListPools(context.Context) ([]store.Pool, error) { return f.pools, nil }
func (f *fakeStore) ListNodes(context.Context) ([]store.Node, error) { return f.nodes, nil }
func (f *fakeStore) PoolUsages(context.Context) ([]store.PoolUsage, error) {
	return f.usages, nil
}
func (f *fakeStore) CountImages(context.Context) ([]store.ImageCount, error) {
	return f.counts, nil
}
func (f *fakeStore) ListJobs(context.Context, store.JobFilter) ([]store.Job, error) {
	return nil, nil
}

// TestCollectorSeries: a scrape sends every series with the store's values
// as they are at that scrape, whether the scrape before sent the series
// with another value, with the same, or not at all; a pool deleted takes
// its series with it.
func TestCollectorSeries(t *testing.T) {
	f := &fakeStore{
		pools:  []store.Pool{{ID: "p1", Name: "one"}, {ID: "p2", Name: "two"}},
		nodes:  []store.Node{{Name: "n1", Certificate: store.NodeCertificate{NotAfter: time.Unix(2000, 0)}}},
		usages: []store.PoolUsage{{PoolID: "p1", MountedNodes: 1, FreeBytes: 10, TotalBytes: 20}},
		counts: []store.ImageCount{{PoolID: "p1", Kind: store.KindISO, State: store.ImageReady, N: 3}},
	}
	c := &StoreCollector{Store: f}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	expect := func(what string, want map[string]float64, absent ...string) {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, fam := range fams {
			for _, m := range fam.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				got[fam.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue()
			}
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: %s = %v (sent: %v), want %v", what, k, g, ok, v)
			}
		}
		for _, k := range absent {
			if _, ok := got[k]; ok {
				t.Errorf("%s: %s was sent", what, k)
			}
		}
	}
	expect("first scrape", map[string]float64{
		"quarry_images{kind=ISO,pool=one,state=READY}":              3,
		"quarry_images{kind=ISO,pool=two,state=READY}":              0,
		"quarry_pool_free_bytes{pool=one}":                          10,
		"quarry_node_certificate_expiry_timestamp_seconds{node=n1}": 2000,
		"quarry_pool_mounted_nodes{pool=two}":                       0,
	})
	f.counts[0].N = 5
	f.usages[0].FreeBytes = 7
	expect("values changed", map[string]float64{
		"quarry_images{kind=ISO,pool=one,state=READY}": 5,
		"quarry_images{kind=ISO,pool=two,state=READY}": 0,
		"quarry_pool_free_bytes{pool=one}":             7,
	})
	f.pools, f.usages, f.counts = f.pools[1:], nil, nil
	expect("pool one deleted", map[string]float64{
		"quarry_images{kind=ISO,pool=two,state=READY}": 0,
	}, "quarry_images{kind=ISO,pool=one,state=READY}", "quarry_pool_free_bytes{pool=one}", "quarry_pool_mounted_nodes{pool=one}")
	if n := testutil.CollectAndCount(c, "quarry_images"); n != len(imageKinds)*len(imageStates) {
		t.Errorf("%d quarry_images series for one pool, want %d", n, len(imageKinds)*len(imageStates))
	}
	// The series of one pool share its label pair.
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	pairs := map[*dto.LabelPair]bool{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, p := range d.GetLabel() {
			pairs[p] = true
		}
	}
	// pool=two, node=n1, its kinds, states and jobs' states.
	if want := 2 + len(imageKinds) + len(imageStates) + len(jobStates); len(pairs) != want {
		t.Errorf("a scrape made %d label pairs, want %d", len(pairs), want)
	}
}

// TestBenchmarkScrape prints what a scrape of the store's gauges allocates
// and takes at 1,000 pools and 5,000 nodes, against the same series sent
// as prometheus's constant metrics (each with label pairs of its own, as
// before they shared them; the store's reads are not counted in that
// reference): interleaved, best of 5 each. It prints figures, it asserts
// no budget.
func TestBenchmarkScrape(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run")
	}
	f := &fakeStore{}
	for p := range 1000 {
		id := fmt.Sprintf("pool-%04d", p)
		f.pools = append(f.pools, store.Pool{ID: id, Name: fmt.Sprintf("p%04d", p)})
		f.usages = append(f.usages, store.PoolUsage{PoolID: id, MountedNodes: 5, FreeBytes: 3 << 40, TotalBytes: 4 << 40})
		f.counts = append(f.counts, store.ImageCount{PoolID: id, Kind: store.KindISO, State: store.ImageReady, N: 100})
	}
	for n := range 5000 {
		f.nodes = append(f.nodes, store.Node{Name: fmt.Sprintf("node-%04d", n), Certificate: store.NodeCertificate{NotAfter: time.Unix(int64(2e9+n), 0)}})
	}
	shared := prometheus.NewRegistry()
	shared.MustRegister(&StoreCollector{Store: f})
	fams, err := shared.Gather()
	if err != nil {
		t.Fatal(err)
	}
	constant := prometheus.NewRegistry()
	constant.MustRegister(constSeries(fams))
	scrape := func(reg *prometheus.Registry) (mb float64, took time.Duration) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
		took = time.Since(t0)
		runtime.ReadMemStats(&after)
		return float64(after.TotalAlloc-before.TotalAlloc) / 1e6, took
	}
	type figure struct {
		mb   float64
		took time.Duration
	}
	best := map[string]figure{}
	for range 5 {
		for _, r := range []struct {
			name string
			reg  *prometheus.Registry
		}{{"constant metrics", constant}, {"shared pairs", shared}} {
			mb, took := scrape(r.reg)
			t.Logf("%-16s: %5.1f MB allocated, %v", r.name, mb, took.Round(time.Millisecond))
			if b, ok := best[r.name]; !ok || took < b.took {
				best[r.name] = figure{mb, took}
			}
		}
	}
	t.Logf("a scrape with shared label pairs allocates %.2f× and takes %.2f× (best of 5) the same series as constant metrics",
		best["shared pairs"].mb/best["constant metrics"].mb, best["shared pairs"].took.Seconds()/best["constant metrics"].took.Seconds())
}

// constSeries sends the series of the families again, each as a constant
// metric built at every scrape.
type constSeries []*dto.MetricFamily

func (constSeries) Describe(chan<- *prometheus.Desc) {} // unchecked

func (fams constSeries) Collect(ch chan<- prometheus.Metric) {
	descs := map[string]*gaugeDesc{}
	for _, d := range gaugeDescs {
		descs[d.name] = d
	}
	for _, fam := range fams {
		d := descs[fam.GetName()]
		for _, m := range fam.GetMetric() {
			values := make([]string, len(d.labels))
			for i, l := range d.labels {
				for _, p := range m.GetLabel() {
					if p.GetName() == l {
						values[i] = p.GetValue()
					}
				}
			}
			ch <- prometheus.MustNewConstMetric(d.Desc, prometheus.GaugeValue, m.GetGauge().GetValue(), values...)
		}
	}
}
