package e2e

import (
	"os"
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

// Every curl example in the README that calls the API sends a token, as
// every RPC but Enroll needs one.
func TestREADMECurlExamplesAuthorize(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// A command continued with \ is one example.
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "curl ") || !strings.Contains(line, "/quarry.") {
			continue
		}
		n++
		if !strings.Contains(line, "Authorization: Bearer") {
			t.Errorf("README curl example without a token: %s", line)
		}
	}
	if n == 0 {
		t.Error("no curl example of the API in the README")
	}
}
