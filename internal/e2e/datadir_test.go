package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/quarrytest"
)

// refused runs the quarry binary with args and returns its stderr, failing
// the test unless it exits non-zero within 10 s.
func refused(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, quarrytest.Binary(t), args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("quarry %s still running after 10 s; want a refusal\n%s", strings.Join(args, " "), out)
	}
	if exit, ok := errors.AsType[*exec.ExitError](err); !ok || exit.ExitCode() == 0 {
		t.Fatalf("quarry %s: %v, want a non-zero exit\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDataDirInUse starts a second control plane, then a second agent, on
// the data directory of one that runs: each is refused, naming the
// directory and the process that holds it, and the first keeps its node.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	devReady(t, d)

	out := refused(t, "server", "--dev", "--listen", "127.0.0.1:0", "--data-dir", dir)
	want := fmt.Sprintf("data directory %s is in use by quarry server (pid %d); stop it or pass another --data-dir", dir, d.cmd.Process.Pid)
	if !strings.Contains(out, want) {
		t.Errorf("second server said:\n%s\nwant %q", out, want)
	}
	// Without --dev too, and the first server's node stays its own.
	if out := refused(t, "server", "--listen", "127.0.0.1:0", "--data-dir", dir); !strings.Contains(out, want) {
		t.Errorf("second server (no --dev) said:\n%s\nwant %q", out, want)
	}
	devReady(t, d)

	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgentProcess(t, quarrytest.Binary(t), s, quarrytest.AgentOptions{Name: "n1"})
	args := a.Args()
	i := slices.Index(args, "--listen")
	args[i+1] = "127.0.0.1:0"
	out = refused(t, args...)
	want = fmt.Sprintf("data directory %s is in use by quarry agent (pid %d); stop it or pass another --data-dir", a.Opts.DataDir(), a.Pid())
	if !strings.Contains(out, want) {
		t.Errorf("second agent said:\n%s\nwant %q", out, want)
	}
}
