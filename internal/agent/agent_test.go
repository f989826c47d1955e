package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/pki"
)

// testAgent is a real agent serving mutual TLS on a loopback port for one
// test, enrolled into its own test CA.
type testAgent struct {
	*Agent
	url    string // https://127.0.0.1:port
	ca     *pki.CA
	nodeID string
}

// newTestCA makes a CA standing for the control plane's, made a day ago so
// that tests can date certificates in the past.
func newTestCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(time.Now().Add(-24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// writeIdentity writes into dataDir what enrollment would: a certificate
// from ca for nodeID, valid from now for ttl, and the CA.
func writeIdentity(t *testing.T, ca *pki.CA, dataDir, nodeID string, now time.Time, ttl time.Duration) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert := signCSR(t, ca, mustCSR(t, key), nodeID, now, ttl)
	id, err := newIdentity(cert, key, ca.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	mkdir(t, dataDir)
	if err := saveIdentity(dataDir, id, true); err != nil {
		t.Fatal(err)
	}
}

func mustCSR(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	csr, err := pki.CreateCSR(key, "test")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func signCSR(t *testing.T, ca *pki.CA, csrPEM []byte, nodeID string, now time.Time, ttl time.Duration) *x509.Certificate {
	t.Helper()
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, nodeID, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// newEnrolled returns an agent for cfg that holds a certificate from a new
// test CA, as if it had enrolled.
func newEnrolled(t *testing.T, cfg Config) (*Agent, *pki.CA, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "node-" + strings.ToLower(rand.Text()[:6])
	}
	if cfg.Version == "" {
		cfg.Version = "test"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	ca := newTestCA(t)
	nodeID := "node-" + strings.ToLower(rand.Text()[:8])
	writeIdentity(t, ca, cfg.DataDir, nodeID, time.Now(), time.Hour)
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, ca, nodeID
}

// startAgent starts an enrolled agent for cfg on 127.0.0.1:0 and stops it
// when the test ends, failing the test if Serve does not return cleanly.
func startAgent(t *testing.T, cfg Config) *testAgent {
	t.Helper()
	a, ca, nodeID := newEnrolled(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testAgent{Agent: a, url: "https://" + ln.Addr().String(), ca: ca, nodeID: nodeID}
}

// controlPlane is the client certificate the control plane would present.
func controlPlane(t *testing.T, ca *pki.CA) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueControlPlane(time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clientTLS dials the agent as the control plane does, presenting cert
// (none when nil).
func (a *testAgent) clientTLS(cert *tls.Certificate) *tls.Config {
	return pki.NodeClientTLS(a.nodeID, a.ca.Pool(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	})
}

// protocol is one way the control plane may talk to an agent.
type protocol struct {
	name  string
	h2    bool
	grpc  bool
	proto string // resp.Proto expected on /healthz
}

var protocols = []protocol{
	{name: "http1-connect", proto: "HTTP/1.1"},
	{name: "h2-connect", h2: true, proto: "HTTP/2.0"},
	{name: "h2-grpc", h2: true, grpc: true, proto: "HTTP/2.0"},
}

// httpClient talks to a over TLS as the control plane.
func (p protocol) httpClient(t *testing.T, a *testAgent) *http.Client {
	t.Helper()
	return httpClient(t, a.clientTLS(controlPlane(t, a.ca)), p.h2)
}

func httpClient(t *testing.T, cfg *tls.Config, h2 bool) *http.Client {
	protos := new(http.Protocols)
	if h2 {
		protos.SetHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{Protocols: protos, TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (p protocol) client(t *testing.T, a *testAgent) agentv1connect.AgentServiceClient {
	t.Helper()
	var opts []connect.ClientOption
	if p.grpc {
		opts = append(opts, connect.WithGRPC())
	}
	return agentv1connect.NewAgentServiceClient(p.httpClient(t, a), a.url, opts...)
}

// forEachProtocol runs f once per protocol, in parallel subtests.
func forEachProtocol(t *testing.T, f func(t *testing.T, p protocol)) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			f(t, p)
		})
	}
}

func TestHealthzAndProtocols(t *testing.T) {
	a := startAgent(t, Config{FSRoot: t.TempDir(), Hostname: "node-a", Version: "1.2.3"})
	forEachProtocol(t, func(t *testing.T, p protocol) {
		resp, err := p.httpClient(t, a).Get(a.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" || resp.Proto != p.proto {
			t.Errorf("GET /healthz = %s %s %q, want %s 200 \"ok\\n\"", resp.Proto, resp.Status, body, p.proto)
		}

		facts, err := p.client(t, a).GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if facts.Msg.GetHostname() != "node-a" || facts.Msg.GetVersion() != "1.2.3" || len(facts.Msg.GetPools()) != 0 {
			t.Errorf("GetFacts = %v, want hostname node-a, version 1.2.3, no pools", facts.Msg)
		}
	})
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"bad listen", Config{Listen: "9090"}, `listen address "9090"`},
		{"missing fs root", Config{FSRoot: filepath.Join(dir, "nope")}, "filesystem root"},
		{"fs root is a file", Config{FSRoot: file}, "is not a directory"},
		{"relative bind path", Config{Binds: []Bind{{Path: "srv", Dir: dir}}}, "is not absolute"},
		{"relative bind dir", Config{Binds: []Bind{{Path: "/srv", Dir: "tmp"}}}, "is not absolute"},
		{"missing bind dir", Config{Binds: []Bind{{Path: "/srv", Dir: filepath.Join(dir, "nope")}}}, "no such file"},
		{"duplicate bind", Config{Binds: []Bind{{Path: "/srv/nfs", Dir: dir}, {Path: "/srv/nfs/", Dir: dir}}}, "bound twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		data := filepath.Join(dir, "data", "agent")
		a, err := New(Config{DataDir: data})
		if err != nil {
			t.Fatal(err)
		}
		host, _ := os.Hostname()
		if a.cfg.Listen != ":9090" || a.hostname != host || a.log == nil {
			t.Errorf("defaults: listen %q hostname %q, want :9090 %q", a.cfg.Listen, a.hostname, host)
		}
		if err := checkDir(data); err != nil {
			t.Errorf("data dir not created: %v", err)
		}
	})
}

func TestServeStopsWhenContextDone(t *testing.T) {
	a, ca, nodeID := newEnrolled(t, Config{FSRoot: t.TempDir(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()

	// Leave an idle connection of each kind open: shutdown must not wait on them.
	ta := &testAgent{Agent: a, url: "https://" + ln.Addr().String(), ca: ca, nodeID: nodeID}
	for _, p := range protocols {
		c := p.client(t, ta)
		if _, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{})); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after ctx is done", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after ctx was cancelled")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("listener still accepts connections after Serve returned")
	}
}

// TestShutdownDrainsCalls: a call being served when the agent begins to
// shut down is answered, over HTTP/2, before the server closes; only then
// are the connections closed.
func TestShutdownDrainsCalls(t *testing.T) {
	a, _, _ := newEnrolled(t, Config{FSRoot: t.TempDir()})
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "answered")
	}), Protocols: new(http.Protocols), ConnState: a.conns.track}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	answer := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String())
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answer <- fmt.Sprintf("%s %s %v", resp.Proto, b, err)
	}()
	<-entered
	stopped := startShutdown(t, a, srv, ln)
	close(release)
	if got := <-answer; got != "HTTP/2.0 answered <nil>" {
		t.Errorf("the call in flight got %q; want it answered over HTTP/2", got)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown = %v", err)
	}
}

