// Package server assembles the control plane: the store, the node link, the
// public Connect API, the web page, health and metrics endpoints, all on one
// HTTP listener that speaks HTTP/1.1 and h2c (Connect, gRPC and gRPC-Web).
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quarry-project/quarry/internal/api"
	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/catalog"
	"github.com/quarry-project/quarry/internal/dirlock"
	"github.com/quarry-project/quarry/internal/events"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/httpguard"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
	"github.com/quarry-project/quarry/internal/upload"
	"github.com/quarry-project/quarry/internal/urlpolicy"
	"github.com/quarry-project/quarry/web"
)

// Config configures the control plane. Zero values take the defaults.
type Config struct {
	// Listen is the API address (default ":8080").
	Listen string
	// DataDir holds the SQLite database and the CA (in ca/; required).
	DataDir string
	// DatabaseURL selects PostgreSQL (postgres://...) instead of SQLite.
	DatabaseURL string
	// SecretKeyFile holds the key that seals the CA in a PostgreSQL
	// database (default <data-dir>/secret.key; the first replica creates
	// it, the others need a copy).
	SecretKeyFile string
	// LeaseTTL is how long the leader lease lasts unrenewed (default 6 s):
	// a replica that dies is replaced within about 7/6 of it.
	LeaseTTL time.Duration
	// HealthInterval is the node health-check interval (default 5 s).
	HealthInterval time.Duration
	// MaxBackoff caps the retry delay of failing nodes (default 6 × interval).
	MaxBackoff time.Duration
	// AuthFailures is how many failed authentications one client (an IP, an
	// IPv6 /64) may make in a row before all its calls are refused (default
	// 10); they come back at AuthFailures per AuthFailureWindow (default 1 min).
	AuthFailures      int
	AuthFailureWindow time.Duration
	// SessionTTL is how long a dashboard login lasts (default 12 h).
	SessionTTL time.Duration
	// SweepInterval is how often expired sessions and single sign-on
	// tokens are removed (default 10 min).
	SweepInterval time.Duration
	// AgentCertTTL is the lifetime of the certificates agents get at
	// enrollment and renewal (default 30 days); the node link renews one
	// when less than a third of it remains.
	AgentCertTTL time.Duration
	// ScanDelay is the wait before the first ISO scan (default 5 s);
	// ScanInterval the time between periodic scans (default 5 min, negative
	// turns them off); ScanSettle how long a file no node saw closed must
	// stay unchanged before it is registered (default 3 s).
	ScanDelay    time.Duration
	ScanInterval time.Duration
	ScanSettle   time.Duration
	// CatalogFiles add entries to the built-in catalog (--catalog).
	CatalogFiles []string
	// CatalogRefresh is how often upstream is checked for new builds of
	// the catalog images present in pools (--catalog-refresh; 0: only when
	// asked); CatalogKeep how many builds are kept per pool (default 2).
	CatalogRefresh time.Duration
	CatalogKeep    int
	// URLAllow and URLDeny are the download URL policy's host and CIDR
	// lists (--url-allow, --url-deny); AllowLoopbackURLs lets downloads
	// reach loopback addresses (tests, local mirrors).
	URLAllow, URLDeny string
	AllowLoopbackURLs bool
	// MaxDownloadsPerNode and MaxDownloads bound downloads running at once
	// (default 2 and 8).
	MaxDownloadsPerNode, MaxDownloads int
	// EventHeartbeat is how often an idle event stream sends an empty
	// message and checks its caller's credentials again (15 s).
	EventHeartbeat time.Duration
	// DownloadMaxAttempts is the retry budget of a download: failed
	// attempts in a row without progress before it fails (10), within at
	// most DownloadRetryWindow (24 h).
	DownloadMaxAttempts int
	DownloadRetryWindow time.Duration
	// DownloadRetryBase is the wait after a download's first failed
	// attempt (2 s); it doubles with each further one, up to 10 min.
	DownloadRetryBase time.Duration
	// TrustedProxies are the reverse proxies (CIDRs, addresses) whose
	// Forwarded, X-Forwarded-For and X-Forwarded-Proto headers are
	// believed (--trusted-proxy); nobody else's are.
	TrustedProxies []string
	// BodyIdle and BodyMinRate hold request bodies to a pace: silent no
	// longer than BodyIdle (default 20 s), and on average at least
	// BodyMinRate bytes a second after the first BodyIdle (default 1 KiB).
	BodyIdle    time.Duration
	BodyMinRate float64
	// MaxConnsPerClient caps the connections one client address (an IPv6
	// /64) holds open (default 64); trusted proxies are not capped.
	MaxConnsPerClient int
	// TLSCertFile and TLSKeyFile serve the API over TLS with that
	// certificate, reloaded when the files change (--tls-cert, --tls-key);
	// TLSAuto with one from the control plane's CA for TLSNames and the
	// listen addresses (--tls-auto, --tls-name). InsecureHTTP silences the
	// warning about plain HTTP on an address other hosts reach.
	TLSCertFile, TLSKeyFile string
	TLSAuto                 bool
	TLSNames                []string
	InsecureHTTP            bool
	// UploadExpiry: an upload not touched for this long is removed with its
	// partial file (default 24 h). MaxUploadsPerNode and MaxUploads bound
	// uploads in progress at once (default 4 and 16). UploadMaxSize is the
	// largest upload accepted (default 4 TiB).
	UploadExpiry                  time.Duration
	MaxUploadsPerNode, MaxUploads int
	UploadMaxSize                 int64
	// OIDC turns on single sign-on for the dashboard when OIDC.Issuer is
	// set (--oidc-issuer and the other --oidc-* flags).
	OIDC api.OIDCConfig
	// Clock is the time that authentication goes by: token expiry, sessions,
	// the failure limit (default time.Now; tests move it).
	Clock   func() time.Time
	Version string
	Logger  *slog.Logger
}

