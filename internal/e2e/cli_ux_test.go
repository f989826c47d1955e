package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
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

// Under -o json an error is one JSON object on stderr, and the exit code
// says the class of the failure.
func TestCLIErrorClasses(t *testing.T) {
	srv := quarrytest.StartServer(t)
	url := srv.URL
	useToken(url, srv.AdminToken)
	viewer := secretLine(t, mustQuarry(t, url, "token", "create", "--name", "v"), "qk_")

	for _, tt := range []struct {
		token string
		args  []string
		exit  int
		code  string
	}{
		{srv.AdminToken, []string{"image", "show", "nope"}, 4, "not_found"},
		{srv.AdminToken, []string{"job", "show", "nope"}, 4, "not_found"},
		{viewer, []string{"token", "create", "--name", "x"}, 5, "permission_denied"},
		{"qk_0123456789ab_" + strings.Repeat("0", 64), []string{"node", "ls"}, 5, "unauthenticated"},
		{srv.AdminToken, []string{"pool", "create", "--name", "x", "--path", "relative"}, 2, "invalid_argument"},
		{srv.AdminToken, []string{"image", "lst"}, 2, "invalid_argument"},
	} {
		r := quarryAs(t, url, tt.token, append(tt.args, "-o", "json")...)
		var e struct{ Code, Message string }
		if err := json.Unmarshal([]byte(r.stderr), &e); err != nil {
			t.Errorf("quarry %s -o json: stderr is not one JSON object (%v):\n%s", strings.Join(tt.args, " "), err, r.stderr)
			continue
		}
		if r.code != tt.exit || e.Code != tt.code || e.Message == "" || r.stdout != "" {
			t.Errorf("quarry %s -o json: exit %d, error %+v, stdout %q; want exit %d, code %s", strings.Join(tt.args, " "), r.code, e, r.stdout, tt.exit, tt.code)
		}
	}
}

// A token made with --ttl 30d says it expires in 30d; less than a minute
// is refused.
func TestCLITokenTTL(t *testing.T) {
	srv := quarrytest.StartServer(t)
	useToken(srv.URL, srv.AdminToken)
	out := mustQuarry(t, srv.URL, "token", "create", "--name", "month", "--ttl", "30d")
	if !strings.Contains(out, "(in 30d)") {
		t.Errorf("token create --ttl 30d printed:\n%s", out)
	}
	if ls := mustQuarry(t, srv.URL, "token", "ls"); !strings.Contains(ls, "in 30d") {
		t.Errorf("token ls does not show the expiry as in 30d:\n%s", ls)
	}
	r := quarry(t, srv.URL, "token", "create", "--ttl", "30s")
	if r.code != 2 || !strings.Contains(r.stderr, "at least 1m") {
		t.Errorf("token create --ttl 30s: exit %d, stderr %q; want a usage error", r.code, r.stderr)
	}
}

// A --server that is some other HTTP server is named as such.
func TestCLINotAControlPlane(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		ctype  string
	}{
		{"python http.server", 501, "text/html;charset=utf-8"},
		{"a web page for every path", 200, "text/html; charset=utf-8"},
		{"not found", 404, "text/plain; charset=utf-8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				w.Write([]byte("<html><body>Error response: 501 Unsupported method ('POST')</body></html>"))
			}))
			defer other.Close()
			for _, args := range [][]string{{"node", "ls"}, {"job", "watch", "j1"}} {
				r := quarryAs(t, other.URL, "qk_x", args...)
				want := other.URL + " does not look like a Quarry control plane (HTTP " + strconv.Itoa(tt.status) + " from " + other.URL + "/quarry.v1."
				if r.code != 3 || !strings.Contains(r.stderr, want) {
					t.Errorf("quarry %s against %s: exit %d, stderr %q; want exit 3 and %q", strings.Join(args, " "), tt.name, r.code, r.stderr, want)
				}
			}
		})
	}
}

