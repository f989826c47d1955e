package quarrytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/agent"
	"github.com/quarry-project/quarry/internal/auth"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/server"
	"github.com/quarry-project/quarry/internal/store"
)

// CheckpointEvery is how often test agents make download progress durable,
// unless AgentOptions say otherwise: short, so that a test that loses an
// agent mid-download re-fetches little.
const CheckpointEvery = 200 * time.Millisecond

// AgentOptions describe an agent's view of the filesystem and how it
// enrolls.
type AgentOptions struct {
	// Name is the node the agent enrolls as, and its reported hostname.
	Name string
	// FSRoot is the agent's "local" filesystem; default a new temp dir. The
	// agent keeps its state (and certificate) under FSRoot/var/lib/quarry-agent.
	FSRoot string
	// Binds map pool paths to shared directories (standing for NFS).
	Binds []agent.Bind
	// JoinToken is the token the agent enrolls with; default a new
	// single-use join token made through the server's store.
	JoinToken string
	// CAHash, when set, is passed as --ca-hash.
	CAHash string
	// CheckpointEvery is the agent's --checkpoint-interval; default the
	// package's CheckpointEvery.
	CheckpointEvery time.Duration
	// PeerReadRate caps how fast the agent serves copies to other nodes
	// (bytes a second; 0: no cap), so tests can act in the middle of one.
	PeerReadRate int64
	// DownloadSegmentMin and NodeDownloadRate are the agent's
	// --download-segment-min and --node-download-rate; 0: the defaults.
	DownloadSegmentMin int64
	NodeDownloadRate   int64
	// Silent: an in-process agent that already holds its certificate does
	// not announce its start to the control plane, as an agent that cannot
	// reach it would not: tests of what the link finds out by itself.
	Silent bool
	// QemuImg is the agent's --qemu-img; default "qemu-img" on PATH.
	QemuImg string
	// Listener, when set, wraps the agent's listener (to watch the
	// connections the control plane opens).
	Listener func(net.Listener) net.Listener
}

func (o *AgentOptions) defaults(t testing.TB, s *Server) {
	if o.FSRoot == "" {
		o.FSRoot = t.TempDir()
	}
	if o.Name == "" {
		o.Name = "agent"
	}
	if o.JoinToken == "" {
		o.JoinToken = s.JoinToken(t, true, time.Hour)
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = CheckpointEvery
	}
}

// LocalPath is where path lives on this agent's own filesystem (under
// FSRoot), for tests that create pool directories on one node.
func (o AgentOptions) LocalPath(path string) string { return filepath.Join(o.FSRoot, path) }

// DataDir is the agent's --data-dir.
func (o AgentOptions) DataDir() string { return o.LocalPath("var/lib/quarry-agent") }

// WithAgentCertTTL sets the lifetime of agent certificates, so that tests
// see them renewed.
func WithAgentCertTTL(d time.Duration) ServerOption {
	return func(c *server.Config) { c.AgentCertTTL = d }
}

// JoinToken makes a join token through the server's store, as
// `quarry token create --join` would, and returns its secret. It expires
// after ttl (in the past for a negative ttl; never for 0).
func (s *Server) JoinToken(t testing.TB, singleUse bool, ttl time.Duration) string {
	t.Helper()
	tok, secret := auth.New(store.TokenJoin)
	now := time.Now()
	tok.Name, tok.CreatedAt, tok.SingleUse = "test-join", now, singleUse
	if ttl != 0 {
		tok.ExpiresAt = now.Add(ttl)
	}
	if err := s.Store.CreateToken(context.Background(), tok); err != nil {
		t.Fatalf("creating a join token: %v", err)
	}
	return secret
}