// Server is an assembled control plane.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	link    *nodelink.Link
	chooser *placement.Chooser
	// issuer signs node certificates and copy grants.
	issuer  *issuer
	uploads *upload.Service
	catalog *catalog.Catalog
	policy  *urlpolicy.Policy
	// agentPolicy is the URL policy the agents' downloads go by.
	agentPolicy *agentv1.URLPolicy
	changes     *events.Hub // what the dashboards' event streams hear

	// Leadership among replicas (leader.go): the term this replica leads,
	// nil while it follows; lost is signalled by a fenced write.
	term      atomic.Pointer[term]
	lost      chan struct{}
	resweep   chan struct{} // the leader looks at every unfinished job
	replica   string
	leaseTTL  time.Duration
	leaseSeen atomic.Pointer[store.Lease]
	// bus carries events and work between replicas (PostgreSQL only).
	bus *bus
	// answering guards inFlight, the followers' requests being answered.
	answering sync.Mutex
	inFlight  map[string]bool
	// statements counts the SQL statements run against the store.
	statements func() uint64
	ca         *pki.CA
	metrics    *metrics.Metrics
	lock       *dirlock.Lock
	handler    http.Handler
	proxies    *httpguard.Proxies
	// certs serves the API's TLS certificate; nil serves plain HTTP.
	certs func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// sso is single sign-on for the dashboard; nil when not configured.
	sso *api.OIDC
	// auth authenticates API calls and dashboard logins, and sweeps what
	// of them expired.
	auth *api.Auth
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
	// Two control planes on one directory would each think they own its
	// nodes and jobs: the second is refused before it touches anything.
	lock, err := dirlock.Acquire(cfg.DataDir, "quarry server")
	if err != nil {
		return nil, err
	}
	s, err := newServer(ctx, cfg)
	if err != nil {
		lock.Release()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// newServer wires every part of a server whose data directory is locked.
func newServer(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.AuthFailures <= 0 {
		cfg.AuthFailures = 10
	}
	if cfg.AuthFailureWindow <= 0 {
		cfg.AuthFailureWindow = time.Minute
	}
	proxies, err := httpguard.ParseProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	cfg.BodyIdle = cmp.Or(cfg.BodyIdle, defaultBodyIdle)
	cfg.BodyMinRate = cmp.Or(cfg.BodyMinRate, defaultBodyMinRate)
	cfg.MaxConnsPerClient = cmp.Or(cfg.MaxConnsPerClient, defaultMaxConnsPerClient)
	var sso *api.OIDC
	if cfg.OIDC.Issuer != "" {
		if sso, err = api.NewOIDC(cfg.OIDC); err != nil {
			return nil, err
		}
	}
	raw, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Every change written to the store is told to the event streams.
	changes := events.NewHub()
	st := events.Store(raw, changes)
	tokenPath := auth.AdminTokenPath(cfg.DataDir)
	if wrote, err := auth.EnsureAdmin(ctx, st, tokenPath, cfg.Clock()); err != nil {
		st.Close()
		return nil, fmt.Errorf("creating the first admin token: %w", err)
	} else if wrote {
		cfg.Logger.Info("created the first admin token; the CLI on this host uses it, or set QUARRY_TOKEN elsewhere", "path", tokenPath)
	}
	if cfg.AgentCertTTL <= 0 {
		cfg.AgentCertTTL = defaultAgentCertTTL
	}
	var ca *pki.CA
	if cfg.DatabaseURL != "" {
		ca, err = openSharedCA(ctx, cfg, raw)
	} else {
		ca, err = openCA(cfg)
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	certs, err := tlsCerts(cfg, ca)
	if err != nil {
		st.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	statements := func() uint64 { return 0 }
	if counted, ok := raw.(interface{ Statements() uint64 }); ok {
		statements = counted.Statements
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "quarry_store_statements_total",
			Help: "SQL statements the control plane ran against its store: what it costs its database, idle or busy.",
		}, func() float64 { return float64(statements()) }))
	}
	if pooled, ok := raw.(interface{ DB() *sql.DB }); ok {
		// go_sql_*: the store's connections, open, in use and idle, and
		// how long requests waited for one.
		reg.MustRegister(collectors.NewDBStatsCollector(pooled.DB(), "quarry"))
	}
	m := metrics.New(reg)
	// The leader's download controller looks at its jobs again whenever a
	// node changes state, also when a follower saw it (an agent that
	// started announced itself there).
	var s *Server
	iss := newIssuer(ca, cfg.AgentCertTTL)
	link := nodelink.New(nodelink.Config{
		Store:         st,
		OnStateChange: func(n store.Node) { s.toLeader("node", n.ID) },
		HandEvents:    func(id string) { s.toLeader("events", id) },
		Interval:      cfg.HealthInterval,
		MaxBackoff:    cfg.MaxBackoff,
		Issuer:        iss,
		Registerer:    reg,
		Logger:        cfg.Logger,
	})
	// Placement ranks nodes by the RUNNING jobs in the store, not by what
	// one controller happens to be watching.
	s = &Server{cfg: cfg, log: cfg.Logger, store: st, link: link, ca: ca, issuer: iss, metrics: m, changes: changes, statements: statements, proxies: proxies, certs: certs, sso: sso,
		chooser: &placement.Chooser{Store: st, Link: link, Load: placement.JobLoad(st)},
		lost:    make(chan struct{}, 1), resweep: make(chan struct{}, 1), replica: replicaID(), leaseTTL: cmp.Or(cfg.LeaseTTL, defaultLeaseTTL), inFlight: map[string]bool{}}
	if cfg.DatabaseURL != "" {
		s.bus = newBus(cfg.DatabaseURL, s.replica, raw, changes, cfg.Logger)
		s.bus.onMessage = s.onMessage
		s.bus.onReconnect = func() {
			select {
			case s.resweep <- struct{}{}:
			default:
			}
		}
	}
	reg.MustRegister(&metrics.StoreCollector{Store: st, Settling: s.settling, Logger: cfg.Logger})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "quarry_leader",
		Help: "1 when this control-plane replica leads (runs the background work), 0 on a follower.",
	}, func() float64 {
		if s.leading() != nil {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "quarry_leader_epoch",
		Help: "The leader lease's epoch as this replica last saw it: it grows by one at every change of leader.",
	}, func() float64 { _, e, _ := s.leaderState(); return float64(e) }))
	if s.catalog, err = loadCatalog(cfg); err != nil {
		st.Close()
		return nil, err
	}
	policy, agentPolicy, err := downloadPolicy(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	s.policy, s.agentPolicy = policy, agentPolicy
	s.uploads = s.newUploads()
	s.handler = s.routes(reg)
	return s, nil
}

