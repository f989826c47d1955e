// Package agent is the Quarry node daemon: it serves the agent API
// (quarry.agent.v1.AgentService) that the control plane calls on every node.
//
// Contract:
//   - Pool paths arrive as the pool spec gives them (absolute, clean) and are
//     mapped to host directories by Config.Binds and Config.FSRoot, so that
//     several agents on one machine can each have their own filesystem and
//     share a directory that stands for NFS. All file access inside a pool
//     goes through os.Root, so symlinks cannot lead outside the pool.
//   - A node mounts a pool only when the pool's directory holds the pool's
//     identity marker (.quarry/pool.json with the pool id) and the agent can
//     read the directory and write in .quarry/. Otherwise GetFacts says why,
//     naming the pool path as the operator knows it.
//   - GetFacts never changes anything on disk; InitPool writes a marker only
//     into an existing directory that holds none, at most once even when
//     called concurrently, and is idempotent for the same pool.
//   - The agent answers only the control plane. It enrolls once with a join
//     token (Config.Enrollment) and keeps the certificate it gets in its data
//     directory; from then on its one listener serves mutual TLS 1.3 only:
//     clients must present the control plane's certificate from the CA the
//     agent enrolled with, or another node's, which reaches only the peer
//     endpoint (peer.go) and only with the control plane's grant for one
//     file. The control plane renews the agent's certificate
//     through CreateCSR and InstallCertificate before it expires; the new
//     one is saved atomically and served from the next handshake on.
//   - The listener serves Connect, gRPC and gRPC-Web over HTTP/2 and
//     HTTP/1.1, plus GET /healthz and GET /peer/v1/files/<sha256>.
package agent

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/dirlock"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/uploadwire"
)

// defaultListen is the agent's default listen address.
const defaultListen = ":9090"

// Server limits. Requests are small; anything bigger is a mistake or abuse.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 5 * time.Second
	maxRequestBytes   = 4 << 20
)

// Config configures an Agent. The zero value, with defaults filled in by New,
// serves the real filesystem on :9090.
type Config struct {
	Listen   string // default ":9090"
	DataDir  string // the agent's own state; created by New when set
	FSRoot   string // if set, every pool path not covered by a Bind is resolved under this directory
	Binds    []Bind // pool path prefixes served from other host directories; longest Path wins
	Hostname string // reported hostname; default os.Hostname()
	Version  string
	// Enrollment is used when the data directory holds no valid
	// certificate yet.
	Enrollment Enrollment
	// CheckpointEvery is how often a download makes its progress durable
	// (default 2 s; also every 32 MiB, whichever comes first): what a crash
	// can make it fetch again.
	CheckpointEvery time.Duration
	// PeerReadRate caps, in bytes per second, how fast each copy another
	// node pulls from this one is served; 0: no cap.
	PeerReadRate int64
	// QemuImg is the qemu-img that converts images: a path, or a name
	// looked up on PATH; default "qemu-img". Without one, the node reports
	// none in its facts and converts nothing.
	QemuImg string
	// DownloadConnections is how many connections a download of a large
	// file may use at once when its origin serves ranges (default 4; 1:
	// one stream). DownloadSegmentMin is the size from which a file counts
	// as large (default 64 MiB). DownloadHostConnections caps the
	// connections of all the node's downloads to one host (default 8); a
	// download always gets one.
	DownloadConnections     int
	DownloadSegmentMin      int64
	DownloadHostConnections int
	// NodeDownloadRate bounds the bytes per second all the node's
	// downloads receive together, shared fairly between them; 0: no bound.
	NodeDownloadRate int64
	Logger           *slog.Logger // default slog.Default()
}

// Agent is a configured node daemon. Its methods are safe for concurrent use.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	paths    pathMap
	hostname string
	now      func() time.Time
	handler  http.Handler

	id      atomic.Pointer[identity] // nil until enrolled
	renewMu sync.Mutex               // one renewal step at a time
	pending *ecdsa.PrivateKey        // key of the last CreateCSR; guarded by renewMu

	isos *isoWatches // ISO listing and file watches per mounted pool
	// newEvents says the file watches logged events (capacity 1).
	newEvents chan struct{}
	downloads *downloads
	uploads   *uploads
	qemu      qemuFinder
	// conversions are the running ConvertFile calls.
	conversions conversions
	// conns are the server's connections, for shutdown.
	conns connStates
	// stopping is closed when the agent begins to shut down: streams end.
	stopping chan struct{}
	stopOnce sync.Once
}

