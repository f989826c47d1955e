package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// scrape reads the control plane's /metrics.
func scrape(t *testing.T, s *quarrytest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the series of name whose labels include
// labels ("k=v,k=v"); ok is false when there is none.
func metricValue(fams map[string]*dto.MetricFamily, name, labels string) (v float64, ok bool) {
	f := fams[name]
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for _, kv := range strings.Split(labels, ",") {
			if k, v, found := strings.Cut(kv, "="); found && have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics runs what operators alert on through a real cluster and
// reads /metrics: every name starts with quarry_ (besides the Go runtime's
// and the process's), and downloads, scans, images, pool space,
// certificates, enrollments and refused calls are counted.
func TestMetrics(t *testing.T) {
	c := newCluster(t, quarrytest.WithScans(time.Hour, -1, 200*time.Millisecond))
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	o := origintest.New(t)
	f := o.Add("/disk.img", origintest.Random(2*mib, 7))
	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	if j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	writeISO(t, filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/local"), "iso/a.iso"), "A", 2*mib)
	waitImage(t, c.s, pool.GetId(), "iso/a.iso", quarryv1.ImageState_IMAGE_STATE_READY, 10*time.Second)
	scan(t, c.s, pool.GetId())
	// One refused call without a token, one with a made-up token.
	c.s.Anonymous().Nodes.ListNodes(t.Context(), connect.NewRequest(&quarryv1.ListNodesRequest{}))
	c.s.ClientsFor("qk_0123456789ab_"+strings.Repeat("0", 64)).Nodes.ListNodes(t.Context(), connect.NewRequest(&quarryv1.ListNodesRequest{}))

	fams := scrape(t, c.s)
	for name := range fams {
		if !strings.HasPrefix(name, "quarry_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s does not start with quarry_", name)
		}
	}
	now := float64(time.Now().Unix())
	for _, tc := range []struct {
		name, labels string
		ok           func(float64) bool
		want         string
	}{
		{"quarry_downloads_finished_total", "result=succeeded", eq(1), "1"},
		{"quarry_download_duration_seconds", "result=succeeded", eq(1), "1 observation"},
		{"quarry_download_fetched_bytes_total", "", atLeast(2 * mib), "at least 2 MiB"},
		{"quarry_download_retries_total", "", eq(0), "0"},
		{"quarry_download_failovers_total", "", eq(0), "0"},
		{"quarry_download_jobs", "state=RUNNING", eq(0), "0"},
		{"quarry_download_jobs", "state=QUEUED", eq(0), "0"},
		{"quarry_scans_total", "trigger=manual,result=ok", atLeast(1), "at least 1"},
		{"quarry_scan_duration_seconds", "", atLeast(1), "observations"},
		{"quarry_scan_files_seen_total", "", atLeast(1), "at least 1"},
		{"quarry_scan_settling_files", "pool=local", eq(0), "0"},
		{"quarry_images", "pool=local,kind=ISO,state=READY", eq(1), "1"},
		{"quarry_images", "pool=local,kind=CLOUD_IMAGE,state=READY", eq(1), "1"},
		{"quarry_images", "pool=local,kind=CLOUD_IMAGE,state=ERROR", eq(0), "0"},
		{"quarry_pool_free_bytes", "pool=local", atLeast(1), "> 0"},
		{"quarry_pool_size_bytes", "pool=local", atLeast(1), "> 0"},
		{"quarry_pool_mounted_nodes", "pool=local", eq(1), "1 (n1)"},
		{"quarry_node_certificate_expiry_timestamp_seconds", "node=n1", atLeast(now), "in the future"},
		{"quarry_node_ready", "node=n1", eq(1), "1"},
		{"quarry_enrollments_total", "result=ok", eq(3), "3 (one per agent)"},
		{"quarry_auth_failures_total", "reason=no_token", atLeast(1), "at least 1"},
		{"quarry_auth_failures_total", "reason=invalid_token", atLeast(1), "at least 1"},
		{"go_sql_open_connections", "db_name=quarry", atLeast(1), "at least 1 (the store's)"},
	} {
		v, ok := metricValue(fams, tc.name, tc.labels)
		if !ok || !tc.ok(v) {
			t.Errorf("%s{%s} = %v (present %v), want %s", tc.name, tc.labels, v, ok, tc.want)
		}
	}
}

func eq(want float64) func(float64) bool     { return func(v float64) bool { return v == want } }
func atLeast(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }
