package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// secretLine returns the token secret a `quarry token create` printed.
func secretLine(t *testing.T, out, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.TrimSpace(line); strings.HasPrefix(f, prefix) && !strings.Contains(f, " ") {
			return f
		}
	}
	t.Fatalf("no %s... secret in:\n%s", prefix, out)
	return ""
}

func TestCLITokens(t *testing.T) {
	srv := quarrytest.StartServer(t)
	url := srv.URL
	useToken(url, srv.AdminToken)

	out := mustQuarry(t, url, "token", "create", "--role", "operator", "--name", "ci")
	if !strings.Contains(out, "created operator token ci (id ") || !strings.Contains(out, "never expires") {
		t.Errorf("token create printed:\n%s", out)
	}
	ci := secretLine(t, out, "qk_")

	out = mustQuarry(t, url, "token", "create", "--name", "watcher", "--ttl", "2d")
	if !strings.Contains(out, "created viewer token watcher") || !strings.Contains(out, "expires") {
		t.Errorf("token create without --role made:\n%s", out)
	}
	viewer := secretLine(t, out, "qk_")

	out = mustQuarry(t, url, "token", "ls")
	for _, s := range []string{ci, viewer, srv.AdminToken} {
		if strings.Contains(out, s[16:]) {
			t.Errorf("token ls shows a secret:\n%s", out)
		}
	}
	// ID NAME KIND ROLE STATE CREATED EXPIRES LAST-USED
	row := func(out, name string) []string {
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[1] == name {
				return f
			}
		}
		return nil
	}
	if f := row(out, "ci"); f == nil || f[2] != "api" || f[3] != "operator" || f[4] != "active" {
		t.Errorf("token ls row of ci = %v, want api operator active:\n%s", f, out)
	}
	var listed quarryv1.ListTokensResponse
	js := mustQuarry(t, url, "token", "ls", "-o", "json")
	if strings.Contains(js, ci[16:]) {
		t.Errorf("token ls -o json shows a secret:\n%s", js)
	}
	if err := protojson.Unmarshal([]byte(`{"tokens":`+js+`}`), &listed); err != nil || len(listed.GetTokens()) != 3 {
		t.Errorf("token ls -o json: %v, %d tokens:\n%s", err, len(listed.GetTokens()), js)
	}

	// The roles, through the CLI.
	if r := quarryAs(t, url, viewer, "node", "ls"); r.code != 0 {
		t.Errorf("node ls as a viewer: exit %d: %s", r.code, r.stderr)
	}
	r := quarryAs(t, url, ci, "node", "register", "--name", "x1", "--address", "10.6.0.1")
	if r.code != 5 || !strings.Contains(r.stderr, "needs the admin role") {
		t.Errorf("node register as an operator: exit %d, stderr %q; want exit 5 saying the admin role is needed", r.code, r.stderr)
	}

	// A token in a file.
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(viewer+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := quarryAs(t, url, "", "--token-file", file, "pool", "ls"); r.code != 0 {
		t.Errorf("pool ls with --token-file: exit %d: %s", r.code, r.stderr)
	}

	out = mustQuarry(t, url, "token", "revoke", "ci")
	if !strings.Contains(out, "revoked token ci (id ") {
		t.Errorf("token revoke printed %q", out)
	}
	r = quarryAs(t, url, ci, "node", "ls")
	if r.code != 5 || !strings.Contains(r.stderr, "revoked") || !strings.Contains(r.stderr, "QUARRY_TOKEN") {
		t.Errorf("node ls with a revoked token: exit %d, stderr %q; want it refused, naming where the token came from", r.code, r.stderr)
	}
	if f := row(mustQuarry(t, url, "token", "ls"), "ci"); f == nil || f[4] != "revoked" {
		t.Errorf("token ls row of ci after revoke = %v, want revoked", f)
	}
	if r := quarry(t, url, "token", "revoke", "nope"); r.code != 4 || !strings.Contains(r.stderr, `no token named or with id "nope"`) {
		t.Errorf("token revoke nope: exit %d, stderr %q", r.code, r.stderr)
	}

	out = mustQuarry(t, url, "token", "create", "--join", "--single-use", "--ttl", "30m")
	join := secretLine(t, out, "qj_")
	if !strings.Contains(out, "quarry agent --server "+url+" --join-token "+join+" --ca-hash sha256:") || !strings.Contains(out, "--name NODE") {
		t.Errorf("token create --join does not print the agent's command line:\n%s", out)
	}
	for _, bad := range []struct {
		args []string
		msg  string
	}{
		{[]string{"token", "create", "--role", "root"}, `--role "root": use viewer, operator or admin`},
		{[]string{"token", "create", "--join", "--role", "admin"}, "--role is for API tokens"},
		{[]string{"token", "create", "--single-use"}, "--single-use is for join tokens"},
		{[]string{"token", "create", "--ttl", "soon"}, `--ttl "soon"`},
	} {
		r := quarry(t, url, bad.args...)
		if r.code != 2 || !strings.Contains(r.stderr, bad.msg) {
			t.Errorf("quarry %s: exit %d, stderr %q; want ...%s", strings.Join(bad.args, " "), r.code, r.stderr, bad.msg)
		}
	}
}