func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		if !sqlstore.IsPostgresURL(cfg.DatabaseURL) {
			scheme, _, _ := strings.Cut(cfg.DatabaseURL, ":")
			return nil, fmt.Errorf("--database-url: %q URLs are not supported; give postgres://user@host:port/db, or leave it empty to use SQLite in --data-dir", scheme)
		}
		st, err := sqlstore.OpenPostgres(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("opening the database: %w", err)
		}
		return st, nil
	}
	if err := secureDataDir(cfg.DataDir, cfg.Logger); err != nil {
		return nil, err
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
	guard := &api.Auth{Store: s.store, Now: s.cfg.Clock, Logger: s.log, SessionTTL: s.cfg.SessionTTL, Metrics: s.metrics,
		Limiter: auth.NewLimiter(s.cfg.AuthFailures, s.cfg.AuthFailureWindow, s.cfg.Clock), OIDC: s.sso}
	s.auth = guard
	interceptors := append(api.Interceptors(s.log, reg), guard.Interceptor())
	if s.cfg.DatabaseURL == "" {
		// On SQLite, reads that got past authentication wait for one of
		// two slots per CPU: every health check's write waits for its one
		// writer, which must keep its share of the CPU. PostgreSQL writes
		// side by side, and its reads mostly wait on the database.
		interceptors = append(interceptors, api.ReadLimit(2*runtime.GOMAXPROCS(0)))
	}
	opts := []connect.HandlerOption{
		// Authentication sits inside logging and metrics but outside panic
		// recovery, so that every refusal is counted and no panic skips the
		// audit log.
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(maxRequestBytes),
		api.BoundedGzip(maxRequestBytes),
		connect.WithCompressMinBytes(1 << 10), // smaller answers are not worth it
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, r any) error {
			s.log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", r)
			return connect.NewError(connect.CodeInternal, errors.New("internal error; the control plane's log has the details"))
		}),
	}
	mux := http.NewServeMux()
	mux.Handle(quarryv1connect.NewNodeServiceHandler(&api.NodeService{Store: s.store, Link: s.link, Logger: s.log, Now: now}, opts...))
	mux.Handle(quarryv1connect.NewStoragePoolServiceHandler(&api.PoolService{Store: s.store, Link: s.link, Placement: s.chooser, Logger: s.log, Now: now,
		DataDir: absPath(s.cfg.DataDir)}, opts...))
	mux.Handle(quarryv1connect.NewTokenServiceHandler(&api.TokenService{Store: s.store, Logger: s.log, Now: s.cfg.Clock, CAHash: s.ca.Hash}, opts...))
	mux.Handle(quarryv1connect.NewEnrollmentServiceHandler(&api.EnrollmentService{Store: s.store, Link: s.link, CA: s.ca,
		CertTTL: s.cfg.AgentCertTTL, Logger: s.log, Clock: s.cfg.Clock, Now: now, Metrics: s.metrics}, opts...))
	// Public, like the CA hash join tokens come with: an agent checks its
	// pin against it before it sends its join token.
	mux.HandleFunc("GET /ca.crt", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(s.ca.PEM())
	})
	toDownloads := func(id string) { s.toLeader("download", id) }
	mux.Handle(quarryv1connect.NewImageServiceHandler(&api.ImageService{Store: s.store, Scanner: scanner{s},
		Files:       fileDeleter{s.chooser, s.link},
		Downloads:   api.Downloads{Catalog: s.catalog, Policy: s.policy, Enqueue: toDownloads, Reachable: s.reachable},
		VerifyJobs:  func(id string) { s.toLeader("verify", id) },
		Refresh:     catalogRefresher{s},
		ConvertJobs: func(id string) { s.toLeader("convert", id) },
		Logger:      s.log, Now: now}, opts...))
	// Uploads are followed where their bytes arrive; the rest by the leader.
	enqueueJob := func(id string) {
		s.toLeader("download", id)
		s.toLeader("verify", id)
		s.toLeader("convert", id)
		s.uploads.Enqueue(id)
	}
	mux.Handle(quarryv1connect.NewJobServiceHandler(&api.JobService{Store: s.store, Enqueue: enqueueJob, Logger: s.log, Now: now}, opts...))
	mux.Handle(quarryv1connect.NewAuditServiceHandler(&api.AuditService{Store: s.store, Logger: s.log}, opts...))
	mux.Handle(quarryv1connect.NewEventServiceHandler(&api.EventService{Store: s.store, Hub: s.changes, Logger: s.log,
		Heartbeat: s.cfg.EventHeartbeat}, opts...))
	handleReflection(mux, opts)
	s.handleUploads(mux, guard)
	guard.Routes(mux)
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
		// Followers serve the whole API too: both are ready.
		if leading, epoch, _ := s.leaderState(); leading {
			fmt.Fprintf(w, "ready: leader (epoch %d)\n", epoch)
		} else if _, _, holder := s.leaderState(); holder != "" {
			fmt.Fprintf(w, "ready: follower (leader %s, epoch %d)\n", holder, epoch)
		} else {
			fmt.Fprintln(w, "ready: follower (no leader yet)")
		}
	})
	dashboard(mux, web.Dist())
	return s.front(guard, mux, opts)
}

