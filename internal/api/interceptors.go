package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// Interceptors returns the observing part of the chain every public handler
// runs through, outermost first; Auth.Interceptor follows it (see
// server.routes), so refused calls are logged and counted too.
func Interceptors(log *slog.Logger, reg prometheus.Registerer) []connect.Interceptor {
	return []connect.Interceptor{newObserver(log, reg)}
}

// observer logs every call at debug (failures at info) and counts calls by
// procedure and code.
type observer struct {
	log      *slog.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newObserver(log *slog.Logger, reg prometheus.Registerer) *observer {
	o := &observer{
		log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quarry_api_requests_total",
			Help: "Public API calls by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "quarry_api_request_duration_seconds",
			Help: "Public API call latency by procedure, from the request's arrival (Arrived): authentication and the wait for a read slot count.",
			// 20 ms, the latency a page of a list is meant to stay under
			// at scale, is a bound.
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30},
		}, []string{"procedure"}),
	}
	if reg != nil {
		reg.MustRegister(o.requests, o.duration)
	}
	return o
}

func (o *observer) record(ctx context.Context, procedure string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	o.requests.WithLabelValues(procedure, code).Inc()
	o.duration.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
	if err != nil {
		o.log.InfoContext(ctx, "api call failed", "procedure", procedure, "code", code, "err", err)
		return
	}
	o.log.DebugContext(ctx, "api call", "procedure", procedure, "duration", time.Since(start))
}

type arrivalKey struct{}

// Arrived returns r carrying the time it arrived, from which the API's
// duration histogram times its call: what runs before the handler
// (authentication, the wait for a read slot) is part of what a client
// waits for.
func Arrived(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), arrivalKey{}, time.Now()))
}

// arrival is when the call's request arrived (Arrived), or now.
func arrival(ctx context.Context) time.Time {
	if t, ok := ctx.Value(arrivalKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}

func (o *observer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := arrival(ctx)
		resp, err := next(ctx, req)
		o.record(ctx, req.Spec().Procedure, start, err)
		return resp, err
	}
}

func (o *observer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := arrival(ctx)
		err := next(ctx, conn)
		if errors.Is(err, context.Canceled) {
			err = nil // the watcher went away; not a failure
		}
		o.record(ctx, conn.Spec().Procedure, start, err)
		return err
	}
}

// ReadLimit returns an interceptor that lets at most n reads (unary calls
// whose method starts with List or Get) run at once; the others wait their
// turn, or until their caller gives up. Reads only use the CPU and the
// database: with dozens at once, Go's scheduler shared the CPU out among
// them, and the control plane's background work got a sliver of it. Its
// health checks wait for one database writer, which then ran a fiftieth of
// the time: nodes went unchecked for three intervals while clients listed
// images back to back.
func ReadLimit(n int) connect.Interceptor {
	slots := make(chan struct{}, n)
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if !isRead(req.Spec().Procedure) {
				return next(ctx, req)
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			defer func() { <-slots }()
			return next(ctx, req)
		}
	})
}

// isRead tells a read-only procedure ("/quarry.v1.ImageService/ListImages")
// by its method's name.
func isRead(procedure string) bool {
	method := procedure[strings.LastIndexByte(procedure, '/')+1:]
	return strings.HasPrefix(method, "List") || strings.HasPrefix(method, "Get")
}
