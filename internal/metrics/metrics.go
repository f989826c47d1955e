// Package metrics defines the control plane's Prometheus metrics that
// operators alert on, all named quarry_… and all of low cardinality (labels
// are results, reasons, states, pools and nodes — never ids, URLs or
// names a caller chooses).
//
// Two kinds:
//   - Metrics holds the counters and histograms that need an event to
//     count (a download finished, a scan ran, an authentication failed).
//     Controllers call its methods from one line each; every method of a
//     nil *Metrics does nothing, so code built without metrics (tests)
//     needs no checks.
//   - StoreCollector reads the store when Prometheus scrapes, with a short
//     timeout, for the gauges of how things are now (images by state, pool
//     space per node, certificate expiry, jobs by state), so that no
//     controller has to keep them up to date.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the event-counted metrics.
type Metrics struct {
	downloadsFinished *prometheus.CounterVec
	downloadDuration  *prometheus.HistogramVec
	fetchedBytes      prometheus.Counter
	retries           prometheus.Counter
	failovers         prometheus.Counter
	scans             *prometheus.CounterVec
	scanDuration      prometheus.Histogram
	filesSeen         prometheus.Counter
	enrollments       *prometheus.CounterVec
	authFailures      *prometheus.CounterVec
}

// Download results.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
	Cancelled = "cancelled"
)

// New makes the metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		downloadsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quarry_downloads_finished_total",
			Help: "Download jobs that ended, by result (succeeded, failed, cancelled).",
		}, []string{"result"}),
		downloadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "quarry_download_duration_seconds",
			Help:    "Time from a download job's creation to its end, queueing and retries included, by result.",
			Buckets: prometheus.ExponentialBuckets(1, 3, 10), // 1 s … 5.5 h
		}, []string{"result"}),
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quarry_download_fetched_bytes_total",
			Help: "Bytes fetched from origins by downloads that succeeded, as their agents report them (bytes a resume did not need again are not counted).",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quarry_download_retries_total",
			Help: "Failed download attempts; each is retried until the job's retry budget is spent.",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quarry_download_failovers_total",
			Help: "Downloads moved to another node because their node was lost.",
		}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quarry_scans_total",
			Help: "Pool scans by trigger (startup, periodic, manual, event, settle) and result (ok, skipped).",
		}, []string{"trigger", "result"}),
		scanDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "quarry_scan_duration_seconds",
			Help:    "Time one pool scan took, listing and reconciling.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms … 4.4 min
		}),
		filesSeen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quarry_scan_files_seen_total",
			Help: "Files the nodes listed in pool scans.",
		}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quarry_enrollments_total",
			Help: "Agent enrollments by result (ok, or the Connect code of the refusal).",
		}, []string{"result"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quarry_auth_failures_total",
			Help: "Refused authentications and authorizations by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.downloadsFinished, m.downloadDuration, m.fetchedBytes, m.retries, m.failovers,
			m.scans, m.scanDuration, m.filesSeen, m.enrollments, m.authFailures)
	}
	return m
}

// DownloadFinished counts a download job that ended with result
// (Succeeded, Failed, Cancelled) after d, having fetched fetched bytes.
func (m *Metrics) DownloadFinished(result string, d time.Duration, fetched int64) {
	if m == nil {
		return
	}
	m.downloadsFinished.WithLabelValues(result).Inc()
	m.downloadDuration.WithLabelValues(result).Observe(d.Seconds())
	if fetched > 0 {
		m.fetchedBytes.Add(float64(fetched))
	}
}

// DownloadRetries counts n failed download attempts.
func (m *Metrics) DownloadRetries(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.retries.Add(float64(n))
}

// DownloadResumed counts a download resumed by a node; moved says it is
// not the node that ran it before (a failover).
func (m *Metrics) DownloadResumed(moved bool) {
	if m == nil || !moved {
		return
	}
	m.failovers.Inc()
}

// ScanFinished counts one pool scan by its trigger, whether it was skipped,
// and how long it took.
func (m *Metrics) ScanFinished(trigger string, skipped bool, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if skipped {
		result = "skipped"
	}
	m.scans.WithLabelValues(trigger, result).Inc()
	m.scanDuration.Observe(d.Seconds())
}

// ScanFilesSeen counts the files a node listed for a scan.
func (m *Metrics) ScanFilesSeen(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.filesSeen.Add(float64(n))
}

// Enrolled counts an enrollment: result is "ok" or the refusal's Connect
// code.
func (m *Metrics) Enrolled(result string) {
	if m == nil {
		return
	}
	m.enrollments.WithLabelValues(result).Inc()
}

// Reasons an authentication or authorization is refused.
const (
	AuthNoToken          = "no_token"
	AuthMalformed        = "malformed_header"
	AuthInvalidToken     = "invalid_token" // unknown, expired or revoked
	AuthSessionEnded     = "session_ended"
	AuthCSRF             = "csrf_missing"
	AuthRole             = "role_too_small"
	AuthNotInPolicy      = "not_in_policy"
	AuthJoinTokenRefused = "join_token_refused"
	AuthRateLimited      = "rate_limited"
)

// AuthFailed counts a refused call by reason (one of the Auth… constants).
func (m *Metrics) AuthFailed(reason string) {
	if m == nil {
		return
	}
	m.authFailures.WithLabelValues(reason).Inc()
}