// ControlPlaneCert issues a client certificate from the server's CA, as
// the control plane presents to agents.
func (s *Server) ControlPlaneCert(t testing.TB) *tls.Certificate {
	t.Helper()
	c, err := s.CA.IssueControlPlane(time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// AgentClient talks to the agent of node nodeID at addr as the control
// plane does: mutual TLS, presenting cert (nil: the control plane's).
func (s *Server) AgentClient(t testing.TB, nodeID, addr string, cert *tls.Certificate) agentv1connect.AgentServiceClient {
	t.Helper()
	if cert == nil {
		cert = s.ControlPlaneCert(t)
	}
	cfg := pki.NodeClientTLS(nodeID, s.CA.Pool(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return agentv1connect.NewAgentServiceClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}, "https://"+addr)
}

// waitAgent polls the agent at addr as the control plane until it answers,
// failing the test after 10 s or when exited is closed first.
func (s *Server) waitAgent(t testing.TB, name, nodeID, addr string, exited <-chan struct{}, output func() string) {
	t.Helper()
	c := s.AgentClient(t, nodeID, addr, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.GetFacts(context.Background(), connect.NewRequest(&agentv1.GetFactsRequest{}))
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("agent %s exited: %v\n%s", name, err, output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s at %s does not answer within 10 s: %v\n%s", name, addr, err, output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Agent is an in-process agent on a loopback socket that can be stopped and
// started again on the same address.
type Agent struct {
	Opts AgentOptions
	Addr string
	// NodeID is the node the agent enrolled as; "" before it started.
	NodeID string
	srv    *Server
	t      testing.TB

	mu   sync.Mutex
	stop func()
}

// StartAgent starts an in-process agent on 127.0.0.1 that enrolls with s
// (registering node Opts.Name at its address unless a node has that name),
// and returns once it answers the control plane.
func StartAgent(t testing.TB, s *Server, opts AgentOptions) *Agent {
	t.Helper()
	a := NewAgent(t, s, opts)
	a.Start()
	return a
}

// NewAgent prepares an in-process agent on a free loopback address without
// starting it, for tests that register its node first.
func NewAgent(t testing.TB, s *Server, opts AgentOptions) *Agent {
	t.Helper()
	opts.defaults(t, s)
	a := &Agent{Opts: opts, Addr: freeAddr(t), srv: s, t: t}
	t.Cleanup(a.Stop)
	return a
}

// Start starts the agent on its address, enrolling it if it has no
// certificate yet, and waits until it answers.
func (a *Agent) Start() {
	a.t.Helper()
	server := a.srv.URL
	if a.Opts.Silent && a.NodeID != "" {
		server = "" // enrolled already: nothing to reach the control plane for
	}
	ag, err := agent.New(agent.Config{
		DataDir:            a.Opts.DataDir(),
		FSRoot:             a.Opts.FSRoot,
		Binds:              a.Opts.Binds,
		Hostname:           a.Opts.Name,
		Version:            "test",
		Logger:             Logger(a.t).With("agent", a.Opts.Name),
		CheckpointEvery:    a.Opts.CheckpointEvery,
		PeerReadRate:       a.Opts.PeerReadRate,
		QemuImg:            a.Opts.QemuImg,
		DownloadSegmentMin: a.Opts.DownloadSegmentMin,
		NodeDownloadRate:   a.Opts.NodeDownloadRate,
		Enrollment: agent.Enrollment{
			Server:    server,
			JoinToken: a.Opts.JoinToken,
			CAHash:    a.Opts.CAHash,
			Name:      a.Opts.Name,
		},
	})
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.Opts.Name, err)
	}
	ln, err := net.Listen("tcp", a.Addr)
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.Opts.Name, err)
	}
	if a.Opts.Listener != nil {
		ln = a.Opts.Listener(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var serveErr atomic.Value // error
	go func() {
		defer close(done)
		if err := ag.Serve(ctx, ln); err != nil {
			serveErr.Store(err)
		}
	}()
	a.mu.Lock()
	a.stop = func() { cancel(); <-done }
	a.mu.Unlock()
	// Serve enrolls first; the node id is known once it did.
	deadline := time.Now().Add(10 * time.Second)
	for ag.NodeID() == "" {
		select {
		case <-done:
			a.t.Fatalf("agent %s: %v", a.Opts.Name, serveErr.Load())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent %s did not enroll within 10 s", a.Opts.Name)
		}
	}
	a.NodeID = ag.NodeID()
	a.srv.waitAgent(a.t, a.Opts.Name, a.NodeID, a.Addr, done, func() string { return fmt.Sprint(serveErr.Load()) })
}

// Stop shuts the agent down; its address stops answering.
func (a *Agent) Stop() {
	a.mu.Lock()
	stop := a.stop
	a.stop = nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Restart starts the agent again on its previous address, with the
// certificate it holds.
func (a *Agent) Restart() {
	a.Stop()
	a.Start()
}

// AgentProcess is an agent running as a separate `quarry agent` process.
type AgentProcess struct {
	Opts AgentOptions
	Addr string
	// NodeID is the node the agent enrolled as; "" before it started.
	NodeID string
	srv    *Server
	bin    string
	t      testing.TB
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{}
}

// StartAgentProcess runs `bin agent` on a free loopback port, enrolling
// with s like StartAgent, and returns once it answers the control plane.
func StartAgentProcess(t testing.TB, bin string, s *Server, opts AgentOptions) *AgentProcess {
	t.Helper()
	p := NewAgentProcess(t, bin, s, opts)
	p.Start()
	return p
}

// NewAgentProcess prepares an agent process on a free loopback address
// without starting it.
func NewAgentProcess(t testing.TB, bin string, s *Server, opts AgentOptions) *AgentProcess {
	t.Helper()
	opts.defaults(t, s)
	p := &AgentProcess{Opts: opts, Addr: freeAddr(t), srv: s, bin: bin, t: t}
	t.Cleanup(p.Kill)
	return p
}

// Args are the command-line arguments the process runs with.
func (p *AgentProcess) Args() []string {
	args := []string{"agent", "--listen", p.Addr, "--fs-root", p.Opts.FSRoot, "--hostname", p.Opts.Name,
		"--data-dir", p.Opts.DataDir(), "--server", p.srv.URL, "--join-token", p.Opts.JoinToken, "--name", p.Opts.Name,
		"--checkpoint-interval", p.Opts.CheckpointEvery.String()}
	if p.Opts.CAHash != "" {
		args = append(args, "--ca-hash", p.Opts.CAHash)
	}
	if p.Opts.PeerReadRate > 0 {
		args = append(args, "--peer-read-rate", strconv.FormatInt(p.Opts.PeerReadRate, 10))
	}
	if p.Opts.QemuImg != "" {
		args = append(args, "--qemu-img", p.Opts.QemuImg)
	}
	if p.Opts.DownloadSegmentMin != 0 {
		args = append(args, "--download-segment-min", strconv.FormatInt(p.Opts.DownloadSegmentMin, 10))
	}
	if p.Opts.NodeDownloadRate != 0 {
		args = append(args, "--node-download-rate", strconv.FormatInt(p.Opts.NodeDownloadRate, 10))
	}
	for _, b := range p.Opts.Binds {
		args = append(args, "--bind", b.Path+"="+b.Dir)
	}
	return args
}

// Start (re)starts the process on its address and waits until it answers.
// Its first start enrolls; later ones use the certificate it saved.
func (p *AgentProcess) Start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, p.Args()...)
	p.output = &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if os.Getenv("QUARRY_TEST_VERBOSE") != "" {
		p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("starting agent %s: %v", p.Opts.Name, err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.cmd, p.done)
	// The process enrolls, then serves: once the node has a certificate,
	// wait for the agent to answer with it.
	var nodeID string
	Eventually(p.t, 10*time.Second, func() error {
		select {
		case <-p.done:
			p.t.Fatalf("agent %s exited: %v\n%s", p.Opts.Name, p.cmd.ProcessState, p.output)
		default:
		}
		n, err := p.srv.Store.GetNodeByName(context.Background(), p.Opts.Name)
		if err != nil {
			return err
		}
		if n.Certificate.Serial == "" {
			return fmt.Errorf("node %s is not enrolled yet", p.Opts.Name)
		}
		nodeID = n.ID
		return nil
	})
	p.NodeID = nodeID
	p.srv.waitAgent(p.t, p.Opts.Name, nodeID, p.Addr, p.done, p.output.String)
}

// Freeze stops the process with SIGSTOP: it holds its connections and
// answers nothing, as a hung host does. Thaw lets it go on.
func (p *AgentProcess) Freeze() { p.signal(syscall.SIGSTOP) }

// Thaw continues a frozen process with SIGCONT.
func (p *AgentProcess) Thaw() { p.signal(syscall.SIGCONT) }

// Output is what the process wrote so far.
func (p *AgentProcess) Output() string { return p.output.String() }

func (p *AgentProcess) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling agent %s: %v", p.Opts.Name, err)
	}
}

// Pid is the process id of the running agent; 0 when it is not running.
func (p *AgentProcess) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *AgentProcess) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("killing agent %s: %v", p.Opts.Name, err)
	}
	<-p.done
	p.cmd = nil
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeAddr returns a loopback address no one listens on right now.
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds the quarry command once per test process and returns its
// path. The caller's package must remove BinaryDir in TestMain, or the
// binary stays in the temp dir.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "quarry-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "quarry")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, "github.com/quarry-project/quarry/cmd/quarry").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// CleanupBinary removes the binary Binary built; call it from TestMain.
func CleanupBinary() {
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
}
