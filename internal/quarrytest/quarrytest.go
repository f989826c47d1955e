// Package quarrytest starts real Quarry parts for tests: an in-process
// control plane on a loopback socket with a real SQLite file (or a real
// PostgreSQL database, WithDatabaseURL), in-process or
// separate-process agents each with their own view of the filesystem, and a
// shared directory standing for NFS. Everything stops when the test ends.
package quarrytest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/server"
	"github.com/quarry-project/quarry/internal/store"
)

// HealthInterval is the health-check interval test servers use: short, so
// state changes show within a test's patience.
const HealthInterval = 200 * time.Millisecond

// Server is a running in-process control plane.
type Server struct {
	URL     string
	DataDir string
	// AdminToken is the token the server wrote to <DataDir>/admin.token.
	AdminToken string
	// Clients send AdminToken; ClientsFor makes clients with another token.
	Clients
	Store store.Store
	// Placement is the server's node-choice helper.
	Placement *placement.Chooser
	// CA is the control plane's CA, for tests that talk to agents as the
	// control plane or as strangers.
	CA *pki.CA
	// Statements reports how many SQL statements the store has run.
	Statements func() uint64
	// TLS is what clients made by ClientsFor verify a server started with
	// TLS by (URL is then https://): by default, its own CA.
	TLS *tls.Config

	stop func()
}

// ServerOption adjusts a test server's config.
type ServerOption func(*server.Config)

// StartServer starts a control plane on 127.0.0.1 with its data in a temp
// directory and returns once /readyz answers.
func StartServer(t testing.TB, opts ...ServerOption) *Server {
	t.Helper()
	cfg := server.Config{
		DataDir:        t.TempDir(),
		HealthInterval: HealthInterval,
		MaxBackoff:     2 * HealthInterval,
		Logger:         Logger(t),
		Version:        "test",
		// Test origins listen on loopback.
		AllowLoopbackURLs: true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("starting the control plane: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane: %v", err)
			}
			srv.Close()
		})
	}
	t.Cleanup(stop)
	scheme, probe := "http://", http.DefaultClient
	var clientTLS *tls.Config
	if cfg.TLSAuto || cfg.TLSCertFile != "" {
		scheme, clientTLS = "https://", pki.ControlPlaneTLS("", srv.CA().Pool())
		// Only to wait for it: what the certificate is, is for tests to check.
		probe = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	s := &Server{
		TLS:        clientTLS,
		URL:        scheme + ln.Addr().String(),
		DataDir:    cfg.DataDir,
		AdminToken: readAdminToken(t, cfg.DataDir),
		Store:      srv.Store(),
		Placement:  srv.Placement(),
		CA:         srv.CA(),
		Statements: srv.StoreStatements,
		stop:       stop,
	}
	s.Clients = s.ClientsFor(s.AdminToken)
	waitReady(t, probe, s.URL+"/readyz")
	return s
}

// Stop shuts the control plane down and closes its store; the test's end
// does it too.
func (s *Server) Stop() { s.stop() }

// WaitReady polls url until it answers 200, failing the test after 10 s.
func WaitReady(t testing.TB, url string) {
	t.Helper()
	waitReady(t, http.DefaultClient, url)
}

func waitReady(t testing.TB, hc *http.Client, url string) {
	t.Helper()
	Eventually(t, 10*time.Second, func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

// Eventually calls cond until it returns nil, failing the test with cond's
// last error after timeout. It polls: it waits for a condition, it does not
// stand in for one.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logger discards logs unless QUARRY_TEST_VERBOSE is set, in which case
// they go to the test log at debug level.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("QUARRY_TEST_VERBOSE") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// WithHealthInterval sets the health-check interval (and caps the backoff of
// failing nodes at twice it).
func WithHealthInterval(d time.Duration) ServerOption {
	return func(c *server.Config) {
		c.HealthInterval = d
		c.MaxBackoff = 2 * d
	}
}

// WithMaxBackoff caps the check delay of failing nodes at d (after
// WithHealthInterval, which sets it to twice the interval).
func WithMaxBackoff(d time.Duration) ServerOption {
	return func(c *server.Config) { c.MaxBackoff = d }
}

// WithScans sets the ISO scan timing: the delay before the startup scan,
// the periodic interval (negative: off) and the settle time.
func WithScans(delay, interval, settle time.Duration) ServerOption {
	return func(c *server.Config) {
		c.ScanDelay, c.ScanInterval, c.ScanSettle = delay, interval, settle
	}
}

// WithCatalog adds catalog files to the built-in catalog.
func WithCatalog(files ...string) ServerOption {
	return func(c *server.Config) { c.CatalogFiles = append(c.CatalogFiles, files...) }
}

// WithEventHeartbeat sets how often event streams send a heartbeat and
// check their caller's credentials again.
func WithEventHeartbeat(d time.Duration) ServerOption {
	return func(c *server.Config) { c.EventHeartbeat = d }
}

// WithDownloadRetries sets the download retry budget and the wait after a
// first failed attempt (0 keeps the server's default).
func WithDownloadRetries(maxAttempts int, base time.Duration) ServerOption {
	return func(c *server.Config) { c.DownloadMaxAttempts, c.DownloadRetryBase = maxAttempts, base }
}

// WithDownloadLimits bounds downloads per node and in all.
func WithDownloadLimits(perNode, global int) ServerOption {
	return func(c *server.Config) { c.MaxDownloadsPerNode, c.MaxDownloads = perNode, global }
}

// WithCatalogRefresh sets how often catalog images in pools are checked
// for new builds (0: only when asked) and how many builds are kept.
func WithCatalogRefresh(interval time.Duration, keep int) ServerOption {
	return func(c *server.Config) { c.CatalogRefresh, c.CatalogKeep = interval, keep }
}
