//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// TestBenchmarkDownload measures a verified download of a 2 GiB image and
// prints the figures with references taken in the same run, against the
// same origin URL. It runs only with QUARRY_BENCH=1 (make bench-download):
// it writes 2 GiB at a time.
//
//   - quarry: DownloadImage → job SUCCEEDED (GetJob polled every 20 ms),
//     through an in-process control plane and a real agent process (with
//     the default checkpoint interval) into a pool on a real directory;
//     the image must be READY with the right sha256. Each run deletes the
//     image first so a new download happens.
//   - references: `curl -s -o FILE URL`, the same followed by
//     `sha256sum FILE` (targets: quarry ≤ 1.10 × curl, and below
//     curl + sha256sum). For scale, two downloads that are on disk when
//     they end, as Quarry's are, without verifying anything: curl followed
//     by `sync FILE`, and curl piped into `dd oflag=direct conv=fsync`
//     (the bytes go to the disk as they arrive, the cheapest way there).
//   - the agent process's peak RSS, VmHWM (target ≤ 64 MiB).
//
// Every variant runs five times; the best counts. Linux only: the agent's
// peak RSS comes from /proc.
func TestBenchmarkDownload(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run (make bench-download)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: it is the reference this benchmark compares with")
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum is not installed: it is part of the reference this benchmark compares with")
	}
	const (
		size   = 2 << 30
		runs   = 5
		within = 90 * time.Second // per download; 2 GiB at ~25 MiB/s
	)

	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "bench", CheckpointEvery: 2 * time.Second})
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	pid := agentPID(t, bin, a.Opts.DataDir())
	mkdir(t, a.Opts.LocalPath("/srv/bench"))
	pool := createPool(t, s, "bench", "/srv/bench", a.NodeID)

	o := origintest.New(t)
	f := o.Add("/bench.img", origintest.Random(size, 7))
	url, sum := f.URL(), f.SHA256() // computed once, before any timing

	out := filepath.Join(t.TempDir(), "curl.img")
	removeOut := func() {
		if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	// A hung reference must not hang the test: each command gets 2 minutes.
	command := func(name string, args ...string) *exec.Cmd {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(ctx, name, args...)
		// Its own process group, all killed on timeout (sh's children too).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		return cmd
	}
	// shell runs script with $1 curl, $2 the output file, $3 the URL.
	shell := func(script string) []byte {
		b, err := command("sh", "-c", script, "sh", curl, out, url).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, b)
		}
		return b
	}
	curlOnly := func() { shell(`"$1" -s -o "$2" "$3"`) }
	curlSum := func() {
		b := shell(`"$1" -s -o "$2" "$3" && sha256sum "$2"`)
		if got, _, _ := strings.Cut(string(b), " "); got != sum {
			t.Fatalf("sha256sum printed %q; want %s", b, sum)
		}
	}
	curlSync := func() { shell(`"$1" -s -o "$2" "$3" && sync "$2"`) }
	curlDirect := func() {
		shell(`"$1" -s "$3" | dd of="$2" bs=1M iflag=fullblock oflag=direct conv=fsync status=none`)
	}
	checkOut := func() {
		if st, err := os.Stat(out); err != nil || st.Size() != size {
			t.Fatalf("curl's file: %v, %v; want %d bytes", st, err, size)
		}
	}

	var imageID string
	quarry := func() {
		start := time.Now()
		m := download(t, s, pool, url, "sha256:"+sum)
		if m.GetJob() == nil {
			t.Fatalf("DownloadImage = %v; want a new job (the previous image was deleted)", m)
		}
		imageID = m.GetImage().GetId()
		for {
			resp, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: m.GetJob().GetId()}))
			if err != nil {
				t.Fatal(err)
			}
			j := resp.Msg.GetJob()
			if st := j.GetState(); st == quarryv1.JobState_JOB_STATE_SUCCEEDED {
				break
			} else if st == quarryv1.JobState_JOB_STATE_FAILED || st == quarryv1.JobState_JOB_STATE_CANCELLED {
				t.Fatalf("job %v", j)
			}
			if time.Since(start) > within {
				t.Fatalf("job not done after %v: %v (%s)", within, j.GetState(), progressOf(j))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	checkImage := func() {
		im := getImage(t, s, imageID)
		if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+sum || im.GetSizeBytes() != size {
			t.Fatalf("image %v; want READY, sha256:%s, %d bytes", im, sum, size)
		}
	}
	deleteImage := func() {
		if imageID == "" {
			return
		}
		if _, err := s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: imageID})); err != nil {
			t.Fatalf("DeleteImage: %v", err)
		}
		imageID = ""
	}
	t.Cleanup(func() { // the pool's temp dir goes anyway; the record too, on failure
		if imageID != "" {
			s.Images.DeleteImage(context.Background(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: imageID}))
		}
	})
	t.Cleanup(func() { os.Remove(out) })

	// Rounds interleave the variants, so drift on the machine hits all
	// of them alike. Each run starts with no dirty pages (sync, untimed),
	// so writeback left by the previous run does not slow the next one.
	var tQuarry, tCurl, tCurlSum, tCurlSync, tCurlDirect []time.Duration
	for range runs {
		syscall.Sync()
		tCurl = append(tCurl, timed(curlOnly))
		checkOut()
		removeOut()

		syscall.Sync()
		tCurlSum = append(tCurlSum, timed(curlSum))
		removeOut()

		syscall.Sync()
		tCurlSync = append(tCurlSync, timed(curlSync))
		checkOut()
		removeOut()

		syscall.Sync()
		tCurlDirect = append(tCurlDirect, timed(curlDirect))
		checkOut()
		removeOut()

		syscall.Sync()
		tQuarry = append(tQuarry, timed(quarry))
		checkImage()
		deleteImage()
	}
	rss := vmHWM(t, pid)

	bq, bc, bcs := slices.Min(tQuarry), slices.Min(tCurl), slices.Min(tCurlSum)
	bcy, bcd := slices.Min(tCurlSync), slices.Min(tCurlDirect)
	gib := float64(size) / (1 << 30)
	ratio := func(ref time.Duration) float64 { return float64(bq) / float64(ref) }
	fmt.Printf("download %.2f GiB: quarry %.2fs (%.2f GiB/s); curl -o %.2fs; curl -o + sha256sum %.2fs\n",
		gib, bq.Seconds(), gib/bq.Seconds(), bc.Seconds(), bcs.Seconds())
	fmt.Printf("  on disk when done, unverified: curl -o + sync %.2fs; curl | dd oflag=direct %.2fs\n", bcy.Seconds(), bcd.Seconds())
	fmt.Printf("  all runs: quarry %v; curl -o %v; curl -o + sha256sum %v; curl -o + sync %v; curl | dd %v\n",
		rounded(tQuarry), rounded(tCurl), rounded(tCurlSum), rounded(tCurlSync), rounded(tCurlDirect))
	fmt.Printf("ratio quarry/curl %.2f (target <= 1.10); quarry/(curl+sha256sum) %.2f (target < 1)\n", ratio(bc), ratio(bcs))
	fmt.Printf("  for scale: quarry/(curl+sync) %.2f; quarry/(curl|dd direct) %.2f; (curl|dd direct)/curl %.2f\n",
		ratio(bcy), ratio(bcd), float64(bcd)/float64(bc))
	fmt.Printf("agent peak RSS %.1f MiB (target <= 64 MiB)\n", float64(rss)/(1<<20))
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// agentPID finds the agent process by its command line: bin with
// --data-dir dataDir, which is unique to the agent. (quarrytest's
// AgentProcess does not expose its PID.)
func agentPID(t *testing.T, bin, dataDir string) int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue // gone meanwhile, or not ours
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if args[0] != bin {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if args[i] == "--data-dir" && args[i+1] == dataDir {
				pid, _ := strconv.Atoi(filepath.Base(d))
				found = append(found, pid)
				break
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d processes run %s with --data-dir %s (%v); want exactly one", len(found), bin, dataDir, found)
	}
	return found[0]
}

// vmHWM returns the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status (err %v)", pid, sc.Err())
	return 0
}
