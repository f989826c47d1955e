//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/origintest"
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

	r := startBenchRig(t)
	o := origintest.New(t)
	f := o.Add("/bench.img", origintest.Random(size, 7))
	url, sum := f.URL(), f.SHA256() // computed once, before any timing

	out := filepath.Join(t.TempDir(), "curl.img")
	removeOut := func() {
		if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	// shell runs script with $1 curl, $2 the output file, $3 the URL.
	shell := func(script string) []byte {
		b, err := benchCommand(t, "sh", "-c", script, "sh", curl, out, url).CombinedOutput()
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
		removeOut()
	}
	t.Cleanup(func() { os.Remove(out) })

	ts := interleave(runs,
		benchVariant{run: curlOnly, after: checkOut},
		benchVariant{run: curlSum, after: removeOut},
		benchVariant{run: curlSync, after: checkOut},
		benchVariant{run: curlDirect, after: checkOut},
		benchVariant{
			run:   func() { r.download(t, url, sum, within) },
			after: func() { r.checkAndDelete(t, sum, size) },
		})
	tCurl, tCurlSum, tCurlSync, tCurlDirect, tQuarry := ts[0], ts[1], ts[2], ts[3], ts[4]
	rss := vmHWM(t, r.pid)

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