// open is how many connections are open.
func (c *connStates) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// startShutdown shuts the agent's server srv down as the agent does, and
// returns once its listener ln refuses connections; the shutdown's error
// comes on the channel.
func startShutdown(t *testing.T, a *Agent, srv *http.Server, ln net.Listener) <-chan error {
	t.Helper()
	stopped := make(chan error, 1)
	go func() { stopped <- a.shutdown(t.Context(), srv) }()
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return stopped
		}
		c.Close()
		runtime.Gosched()
	}
}

// TestShutdownClosesLateConnections: a connection accepted before the
// agent began to shut down whose HTTP/2 starts after it did (the control
// plane dialed as the agent stopped, and gave up the call it dialed for)
// is never told to go away by the server; the agent closes it instead of
// waiting for it until its shutdown timeout.
func TestShutdownClosesLateConnections(t *testing.T) {
	a, _, _ := newEnrolled(t, Config{FSRoot: t.TempDir()})
	srv := &http.Server{Handler: http.NotFoundHandler(), Protocols: new(http.Protocols), ConnState: a.conns.track}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	late, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	// The server has accepted it once its state is tracked.
	for a.conns.open() == 0 {
		runtime.Gosched()
	}
	stopped := startShutdown(t, a, srv, ln)
	// HTTP/2 begins on it: the client's preface and an empty SETTINGS
	// frame, and no call.
	if _, err := late.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown = %v, want it done without waiting for the idle connection", err)
	}
	// The agent closed it: the client reads the server's frames, then the
	// end (or a reset: the server did not read all the client sent).
	late.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, late); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the late connection is still open after the shutdown")
	}
}

func TestServeClosedListener(t *testing.T) {
	a, _, _ := newEnrolled(t, Config{FSRoot: t.TempDir()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := a.Serve(t.Context(), ln); err == nil {
		t.Fatal("Serve on a closed listener = nil, want an error")
	}
}

// lockedBuffer is an io.Writer safe for a logger and a reading test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRun(t *testing.T) {
	var logs lockedBuffer
	a, ca, nodeID := newEnrolled(t, Config{Listen: "127.0.0.1:0", FSRoot: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	// Run logs the address it listens on; that is how an operator (and this
	// test) learns the port.
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == "" && time.Now().Before(deadline); {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "agent listening" {
				addr = rec.Addr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		t.Fatalf("Run logged no address; logs:\n%s", logs.String())
	}
	ta := &testAgent{Agent: a, url: "https://" + addr, ca: ca, nodeID: nodeID}
	resp, err := protocols[0].httpClient(t, ta).Get(ta.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
