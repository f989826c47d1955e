package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
)

// runCLI runs the command line in-process; no command here reaches a server.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("QUARRY_SERVER", "http://127.0.0.1:1")
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"image", "lst"}, []string{`unknown command "lst" for "quarry image"; did you mean ls?`, "usage: quarry image COMMAND"}},
		{[]string{"nodes", "ls"}, []string{`unknown command "nodes" for "quarry"; did you mean node?`, "usage: quarry COMMAND"}},
		{[]string{"tokn", "ls"}, []string{`did you mean token?`}},
		{[]string{"pool", "xyzzy"}, []string{`unknown command "xyzzy" for "quarry pool"; the commands are create,`}},
		{[]string{"image", "show"}, []string{"accepts 1 arg(s), received 0", "usage: quarry image show NAME|ID|PATH [--pool NAME]"}},
		{[]string{"node", "ls", "--bogus"}, []string{"unknown flag: --bogus", "usage: quarry node ls"}},
		{[]string{"image", "download", "--url", "http://x/a.img"}, []string{`required flag(s) "pool" not set`}},
		{[]string{"token", "create", "--ttl", "30s"}, []string{`--ttl "30s": give a lifetime of at least 1m`}},
		{[]string{"node", "ls", "-o", "yaml"}, []string{"--output must be table or json"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d\n%s", code, exitUsage, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestGroupWithoutCommandShowsHelp(t *testing.T) {
	stdout, _, code := runCLI(t, "image")
	if code != 0 || !strings.Contains(stdout, "Available Commands:") {
		t.Errorf("quarry image: exit %d\n%s", code, stdout)
	}
}

// The daemons' help lists only their own flags.
func TestDaemonHelpHasNoClientFlags(t *testing.T) {
	for _, daemon := range []string{"server", "agent"} {
		stdout, _, code := runCLI(t, daemon, "--help")
		if code != 0 {
			t.Fatalf("%s --help: exit %d", daemon, code)
		}
		for _, f := range []string{"--token-file", "--output", "-o,"} {
			if strings.Contains(stdout, f) {
				t.Errorf("quarry %s --help lists the client flag %s:\n%s", daemon, f, stdout)
			}
		}
	}
	stdout, _, _ := runCLI(t, "agent", "--help")
	if !strings.Contains(stdout, "--server string") {
		t.Errorf("quarry agent --help lacks its own --server:\n%s", stdout)
	}
	stdout, _, _ = runCLI(t, "node", "ls", "--help")
	for _, f := range []string{"--server", "--token-file", "--output"} {
		if !strings.Contains(stdout, f) {
			t.Errorf("quarry node ls --help lacks %s:\n%s", f, stdout)
		}
	}
}

func TestJSONErrors(t *testing.T) {
	_, stderr, code := runCLI(t, "-o", "json", "image", "lst")
	var e struct{ Code, Message string }
	if err := json.Unmarshal([]byte(stderr), &e); err != nil {
		t.Fatalf("stderr is not JSON: %v\n%s", err, stderr)
	}
	if code != exitUsage || e.Code != "invalid_argument" || !strings.Contains(e.Message, `unknown command "lst"`) {
		t.Errorf("exit %d, error %+v", code, e)
	}
	_, stderr, _ = runCLI(t, "image", "show", "-o", "json")
	if err := json.Unmarshal([]byte(stderr), &e); err != nil || e.Code != "invalid_argument" {
		t.Errorf("image show -o json: %v\n%s", err, stderr)
	}
}

func TestReportExitCodes(t *testing.T) {
	tests := []struct {
		err   error
		cause error
		exit  int
		code  string
	}{
		{connect.NewError(connect.CodeNotFound, errors.New("no image x")), nil, exitNotFound, "not_found"},
		{errclass.New(errclass.NotFound, "no node named x"), nil, exitNotFound, "not_found"},
		{connect.NewError(connect.CodePermissionDenied, errors.New("needs the admin role")), nil, exitRefused, "permission_denied"},
		{connect.NewError(connect.CodeUnauthenticated, errors.New("no token")), nil, exitRefused, "unauthenticated"},
		{connect.NewError(connect.CodeInvalidArgument, errors.New("bad")), nil, exitUsage, "invalid_argument"},
		{connect.NewError(connect.CodeFailedPrecondition, errors.New("in use")), nil, exitConflict, "failed_precondition"},
		{connect.NewError(connect.CodeAlreadyExists, errors.New("exists")), nil, exitConflict, "already_exists"},
		{connect.NewError(connect.CodeUnavailable, errors.New("down")), nil, exitUnavailable, "unavailable"},
		{connect.NewError(connect.CodeUnavailable, &notQuarry{"http://x", "http://x/a", 501}), nil, exitUnavailable, "unavailable"},
		{connect.NewError(connect.CodeInternal, errors.New("boom")), nil, exitFailure, "internal"},
		{errors.New("job j failed: checksum"), nil, exitFailure, "unknown"},
		{&stoppedWatching{"j1"}, &interrupted{syscall.SIGINT}, 130, "canceled"},
		{connect.NewError(connect.CodeCanceled, errors.New("context canceled")), &interrupted{syscall.SIGTERM}, 143, "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			var b bytes.Buffer
			exit := report(&b, nil, tt.err, true, tt.cause)
			var e struct{ Code, Message string }
			if err := json.Unmarshal(b.Bytes(), &e); err != nil {
				t.Fatalf("%v: %s", err, b.String())
			}
			if exit != tt.exit || e.Code != tt.code {
				t.Errorf("exit %d code %q, want %d %q", exit, e.Code, tt.exit, tt.code)
			}
		})
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{"1m": time.Minute, "90m": 90 * time.Minute, "12h": 12 * time.Hour, "30d": 30 * 24 * time.Hour} {
		if got, err := parseTTL(in); err != nil || got != want {
			t.Errorf("parseTTL(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"30s", "59s", "1s", "0d", "-1h", "soon", "30"} {
		if _, err := parseTTL(in); err == nil {
			t.Errorf("parseTTL(%q) accepted", in)
		}
	}
}
