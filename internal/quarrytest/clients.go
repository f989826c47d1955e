package quarrytest

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/server"
)

// Clients are public API clients that all send one token.
type Clients struct {
	// HTTP is the HTTP client under them, for plain JSON POSTs.
	HTTP       *http.Client
	Nodes      quarryv1connect.NodeServiceClient
	Pools      quarryv1connect.StoragePoolServiceClient
	Tokens     quarryv1connect.TokenServiceClient
	Audit      quarryv1connect.AuditServiceClient
	Enrollment quarryv1connect.EnrollmentServiceClient
	Images     quarryv1connect.ImageServiceClient
	Jobs       quarryv1connect.JobServiceClient
	Events     quarryv1connect.EventServiceClient
}

// ClientsFor returns API clients of s that send token; "" sends none.
func (s *Server) ClientsFor(token string) Clients {
	if s.TLS != nil {
		tr := &http.Transport{TLSClientConfig: s.TLS.Clone(), ForceAttemptHTTP2: true}
		return s.ClientsWith(&http.Client{Transport: &auth.Transport{Token: token, Base: tr}})
	}
	return s.ClientsWith(HTTPClient(token))
}

// ClientsWith returns API clients of s that send their calls through hc.
func (s *Server) ClientsWith(hc *http.Client) Clients {
	return Clients{
		HTTP:       hc,
		Nodes:      quarryv1connect.NewNodeServiceClient(hc, s.URL),
		Pools:      quarryv1connect.NewStoragePoolServiceClient(hc, s.URL),
		Tokens:     quarryv1connect.NewTokenServiceClient(hc, s.URL),
		Audit:      quarryv1connect.NewAuditServiceClient(hc, s.URL),
		Enrollment: quarryv1connect.NewEnrollmentServiceClient(hc, s.URL),
		Images:     quarryv1connect.NewImageServiceClient(hc, s.URL),
		Jobs:       quarryv1connect.NewJobServiceClient(hc, s.URL),
		Events:     quarryv1connect.NewEventServiceClient(hc, s.URL),
	}
}

// Anonymous returns API clients of s that send no token.
func (s *Server) Anonymous() Clients { return s.ClientsFor("") }

// HTTPClient returns an HTTP client whose requests carry token as a bearer
// token; "" adds none.
func HTTPClient(token string) *http.Client {
	return &http.Client{Transport: &auth.Transport{Token: token}}
}

// readAdminToken reads the admin token a server wrote into dataDir.
func readAdminToken(t testing.TB, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(auth.AdminTokenPath(dataDir))
	if err != nil {
		t.Fatalf("reading the control plane's admin token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// WithDataDir runs the server on dir, for tests that restart a control
// plane on the same state.
func WithDataDir(dir string) ServerOption {
	return func(c *server.Config) { c.DataDir = dir }
}

// WithClock makes authentication go by clock: token expiry, sessions, the
// failure limit.
func WithClock(clock *Clock) ServerOption {
	return func(c *server.Config) { c.Clock = clock.Now }
}

// WithAuthFailures sets how many failed authentications a client may make
// in a row, and the window in which they come back.
func WithAuthFailures(n int, window time.Duration) ServerOption {
	return func(c *server.Config) { c.AuthFailures, c.AuthFailureWindow = n, window }
}

// Clock is a clock a test moves by hand. It starts at the real time.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to now.
func NewClock() *Clock { return &Clock{now: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// WithDatabaseURL keeps the control plane's state in the PostgreSQL
// database at url instead of SQLite in its data directory.
func WithDatabaseURL(url string) ServerOption {
	return func(c *server.Config) { c.DatabaseURL = url }
}
