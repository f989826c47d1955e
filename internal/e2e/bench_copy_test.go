package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
)

// TestBenchmarkCopy prints what a copy costs against the shell doing the
// same: a local copy (reflink or copy_file_range, then the verifying
// read) against `cp && sha256sum`, and a copy between two agents over
// mutual TLS against `curl -o && sha256sum` of the file from the local
// origin. Best of three, interleaved. Run with make bench-copy.
func TestBenchmarkCopy(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run (make bench-copy)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: it is the reference this benchmark compares with")
	}
	const size = 512 * mib
	const runs = 3
	c := copyClusterOf(t, []string{"n1", "n2"}, 0)
	o := origintest.New(t)
	f := o.Add("/bench.img", origintest.Random(size, 31))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	local := c.localPoolOn(t, "local", "/srv/local", "n1")
	remote := c.localPoolOn(t, "remote", "/srv/remote", "n2")
	src := readyImage(t, c, a, f)
	sum := strings.TrimPrefix(src.GetDigest(), "sha256:")
	srcFile := filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/a"), src.GetPath())
	out := filepath.Join(t.TempDir(), "out.img")

	copyTo := func(pool *quarryv1.StoragePool) (time.Duration, string) {
		start := time.Now()
		m := copyImage(t, c.s, src.GetId(), pool.GetId(), "")
		j := waitJob(t, c.s, m.GetJob().GetId(), 2*time.Minute)
		d := time.Since(start)
		if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("copy %v", j)
		}
		if _, err := c.s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: m.GetImage().GetId()})); err != nil {
			t.Fatal(err)
		}
		return d, j.GetMessage()
	}
	shell := func(script string, args ...string) time.Duration {
		start := time.Now()
		b, err := exec.CommandContext(t.Context(), "sh", append([]string{"-c", script, "sh"}, args...)...).CombinedOutput()
		d := time.Since(start)
		if err != nil || !strings.HasPrefix(string(b), sum) {
			t.Fatalf("%s: %v\n%s", script, err, b)
		}
		os.Remove(out)
		return d
	}
	var tLocal, tCp, tRemote, tCurl []time.Duration
	var how string
	for range runs {
		syscall.Sync()
		d, msg := copyTo(local)
		tLocal, how = append(tLocal, d), msg
		syscall.Sync()
		tCp = append(tCp, shell(`cp "$1" "$2" && sha256sum "$2"`, srcFile, out))
		syscall.Sync()
		d, _ = copyTo(remote)
		tRemote = append(tRemote, d)
		syscall.Sync()
		tCurl = append(tCurl, shell(`"$1" -s -o "$2" "$3" && sha256sum "$2"`, curl, out, f.URL()))
	}
	bl, bc, br, bu := slices.Min(tLocal), slices.Min(tCp), slices.Min(tRemote), slices.Min(tCurl)
	fmt.Printf("copy %d MiB (%s)\n", size/mib, how)
	fmt.Printf("  local copy %.2fs; cp + sha256sum %.2fs; ratio %.2f\n", bl.Seconds(), bc.Seconds(), float64(bl)/float64(bc))
	fmt.Printf("  agent to agent over mutual TLS %.2fs; curl -o + sha256sum from the origin %.2fs; ratio %.2f\n",
		br.Seconds(), bu.Seconds(), float64(br)/float64(bu))
	fmt.Printf("  all runs: local %v; cp %v; remote %v; curl %v\n", rounded(tLocal), rounded(tCp), rounded(tRemote), rounded(tCurl))
}