// New validates cfg, fills in defaults and creates cfg.DataDir.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen address %q: %w (want HOST:PORT or :PORT)", cfg.Listen, err)
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("hostname not configured and the system's is unknown: %w", err)
		}
		cfg.Hostname = h
	}
	if cfg.FSRoot != "" {
		abs, err := filepath.Abs(cfg.FSRoot)
		if err != nil {
			return nil, fmt.Errorf("filesystem root %q: %w", cfg.FSRoot, err)
		}
		if err := checkDir(abs); err != nil {
			return nil, fmt.Errorf("filesystem root: %w", err)
		}
		cfg.FSRoot = abs
	}
	seen := make(map[string]bool, len(cfg.Binds))
	for _, b := range cfg.Binds {
		if err := b.check(); err != nil {
			return nil, fmt.Errorf("bind %s=%s: %w", b.Path, b.Dir, err)
		}
		p := filepath.Clean(b.Path)
		if seen[p] {
			return nil, fmt.Errorf("bind %s=%s: pool path %s is bound twice", b.Path, b.Dir, p)
		}
		seen[p] = true
		if err := checkDir(b.Dir); err != nil {
			return nil, fmt.Errorf("bind %s=%s: %w", b.Path, b.Dir, err)
		}
	}
	if cfg.DownloadConnections < 0 || cfg.DownloadSegmentMin < 0 || cfg.DownloadHostConnections < 0 || cfg.NodeDownloadRate < 0 {
		return nil, fmt.Errorf("download connections, segment size, host connections and node rate cannot be negative")
	}
	if cfg.DownloadConnections == 0 {
		cfg.DownloadConnections = 4
	}
	if cfg.DownloadSegmentMin == 0 {
		cfg.DownloadSegmentMin = 64 << 20
	}
	if cfg.DownloadHostConnections == 0 {
		cfg.DownloadHostConnections = 8
	}
	var id *identity
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		var err error
		if id, err = loadIdentity(cfg.DataDir); err != nil {
			return nil, err
		}
	}

	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger,
		paths:    newPathMap(cfg.FSRoot, cfg.Binds),
		hostname: cfg.Hostname,
		now:      time.Now,
	}
	a.id.Store(id)
	a.stopping = make(chan struct{})
	a.newEvents = make(chan struct{}, 1)
	a.isos = newISOWatches(a, func() {
		select {
		case a.newEvents <- struct{}{}:
		default:
		}
	})
	a.downloads = newDownloads(a)
	a.uploads = newUploads(a)
	a.qemu = qemuFinder{bin: cfg.QemuImg}
	a.conns.conns = map[net.Conn]connState{}
	a.handler = a.newHandler()
	return a, nil
}

func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// Handler returns the agent's HTTP handler: the AgentService under its
// Connect path, GET /healthz, the peer endpoint and upload writes
// (uploadwire).
func (a *Agent) Handler() http.Handler { return a.handler }

func (a *Agent) newHandler() http.Handler {
	mux := http.NewServeMux()
	svc := &service{a: a}
	mux.Handle(agentv1connect.NewAgentServiceHandler(svc,
		connect.WithReadMaxBytes(maxRequestBytes),
		connect.WithInterceptors(logRPCs(a.log)),
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, v any) error {
			a.log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", v)
			return connect.NewError(connect.CodeInternal, errors.New("internal error"))
		}),
	))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET "+peerPrefix+"{sha256}", a.servePeer)
	mux.HandleFunc("POST "+uploadwire.Path, svc.serveUploadWrite)
	return a.guard(mux)
}

// Serve serves the agent on ln until ctx is done, then shuts down
// gracefully: in-flight calls get up to 5 s to finish, after which
// connections are closed. An agent without a valid certificate enrolls
// first (see Enrollment), or fails saying how to enroll it. It returns nil
// after a shutdown caused by ctx, and the error otherwise. Serve closes ln.
// The data directory is locked while it serves: a second agent on it is
// refused.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	lock, err := a.lockDataDir()
	if err != nil {
		ln.Close()
		return err
	}
	defer lock.Release()
	return a.serve(ctx, ln)
}

// lockDataDir locks the agent's data directory, if it has one: two agents
// on one directory would share a certificate and fight over its renewal.
func (a *Agent) lockDataDir() (*dirlock.Lock, error) {
	if a.cfg.DataDir == "" {
		return nil, nil
	}
	return dirlock.Acquire(a.cfg.DataDir, "quarry agent")
}

