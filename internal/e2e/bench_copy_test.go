package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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

	// copyTo copies the image into pool; how, when set, gets what the
	// job says it did.
	copyTo := func(pool *quarryv1.StoragePool, how *string) benchVariant {
		var imageID string
		return benchVariant{
			run: func() {
				m := copyImage(t, c.s, src.GetId(), pool.GetId(), "")
				j := waitJob(t, c.s, m.GetJob().GetId(), 2*time.Minute)
				if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
					t.Fatalf("copy %v", j)
				}
				imageID = m.GetImage().GetId()
				if how != nil {
					*how = j.GetMessage()
				}
			},
			after: func() {
				if _, err := c.s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: imageID})); err != nil {
					t.Fatal(err)
				}
			},
		}
	}
	shell := func(script string, args ...string) benchVariant {
		return benchVariant{
			run: func() {
				b, err := exec.CommandContext(t.Context(), "sh", append([]string{"-c", script, "sh"}, args...)...).CombinedOutput()
				if err != nil || !strings.HasPrefix(string(b), sum) {
					t.Fatalf("%s: %v\n%s", script, err, b)
				}
			},
			after: func() { os.Remove(out) },
		}
	}
	var how string
	ts := interleave(runs,
		copyTo(local, &how),
		shell(`cp "$1" "$2" && sha256sum "$2"`, srcFile, out),
		copyTo(remote, nil),
		shell(`"$1" -s -o "$2" "$3" && sha256sum "$2"`, curl, out, f.URL()))
	tLocal, tCp, tRemote, tCurl := ts[0], ts[1], ts[2], ts[3]
	bl, bc, br, bu := slices.Min(tLocal), slices.Min(tCp), slices.Min(tRemote), slices.Min(tCurl)
	fmt.Printf("copy %d MiB (%s)\n", size/mib, how)
	fmt.Printf("  local copy %.2fs; cp + sha256sum %.2fs; ratio %.2f\n", bl.Seconds(), bc.Seconds(), float64(bl)/float64(bc))
	fmt.Printf("  agent to agent over mutual TLS %.2fs; curl -o + sha256sum from the origin %.2fs; ratio %.2f\n",
		br.Seconds(), bu.Seconds(), float64(br)/float64(bu))
	fmt.Printf("  all runs: local %v; cp %v; remote %v; curl %v\n", rounded(tLocal), rounded(tCp), rounded(tRemote), rounded(tCurl))
}
