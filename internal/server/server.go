// Package server assembles the control plane: the store, the node link, the
// public Connect API, the web page, health and metrics endpoints, all on one
// HTTP listener that speaks HTTP/1.1 and h2c (Connect, gRPC and gRPC-Web).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quarry-project/quarry/internal/api"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// Config configures the control plane. Zero values take the defaults.
type Config struct {
	// Listen is the API address (default ":8080").
	Listen string
	// DataDir holds the SQLite database and, later, the CA (required).
	DataDir string
	// DatabaseURL selects PostgreSQL (postgres://...) instead of SQLite.
	DatabaseURL string
	// HealthInterval is the node health-check interval (default 5 s).
	HealthInterval time.Duration
	// MaxBackoff caps the retry delay of failing nodes (default 6 × interval).
	MaxBackoff time.Duration
	Version    string
	Logger     *slog.Logger
}

// Server is an assembled control plane.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	link    *nodelink.Link
	chooser *placement.Chooser
	handler http.Handler
}

// maxRequestBytes bounds a public API request body.
const maxRequestBytes = 4 << 20

// New opens the store and wires every part. Close releases the store.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = ":8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DataDir == "" {
		return nil, errors.New("--data-dir is required: the control plane keeps its database there")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	link := nodelink.New(nodelink.Config{
		Store:      st,
		Interval:   cfg.HealthInterval,
		MaxBackoff: cfg.MaxBackoff,
		Registerer: reg,
		Logger:     cfg.Logger,
	})
	s := &Server{cfg: cfg, log: cfg.Logger, store: st, link: link,
		chooser: &placement.Chooser{Store: st, Link: link}}
	s.handler = s.routes(reg)
	return s, nil
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		if strings.HasPrefix(cfg.DatabaseURL, "postgres://") || strings.HasPrefix(cfg.DatabaseURL, "postgresql://") {
			return nil, errors.New("PostgreSQL is not supported by this build yet; leave --database-url empty to use SQLite in --data-dir")
		}
		return nil, fmt.Errorf("--database-url %q: only postgres:// URLs are accepted", cfg.DatabaseURL)
	}
	path := filepath.Join(cfg.DataDir, "quarry.db")
	st, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("opening the database %s: %w", path, err)
	}
	return st, nil
}

func (s *Server) routes(reg *prometheus.Registry) http.Handler {
	now := time.Now
	opts := []connect.HandlerOption{
		connect.WithInterceptors(api.Interceptors(s.log, reg)...),
		connect.WithReadMaxBytes(maxRequestBytes),
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, r any) error {
			s.log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", r)
			return connect.NewError(connect.CodeInternal, errors.New("internal error; the control plane's log has the details"))
		}),
	}
	mux := http.NewServeMux()
	mux.Handle(quarryv1connect.NewNodeServiceHandler(&api.NodeService{Store: s.store, Link: s.link, Logger: s.log, Now: now}, opts...))
	mux.Handle(quarryv1connect.NewStoragePoolServiceHandler(&api.PoolService{Store: s.store, Link: s.link, Logger: s.log, Now: now}, opts...))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /{$}", homePage(s.cfg.Version))
	return mux
}

// Handler returns the HTTP handler (for tests that bring their own server).
func (s *Server) Handler() http.Handler { return s.handler }

// Store returns the server's store.
func (s *Server) Store() store.Store { return s.store }

// Placement returns the node-choice helper every operation uses.
func (s *Server) Placement() *placement.Chooser { return s.chooser }

// Serve runs the health loop and serves ln until ctx is done, then shuts
// down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		s.link.Run(ctx)
	}()
	defer func() { <-loopDone }()

	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           s.handler,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// Run listens on the configured address and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Listen, err)
	}
	s.log.Info("control plane listening", "address", ln.Addr().String(), "data_dir", s.cfg.DataDir)
	return s.Serve(ctx, ln)
}

// Close releases the store.
func (s *Server) Close() error { return s.store.Close() }