func (a *Agent) serve(ctx context.Context, ln net.Listener) error {
	if err := a.ensureEnrolled(ctx, ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ConnState:         a.conns.track,
		// Refused handshakes are logged here: who tried, and why not.
		ErrorLog:  slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		Protocols: new(http.Protocols),
		TLSConfig: pki.AgentServerTLS(a.getCertificate, a.id.Load().roots),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(tlsOnly(ln), "", "") }()
	// The listener is open: the control plane's check of the node gets an
	// answer as soon as it asks.
	actx, stopAnnounce := context.WithCancel(ctx)
	var announcing sync.WaitGroup
	announcing.Go(func() { a.announce(actx) })
	announcing.Go(func() { a.announceEvents(actx) })
	defer func() {
		stopAnnounce()
		announcing.Wait()
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	a.log.Info("agent shutting down", "addr", ln.Addr().String())
	err := a.shutdown(ctx, srv)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	a.log.Info("agent stopped", "addr", ln.Addr().String())
	return err
}

// shutdown is the agent's one shutdown sequence: streams end (they never
// end by themselves, and Shutdown would wait for them), downloads stop
// with their checkpoints kept to resume after a restart, file watches
// stop, and the server drains the calls in flight. Every goroutine the
// agent started has exited when it returns.
func (a *Agent) shutdown(ctx context.Context, srv *http.Server) error {
	a.stopOnce.Do(func() { close(a.stopping) })
	a.downloads.stopAll()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(sctx) }()
	// A connection serving no call has nothing to drain: closed now, not
	// once the control plane closes it after the server's GOAWAY (HTTP/2
	// gives it a second).
	a.conns.stop()
	err := <-done
	if err != nil {
		err = fmt.Errorf("shutting down: %w; closing remaining connections", err)
		_ = srv.Close()
	}
	// After the handlers: no check can start a watch any more, and no write
	// holds an upload.
	a.isos.close()
	a.uploads.closeAll()
	return err
}

// connStates tracks an agent server's open connections and whether each
// is serving a call (http.Server.ConnState; HTTP/2 reports a connection
// idle once its last stream closed).
type connStates struct {
	mu    sync.Mutex
	conns map[net.Conn]connState
	// stopping is set when the agent begins to shut down: a connection
	// that goes idle for the first time then is closed at once. Neither
	// the server nor HTTP/2 would close it: HTTP/2 tells only the
	// connections it serves when the shutdown begins to go away, and one
	// accepted before but whose HTTP/2 began after (the control plane
	// dialed as the agent stopped, and dropped the call it dialed for)
	// stayed open, idle, until the shutdown timed out.
	stopping bool
}

type connState struct {
	idle bool // serving no call
	// wasIdle: it went idle before. A later idle is left to the server,
	// which closes it once the call's answer is written (HTTP/2 may not
	// have flushed it when it reports the connection idle).
	wasIdle bool
}

func (c *connStates) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(c.conns, conn)
	case http.StateIdle:
		if cs := c.conns[conn]; c.stopping && !cs.wasIdle {
			// Nothing to answer on it: HTTP/2's first idle comes before
			// any call, HTTP/1's after its first answer was written.
			conn.Close()
		}
		c.conns[conn] = connState{idle: true, wasIdle: true}
	default:
		cs := c.conns[conn]
		cs.idle = false
		c.conns[conn] = cs
	}
}

// stop closes the connections that serve no call, and those that go idle
// for the first time from now on (see stopping).
func (c *connStates) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	for conn, cs := range c.conns {
		if cs.idle {
			conn.Close()
		}
	}
}

// Run locks the data directory, listens on cfg.Listen and serves until ctx
// is done (see Serve).
func (a *Agent) Run(ctx context.Context) error {
	// Before listening: a second agent on the directory most likely has
	// the same address too, and "address in use" would hide why.
	lock, err := a.lockDataDir()
	if err != nil {
		return err
	}
	defer lock.Release()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	// Enroll before saying so: the address is known, nothing answers yet.
	if err := a.ensureEnrolled(ctx, ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	a.log.Info("agent listening", "addr", ln.Addr().String(), "node", a.NodeID(), "hostname", a.hostname, "version", a.cfg.Version)
	return a.serve(ctx, ln)
}
