package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// cliResult is what one quarry invocation did.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cliTokens maps a server URL to the token quarry sends it.
var cliTokens sync.Map

// useToken makes quarry send token to server (as QUARRY_TOKEN).
func useToken(server, token string) { cliTokens.Store(server, token) }

// quarry runs the binary with --server and args, bounded in time, with the
// token useToken gave server.
func quarry(t *testing.T, server string, args ...string) cliResult {
	t.Helper()
	token, _ := cliTokens.Load(server)
	s, _ := token.(string)
	return quarryAs(t, server, s, args...)
}

// quarryAs is quarry with QUARRY_TOKEN=token ("" sends none). TMPDIR is the
// test's, so a dev server's admin token elsewhere on this host is not found.
func quarryAs(t *testing.T, server, token string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, quarrytest.Binary(t), append([]string{"--server", server}, args...)...)
	cmd.Env = append(os.Environ(), "QUARRY_SERVER=", "QUARRY_TOKEN="+token, "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("quarry %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustQuarry runs quarry and fails the test unless it exits 0.
func mustQuarry(t *testing.T, server string, args ...string) string {
	t.Helper()
	r := quarry(t, server, args...)
	if r.code != 0 {
		t.Fatalf("quarry %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// lockedBuffer collects a process's stderr for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devServer is a `quarry server --dev` process.
type devServer struct {
	URL       string
	AgentAddr string // where the in-process agent listens
	started   time.Time
	cmd       *exec.Cmd
	stderr    *lockedBuffer
	done      chan struct{}
}

// startDev runs `quarry server --dev` on a free loopback port with dataDir
// and the extra flags, and returns once it printed the URL of its API.
func startDev(t *testing.T, dataDir string, extra ...string) *devServer {
	t.Helper()
	cmd := exec.Command(quarrytest.Binary(t), append([]string{"server", "--dev", "--listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--health-interval", "200ms"}, extra...)...)
	d := &devServer{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{}), started: time.Now()}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The banner names the API's URL, then the agent's address.
	banner := make(chan [2]string, 1)
	go func() {
		var url string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, u, ok := strings.Cut(sc.Text(), "API and web page:"); ok {
				url = strings.TrimSuffix(strings.TrimSpace(u), "/")
			}
			if _, a, ok := strings.Cut(sc.Text(), "agent at "); ok && url != "" {
				select {
				case banner <- [2]string{url, strings.TrimSpace(a)}:
				default:
				}
			}
		}
		// Reading to EOF before Wait, as StdoutPipe requires; a line too
		// long for the scanner must not leave the server blocked writing.
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case b := <-banner:
		d.URL, d.AgentAddr = b[0], b[1]
	case <-d.done:
		t.Fatalf("quarry server --dev exited before printing its URL: %v\n%s", cmd.ProcessState, d.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("quarry server --dev printed no URL within 60 s\n%s", d.stderr)
	}
	if !strings.HasPrefix(d.URL, "http://127.0.0.1:") || strings.HasSuffix(d.URL, ":0") {
		t.Fatalf("quarry server --dev printed URL %q, want http://127.0.0.1:PORT with the real port", d.URL)
	}
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("quarry server --dev wrote no admin token: %v", err)
	}
	useToken(d.URL, strings.TrimSpace(string(token)))
	return d
}

// stop sends SIGINT and asserts a clean exit within 15 s.
func (d *devServer) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("quarry server --dev still running 15 s after SIGINT\n%s", d.stderr)
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("quarry server --dev exited %d after SIGINT, want 0\n%s", code, d.stderr)
	}
}