func TestCLIAudit(t *testing.T) {
	srv := quarrytest.StartServer(t)
	url := srv.URL
	useToken(url, srv.AdminToken)
	viewer := secretLine(t, mustQuarry(t, url, "token", "create", "--name", "peeker"), "qk_")
	mustQuarry(t, url, "node", "register", "--name", "a1", "--address", "10.5.0.1")
	quarryAs(t, url, viewer, "node", "rm", "a1")
	mustQuarry(t, url, "node", "ls")

	out := mustQuarry(t, url, "audit", "ls")
	// ID TIME(2) ACTOR... PROCEDURE TARGET RESULT REMOTE MESSAGE
	var sawCreate, sawRegister, sawDenied bool
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "TokenService/CreateToken") && strings.Contains(line, "admin (") && strings.Contains(line, " ok "):
			sawCreate = true
		case strings.Contains(line, "NodeService/RegisterNode") && strings.Contains(line, "a1 (node-") && strings.Contains(line, " ok "):
			sawRegister = true
		case strings.Contains(line, "NodeService/DeleteNode") && strings.Contains(line, "peeker (") && strings.Contains(line, "permission_denied"):
			sawDenied = true
		case strings.Contains(line, "ListNodes"):
			t.Errorf("audit ls shows a read: %s", line)
		}
	}
	if !sawCreate || !sawRegister || !sawDenied {
		t.Errorf("audit ls: create %v, register %v, refused delete %v; want all:\n%s", sawCreate, sawRegister, sawDenied, out)
	}

	var entries quarryv1.ListAuditResponse
	js := mustQuarry(t, url, "audit", "ls", "--limit", "2", "-o", "json")
	if err := protojson.Unmarshal([]byte(`{"entries":`+js+`}`), &entries); err != nil || len(entries.GetEntries()) != 2 {
		t.Errorf("audit ls --limit 2 -o json: %v, %d entries:\n%s", err, len(entries.GetEntries()), js)
	}
	if r := quarryAs(t, url, viewer, "audit", "ls"); r.code != 5 || !strings.Contains(r.stderr, "needs the admin role") {
		t.Errorf("audit ls as a viewer: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCLIWithoutToken(t *testing.T) {
	if _, err := os.Stat("/var/lib/quarry/admin.token"); err == nil {
		t.Skip("this host has /var/lib/quarry/admin.token, which the CLI would send to a server on loopback")
	}
	srv := quarrytest.StartServer(t)
	r := quarryAs(t, srv.URL, "", "node", "ls")
	const want = "error: the control plane needs a token: set QUARRY_TOKEN or run on the server host (admin token in <data-dir>/admin.token)"
	if r.code != 5 || strings.TrimSpace(r.stderr) != want {
		t.Errorf("node ls without a token: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
	r = quarryAs(t, srv.URL, "qk_0123456789ab_"+strings.Repeat("0", 64), "node", "ls")
	if r.code != 5 || !strings.Contains(r.stderr, "unknown or wrong token") || !strings.Contains(r.stderr, "(the token from QUARRY_TOKEN)") {
		t.Errorf("node ls with a wrong token: exit %d, stderr %q", r.code, r.stderr)
	}
}
