package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
)

// testAgent is a real agent serving on a loopback port for one test.
type testAgent struct {
	*Agent
	url string // http://127.0.0.1:port
}

// startAgent starts an agent for cfg on 127.0.0.1:0 and stops it when the
// test ends, failing the test if Serve does not return cleanly.
func startAgent(t *testing.T, cfg Config) *testAgent {
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
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
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
	return &testAgent{Agent: a, url: "http://" + ln.Addr().String()}
}

// protocol is one way the control plane may talk to an agent.
type protocol struct {
	name  string
	h2c   bool
	grpc  bool
	proto string // resp.Proto expected on /healthz
}

var protocols = []protocol{
	{name: "http1-connect", proto: "HTTP/1.1"},
	{name: "h2c-connect", h2c: true, proto: "HTTP/2.0"},
	{name: "h2c-grpc", h2c: true, grpc: true, proto: "HTTP/2.0"},
}

func (p protocol) httpClient(t *testing.T) *http.Client {
	t.Helper()
	protos := new(http.Protocols)
	if p.h2c {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{Protocols: protos}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (p protocol) client(t *testing.T, a *testAgent) agentv1connect.AgentServiceClient {
	t.Helper()
	var opts []connect.ClientOption
	if p.grpc {
		opts = append(opts, connect.WithGRPC())
	}
	return agentv1connect.NewAgentServiceClient(p.httpClient(t), a.url, opts...)
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
		resp, err := p.httpClient(t).Get(a.url + "/healthz")
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
		{"tls without certificate", Config{TLS: &tls.Config{}}, "without a certificate"},
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
	a, err := New(Config{FSRoot: t.TempDir(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()

	// Leave an idle connection of each kind open: shutdown must not wait on them.
	url := "http://" + ln.Addr().String()
	for _, p := range protocols {
		c := agentv1connect.NewAgentServiceClient(p.httpClient(t), url)
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

func TestServeClosedListener(t *testing.T) {
	a, err := New(Config{FSRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
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
	a, err := New(Config{Listen: "127.0.0.1:0", FSRoot: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
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
	resp, err := http.Get("http://" + addr + "/healthz")
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

func TestServeTLS(t *testing.T) {
	cert, pool := selfSignedCert(t)
	a := startAgent(t, Config{FSRoot: t.TempDir(), TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	url := strings.Replace(a.url, "http://", "https://", 1)

	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	tr := &http.Transport{Protocols: protos, TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}

	resp, err := hc.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("GET /healthz over TLS = %s %s, want HTTP/2.0 200", resp.Proto, resp.Status)
	}
	c := agentv1connect.NewAgentServiceClient(hc, url, connect.WithGRPC())
	if _, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{})); err != nil {
		t.Fatalf("GetFacts over TLS: %v", err)
	}
}

func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "quarry test agent"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