// Ctrl-C while following a job stops the watch, not the job: exit 130 and
// the command to follow it again.
func TestCLIWatchInterrupted(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/slow.img", origintest.Random(64*mib, 12))
	f.RateLimit(2 * mib)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})
	id := download(t, c.s, pool.GetId(), f.URL(), "").GetJob().GetId()
	defer c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: id}))
	waitProgress(t, c.s, id, mib)

	for _, args := range [][]string{{"job", "watch", id}, {"job", "watch", id, "-o", "json"}} {
		cmd := exec.Command(quarrytest.Binary(t), append([]string{"--server", c.s.URL}, args...)...)
		cmd.Env = append(os.Environ(), "QUARRY_SERVER=", "QUARRY_TOKEN="+c.s.AdminToken, "TMPDIR="+t.TempDir())
		stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		// Watching: it showed progress (stderr), or an update (stdout, JSON).
		quarrytest.Eventually(t, 15*time.Second, func() error {
			select {
			case <-done:
				return fmt.Errorf("quarry %s ended early: %s", strings.Join(args, " "), stderr)
			default:
			}
			if !strings.Contains(stderr.String()+stdout.String(), "downloading") {
				return fmt.Errorf("no progress yet")
			}
			return nil
		})
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("quarry %s still running 10 s after SIGINT", strings.Join(args, " "))
		}
		want := "stopped watching; job " + id + " keeps running (quarry job watch " + id + ")"
		if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(stderr.String(), want) {
			t.Errorf("quarry %s after SIGINT: exit %d, stderr %q; want exit 130 and %q", strings.Join(args, " "), code, stderr, want)
		}
		if strings.Contains(stderr.String(), "error:") {
			t.Errorf("quarry %s after SIGINT printed an error: %q", strings.Join(args, " "), stderr)
		}
	}
	resp, err := c.s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
	if err != nil || resp.Msg.GetJob().GetState() != quarryv1.JobState_JOB_STATE_RUNNING {
		t.Errorf("after the watches were interrupted the job is %v (%v); want it RUNNING still", resp.Msg.GetJob().GetState(), err)
	}
}

