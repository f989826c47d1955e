package quarrytest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/agent"
)

// AgentOptions describe an agent's view of the filesystem.
type AgentOptions struct {
	// Name labels the agent in logs and is its reported hostname.
	Name string
	// FSRoot is the agent's "local" filesystem; default a new temp dir.
	FSRoot string
	// Binds map pool paths to shared directories (standing for NFS).
	Binds []agent.Bind
}

func (o *AgentOptions) defaults(t testing.TB) {
	if o.FSRoot == "" {
		o.FSRoot = t.TempDir()
	}
	if o.Name == "" {
		o.Name = "agent"
	}
}

// LocalPath is where path lives on this agent's own filesystem (under
// FSRoot), for tests that create pool directories on one node.
func (o AgentOptions) LocalPath(path string) string { return filepath.Join(o.FSRoot, path) }

// Agent is an in-process agent on a loopback socket that can be stopped and
// started again on the same address.
type Agent struct {
	Opts AgentOptions
	Addr string
	t    testing.TB

	mu   sync.Mutex
	stop func()
}

// StartAgent starts an in-process agent on 127.0.0.1 and returns once it
// answers.
func StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	opts.defaults(t)
	a := &Agent{Opts: opts, t: t}
	a.start("127.0.0.1:0")
	t.Cleanup(a.Stop)
	return a
}

func (a *Agent) start(addr string) {
	a.t.Helper()
	ag, err := agent.New(agent.Config{
		FSRoot:   a.Opts.FSRoot,
		Binds:    a.Opts.Binds,
		Hostname: a.Opts.Name,
		Version:  "test",
		Logger:   Logger(a.t).With("agent", a.Opts.Name),
	})
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.Opts.Name, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.Opts.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ag.Serve(ctx, ln)
	}()
	a.mu.Lock()
	a.Addr = ln.Addr().String()
	a.stop = func() { cancel(); <-done }
	a.mu.Unlock()
	WaitReady(a.t, "http://"+a.Addr+"/healthz")
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

// Restart starts the agent again on its previous address.
func (a *Agent) Restart() {
	a.Stop()
	a.start(a.Addr)
}

// AgentProcess is an agent running as a separate `quarry agent` process.
type AgentProcess struct {
	Opts AgentOptions
	Addr string
	bin  string
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// StartAgentProcess runs `bin agent` on a free loopback port and returns once
// it answers.
func StartAgentProcess(t testing.TB, bin string, opts AgentOptions) *AgentProcess {
	t.Helper()
	opts.defaults(t)
	p := &AgentProcess{Opts: opts, Addr: freeAddr(t), bin: bin, t: t}
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// Start (re)starts the process on its address and waits until it answers.
func (p *AgentProcess) Start() {
	p.t.Helper()
	args := []string{"agent", "--listen", p.Addr, "--fs-root", p.Opts.FSRoot, "--hostname", p.Opts.Name,
		"--data-dir", filepath.Join(p.Opts.FSRoot, "var/lib/quarry-agent")}
	for _, b := range p.Opts.Binds {
		args = append(args, "--bind", b.Path+"="+b.Dir)
	}
	p.cmd = exec.Command(p.bin, args...)
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
	WaitReady(p.t, "http://"+p.Addr+"/healthz")
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

// get is a GET that fails the test on transport errors.
func get(t testing.TB, url string) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