// devReady waits until the dev node, at the agent's address, is READY by a
// check this process made, and the local pool is mounted on it with a known
// size; it returns the pool's id.
func devReady(t *testing.T, d *devServer) string {
	t.Helper()
	url := d.URL
	quarrytest.Eventually(t, 30*time.Second, func() error {
		var resp quarryv1.ListNodesResponse
		if err := quarryJSON(t, url, &resp, "node", "ls"); err != nil {
			return err
		}
		if n := resp.GetNodes(); len(n) != 1 || n[0].GetName() != "dev" {
			return fmt.Errorf("node ls = %v, want exactly node dev", n)
		} else if n[0].GetManagementAddress() != d.AgentAddr {
			return fmt.Errorf("node dev is at %s, want the agent's address %s", n[0].GetManagementAddress(), d.AgentAddr)
		} else if n[0].GetState() != quarryv1.NodeState_NODE_STATE_READY {
			return fmt.Errorf("node dev is %v (%s), want READY", n[0].GetState(), n[0].GetStateReason())
		} else if n[0].GetLastCheckedAt().AsTime().Before(d.started) {
			return fmt.Errorf("node dev was last checked at %v, before this server started", n[0].GetLastCheckedAt().AsTime())
		}
		return nil
	})
	var id string
	quarrytest.Eventually(t, 30*time.Second, func() error {
		var resp quarryv1.GetPoolResponse
		if err := quarryJSON(t, url, &resp, "pool", "show", "local"); err != nil {
			return err
		}
		p := resp.GetPool()
		id = p.GetId()
		for _, m := range p.GetNodes() {
			if m.GetNodeName() == "dev" && m.GetMounted() && m.GetFreeBytes() > 0 && m.GetTotalBytes() >= m.GetFreeBytes() &&
				!m.GetCheckedAt().AsTime().Before(d.started) {
				return nil
			}
		}
		return fmt.Errorf("pool local is not mounted on dev with a size: %v", p.GetNodes())
	})
	return id
}