// Images of one name in several directories and pools: image ls shows
// their paths in a stable order, and show/rm take --pool and a path.
func TestCLIImagesOfOneName(t *testing.T) {
	c, _ := isoCluster(t)
	mkdir(t, filepath.Join(c.shared, "alpha"))
	c.createPool(t, "alpha", "/srv/nfs/alpha", true, "n1")
	useToken(c.s.URL, c.s.AdminToken)
	for _, p := range []string{"isos/iso/b/x.iso", "isos/iso/a/x.iso", "alpha/iso/x.iso", "isos/iso/y.iso"} {
		writeISO(t, filepath.Join(c.shared, p), "X", 64<<10)
	}
	quarrytest.Eventually(t, 20*time.Second, func() error {
		var ls quarryv1.ListImagesResponse
		mustQuarry(t, c.s.URL, "image", "scan")
		if err := quarryJSON(t, c.s.URL, &ls, "image", "ls"); err != nil {
			return err
		}
		if n := len(ls.GetImages()); n != 4 {
			return fmt.Errorf("%d images, want 4", n)
		}
		return nil
	})
	for i := 0; i < 3; i++ { // the same order every time
		var ls quarryv1.ListImagesResponse
		if err := quarryJSON(t, c.s.URL, &ls, "image", "ls"); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, im := range ls.GetImages() {
			got = append(got, im.GetStoragePoolName()+":"+im.GetPath())
		}
		if want := "alpha:iso/x.iso isos:iso/a/x.iso isos:iso/b/x.iso isos:iso/y.iso"; strings.Join(got, " ") != want {
			t.Fatalf("image ls -o json order: %s, want %s", strings.Join(got, " "), want)
		}
	}
	out := mustQuarry(t, c.s.URL, "image", "ls")
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		paths = append(paths, f[1]+":"+f[2]) // NAME POOL PATH …
	}
	if got := strings.Join(paths, " "); got != "alpha:iso/x.iso isos:iso/a/x.iso isos:iso/b/x.iso isos:iso/y.iso" {
		t.Errorf("image ls POOL:PATH columns %s:\n%s", got, out)
	}

	r := quarry(t, c.s.URL, "image", "show", "x.iso")
	if want := `3 images are named "x.iso" (alpha:iso/x.iso, isos:iso/a/x.iso, isos:iso/b/x.iso); give --pool, the path or the id`; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("image show of an ambiguous name: exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, want)
	}
	for _, tt := range []struct {
		args []string
		pool string
		path string
	}{
		{[]string{"x.iso", "--pool", "alpha"}, "alpha", "iso/x.iso"},
		{[]string{"iso/b/x.iso", "--pool", "isos"}, "isos", "iso/b/x.iso"},
		{[]string{"iso/a/x.iso"}, "isos", "iso/a/x.iso"},
		{[]string{"/srv/nfs/isos/iso/a/x.iso"}, "isos", "iso/a/x.iso"},
		{[]string{"y.iso"}, "isos", "iso/y.iso"},
	} {
		out := mustQuarry(t, c.s.URL, append([]string{"image", "show"}, tt.args...)...)
		if f := tableRow(out, "Pool:"); len(f) != 2 || f[1] != tt.pool {
			t.Errorf("image show %s: pool row %v:\n%s", strings.Join(tt.args, " "), f, out)
		}
		if f := tableRow(out, "Path:"); len(f) != 2 || f[1] != tt.path {
			t.Errorf("image show %s: path row %v:\n%s", strings.Join(tt.args, " "), f, out)
		}
	}
	if r := quarry(t, c.s.URL, "image", "show", "y.iso", "--pool", "alpha"); r.code != 4 || !strings.Contains(r.stderr, `no image named, at path or with id "y.iso" in pool alpha`) {
		t.Errorf("image show y.iso --pool alpha: exit %d, stderr %q", r.code, r.stderr)
	}
	out = mustQuarry(t, c.s.URL, "image", "rm", "iso/b/x.iso", "--pool", "isos")
	if !strings.Contains(out, "deleted image x.iso (iso/b/x.iso in pool isos)") {
		t.Errorf("image rm printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(c.shared, "isos/iso/b/x.iso")); !os.IsNotExist(err) {
		t.Errorf("iso/b/x.iso is still on disk: %v", err)
	}
}

// Shell completion offers the names of nodes, pools, images, jobs and
// tokens, asked of the control plane.
func TestCLICompletion(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/disk.img", origintest.Random(mib, 13))
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})
	m := download(t, c.s, pool.GetId(), f.URL(), "")
	waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	useToken(c.s.URL, c.s.AdminToken)
	mustQuarry(t, c.s.URL, "token", "create", "--name", "ci-bot")

	complete := func(args ...string) []string {
		t.Helper()
		out := mustQuarry(t, c.s.URL, append([]string{"__complete"}, args...)...)
		var names []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(line, ":") { // the last line is the directive
				name, _, _ := strings.Cut(line, "\t")
				names = append(names, name)
			}
		}
		return names
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"node", "show", ""}, []string{"n1", "n2", "n3"}},
		{[]string{"node", "rm", "n"}, []string{"n1", "n2", "n3"}},
		{[]string{"pool", "show", ""}, []string{"local"}},
		{[]string{"image", "ls", "--pool", "lo"}, []string{"local"}},
		{[]string{"pool", "update", "local", "--assign", "n1,"}, []string{"n1,n1", "n1,n2", "n1,n3"}},
		{[]string{"image", "show", ""}, []string{"disk.img"}},
		{[]string{"job", "watch", ""}, []string{m.GetJob().GetId()}},
		{[]string{"token", "revoke", "ci"}, []string{"ci-bot"}},
	} {
		if got := complete(tt.args...); strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("completing quarry %s: %q, want %q", strings.Join(tt.args, " "), got, tt.want)
		}
	}
}
