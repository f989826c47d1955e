package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// `make run ARGS='…'` passes the flags to quarry server --dev.
func TestCLIMakeRunArgs(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	out, err := exec.Command("make", "-n", "-C", "../..", "run", "ARGS=--allow-loopback-urls --listen 127.0.0.1:8081").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "server --dev --allow-loopback-urls --listen 127.0.0.1:8081") {
		t.Errorf("make run ARGS=… runs:\n%s\nwant the flags after server --dev", out)
	}
}
