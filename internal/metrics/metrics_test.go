package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestNilMetrics: code built without metrics calls them all the same.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.DownloadFinished(Succeeded, time.Second, 1)
	m.DownloadRetries(1)
	m.DownloadResumed(true)
	m.ScanFinished("manual", false, time.Second)
	m.ScanFilesSeen(1)
	m.Enrolled("ok")
	m.AuthFailed(AuthNoToken)
}

func TestCounts(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.DownloadFinished(Failed, time.Minute, 0)
	m.DownloadResumed(false)
	m.DownloadResumed(true)
	m.DownloadRetries(3)
	m.ScanFinished("event", true, time.Millisecond)
	for _, tc := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.downloadsFinished.WithLabelValues(Failed), 1},
		{m.failovers, 1},
		{m.retries, 3},
		{m.scans.WithLabelValues("event", "skipped"), 1},
		{m.fetchedBytes, 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%v = %v, want %v", tc.c, got, tc.want)
		}
	}
}