// settling counts, by pool name, the files the last scan of each pool left
// waiting to settle (for the metrics).
func (s *Server) settling() map[string]int {
	// The leader's only: a follower would ask the leader at every scrape.
	t := s.leading()
	if t == nil {
		return nil
	}
	_, last := t.scans.Status()
	out := make(map[string]int, len(last))
	for _, r := range last {
		if r.PoolName != "" && !r.Skipped {
			out[r.PoolName] = r.Deferred
		}
	}
	return out
}

// reachable is nil when some node can work on the pool.
func (s *Server) reachable(ctx context.Context, poolID string) error {
	_, err := s.chooser.Choose(ctx, poolID)
	return err
}

// Handler returns the HTTP handler (for tests that bring their own server).
func (s *Server) Handler() http.Handler { return s.handler }

// Store returns the server's store.
func (s *Server) Store() store.Store { return s.store }

// StoreStatements reports how many SQL statements the store has run.
func (s *Server) StoreStatements() uint64 { return s.statements() }

// Placement returns the node-choice helper every operation uses.
func (s *Server) Placement() *placement.Chooser { return s.chooser }

// CA returns the control plane's certificate authority.
func (s *Server) CA() *pki.CA { return s.ca }

// Serve runs the health loop and serves ln until ctx is done, then shuts
// down gracefully: requests and streams in flight end, then the background
// loops, each of which returns only once the goroutines it started have
// exited. Close releases the store after.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	// The background loops (node health, agents' file events, ISO scans,
	// downloads…) run in the leader's term, which the election loop starts
	// and stops; the first election is held before the API serves, so a
	// single control plane leads from its first request. They stop before
	// Serve returns, however it returns.
	var loops sync.WaitGroup
	// Expired logins are swept on every replica: the deletes are safe to
	// repeat.
	loops.Go(func() { s.auth.RunSweeps(ctx, s.cfg.SweepInterval) })
	if s.bus != nil {
		loops.Go(func() { s.bus.Run(ctx) })
	}
	s.campaign(ctx)
	loops.Go(func() { s.elect(ctx) })
	defer func() {
		cancel()
		loops.Wait()
	}()
	// Streams (WatchJob, watch --wait) never end by themselves: their
	// requests' context ends when shutdown begins, so Shutdown need not
	// wait them out.
	reqCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()

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
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	ln = httpguard.LimitConns(ln, s.cfg.MaxConnsPerClient, s.proxies, s.log)
	if msg := plainHTTPWarning(ln.Addr(), s.certs != nil, s.cfg.InsecureHTTP); msg != "" {
		s.log.Warn(msg)
	}
	errc := make(chan error, 1)
	if s.certs != nil {
		// gRPC needs HTTP/2, which TLS negotiates by ALPN; HTTP/1.1 stays.
		p.SetHTTP2(true)
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.certs}
		go func() { errc <- hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- hs.Serve(ln) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("control plane shutting down")
	endRequests()
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	if err := hs.Shutdown(sctx); err != nil {
		// Shutting down is what was asked: connections still busy after
		// the grace period are closed, which their clients see as a reset.
		hs.Close()
		s.log.Warn("connections still open after the grace period were closed", "err", err)
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

// Close releases the store, after Serve has returned (the store is the
// last thing to go), and then the data directory.
func (s *Server) Close() error {
	err := errors.Join(s.store.Close(), s.lock.Release())
	s.log.Info("control plane stopped")
	return err
}
