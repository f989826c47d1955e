package nodelink

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quarry-project/quarry/internal/store"
)

type metrics struct {
	checks   *prometheus.CounterVec
	duration prometheus.Histogram
	ready    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quarry_node_checks_total",
			Help: "Node health checks by result.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "quarry_node_check_duration_seconds",
			Help:    "Time an agent took to answer a health check.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "quarry_node_ready",
			Help: "1 when the node's last health check succeeded.",
		}, []string{"node"}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.duration, m.ready)
	}
	return m
}

func (m *metrics) observe(ok bool, d time.Duration) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.checks.WithLabelValues(result).Inc()
	m.duration.Observe(d.Seconds())
}

func (m *metrics) setState(n store.Node) {
	v := 0.0
	if n.State == store.NodeReady {
		v = 1
	}
	m.ready.WithLabelValues(n.Name).Set(v)
}