// quarryJSON runs a quarry command with -o json and decodes its output.
func quarryJSON(t *testing.T, url string, m proto.Message, args ...string) error {
	t.Helper()
	r := quarry(t, url, append(args, "-o", "json")...)
	if r.code != 0 {
		return fmt.Errorf("quarry %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		return fmt.Errorf("quarry %s -o json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
	return nil
}

func TestCLIDevServer(t *testing.T) {
	dataDir := t.TempDir()
	d := startDev(t, dataDir)
	poolID := devReady(t, d)

	code, ctype, body := httpGet(t, t.Context(), d.URL+"/")
	if code != 200 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "Quarry") {
		t.Errorf("GET / of the dev server: HTTP %d %s, want the HTML page:\n%s", code, ctype, body)
	}
	d.stop(t)

	// Again on the same data directory: the same node and pool, not copies.
	d = startDev(t, dataDir)
	if id := devReady(t, d); id != poolID {
		t.Errorf("after a restart pool local has id %s, want %s", id, poolID)
	}
	var pools quarryv1.ListPoolsResponse
	if err := quarryJSON(t, d.URL, &pools, "pool", "ls"); err != nil {
		t.Fatal(err)
	}
	if p := pools.GetPools(); len(p) != 1 || p[0].GetName() != "local" || p[0].GetId() != poolID {
		t.Errorf("pool ls after a restart = %v, want only pool local %s", p, poolID)
	}
	d.stop(t)
}

func TestCLIWalkthrough(t *testing.T) {
	srv := quarrytest.StartServer(t)
	// The nodes are registered by address first; their agents then enroll
	// under the same names.
	a1 := quarrytest.NewAgent(t, srv, quarrytest.AgentOptions{Name: "n1"})
	a2 := quarrytest.NewAgent(t, srv, quarrytest.AgentOptions{Name: "n2"})
	url := srv.URL
	useToken(url, srv.AdminToken)

	for _, n := range []struct {
		name string
		a    *quarrytest.Agent
	}{{"n1", a1}, {"n2", a2}} {
		out := mustQuarry(t, url, "node", "register", "--name", n.name, "--address", n.a.Addr)
		if !strings.Contains(out, "registered node "+n.name+" at "+n.a.Addr) {
			t.Errorf("node register %s printed %q", n.name, out)
		}
		n.a.Start()
	}
	if err := os.MkdirAll(a1.Opts.LocalPath("/srv/isos"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := mustQuarry(t, url, "pool", "create", "--name", "isos", "--path", "/srv/isos", "--assign", "n1")
	if !strings.Contains(out, "created pool isos at /srv/isos") {
		t.Errorf("pool create printed %q", out)
	}
	quarrytest.Eventually(t, 15*time.Second, func() error {
		return wantPoolRow(t, url, "isos", "n1", "yes", "")
	})
	if _, err := os.Stat(a1.Opts.LocalPath("/srv/isos/.quarry/pool.json")); err != nil {
		t.Errorf("the pool marker is not on n1: %v", err)
	}

	quarrytest.Eventually(t, 15*time.Second, func() error {
		out := mustQuarry(t, url, "node", "ls")
		for _, name := range []string{"n1", "n2"} {
			if f := tableRow(out, name); len(f) < 3 || f[2] != "READY" {
				return fmt.Errorf("node ls row %s = %v, want READY:\n%s", name, f, out)
			}
		}
		return nil
	})
	out = mustQuarry(t, url, "pool", "ls")
	if f := tableRow(out, "isos"); len(f) < 5 || f[1] != "/srv/isos" || f[3] != "n1" || f[4] != "n1" {
		t.Errorf("pool ls row isos = %v, want path /srv/isos, assigned n1, mounted on n1:\n%s", f, out)
	}
	out = mustQuarry(t, url, "node", "show", "n1")
	if f := tableRow(out, "Name:"); len(f) != 2 || f[1] != "n1" {
		t.Errorf("node show n1: Name row %v:\n%s", f, out)
	}
	if f := tableRow(out, "isos"); len(f) < 2 || f[1] != "yes" {
		t.Errorf("node show n1: pool isos row %v, want mounted yes:\n%s", f, out)
	}

	out = mustQuarry(t, url, "pool", "update", "isos", "--assign", "n1,n2")
	if !strings.Contains(out, "updated pool isos") {
		t.Errorf("pool update printed %q", out)
	}
	quarrytest.Eventually(t, 15*time.Second, func() error {
		return wantPoolRow(t, url, "isos", "n2", "no", "does not exist")
	})

	r := quarry(t, url, "node", "rm", "n2")
	if r.code != 6 || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "isos") {
		t.Errorf("node rm of an assigned node: exit %d, stderr %q; want exit 6 (conflict) and an error naming pool isos", r.code, r.stderr)
	}
	if f := tableRow(mustQuarry(t, url, "node", "ls"), "n2"); f == nil {
		t.Errorf("node n2 is gone after a refused rm")
	}

	for _, bad := range []struct {
		args []string
		code int // by the class of the error; README, "Exit codes"
		msg  string
	}{
		{[]string{"pool", "create", "--name", "x", "--path", "relative"}, 2, `pool path "relative" is relative; give an absolute path`},
		{[]string{"pool", "create", "--name", "x", "--path", "/srv/isos/sub"}, 2, `overlaps pool "isos"`},
		{[]string{"pool", "create", "--name", "x", "--path", "/srv/x", "--assign", "n9"}, 4, `no node named or with id "n9"`},
		{[]string{"node", "register", "--name", "n3", "--address", "http://x"}, 2, "is a URL"},
		{[]string{"node", "show", "nope"}, 4, `no node named or with id "nope"`},
		{[]string{"pool", "update", "isos"}, 2, "nothing to update"},
	} {
		r := quarry(t, url, bad.args...)
		if r.code != bad.code || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, bad.msg) {
			t.Errorf("quarry %s: exit %d, stderr %q; want exit %d and error: ...%s", strings.Join(bad.args, " "), r.code, r.stderr, bad.code, bad.msg)
		}
	}
	var pools quarryv1.ListPoolsResponse
	if err := quarryJSON(t, url, &pools, "pool", "ls"); err != nil {
		t.Fatal(err)
	}
	if len(pools.GetPools()) != 1 {
		t.Errorf("refused commands created pools: %v", pools.GetPools())
	}
}

func TestCLIServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	r := quarry(t, closed, "node", "ls")
	if r.code != 3 || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "control plane") {
		t.Errorf("node ls against a closed port: exit %d, stderr %q; want exit 3 (unavailable) and an error about the control plane", r.code, r.stderr)
	}
}

// wantPoolRow checks the row of node in `quarry pool show pool`: its MOUNTED
// column and, when reason is not empty, that its REASON mentions it.
func wantPoolRow(t *testing.T, url, pool, node, mounted, reason string) error {
	t.Helper()
	out := mustQuarry(t, url, "pool", "show", pool)
	_, nodes, ok := strings.Cut(out, "\nNodes:\n")
	if !ok {
		return fmt.Errorf("pool show %s has no Nodes section:\n%s", pool, out)
	}
	// NODE STATE ASSIGNED MOUNTED FREE TOTAL REASON
	f := tableRow(nodes, node)
	if len(f) < 4 || f[3] != mounted {
		return fmt.Errorf("pool show %s: row of %s is %v, want mounted %s:\n%s", pool, node, f, mounted, out)
	}
	if reason != "" && !strings.Contains(strings.Join(f[4:], " "), reason) {
		return fmt.Errorf("pool show %s: row of %s is %v, want a reason with %q:\n%s", pool, node, f, reason, out)
	}
	return nil
}

// tableRow returns the fields of the first line of out whose first field is
// key, or nil.
func tableRow(out, key string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == key {
			return f
		}
	}
	return nil
}
