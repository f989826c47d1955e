//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/origintest"
)

// TestBenchmarkSegmentedDownload measures a download from an origin that
// throttles each connection to 40 MiB/s, as public mirrors do, of a 1 GiB
// image, and prints the figures with references taken in the same run
// against the same URL. It runs only with QUARRY_BENCH=1 (make
// bench-download).
//
//   - quarry: DownloadImage → job SUCCEEDED (GetJob polled every 20 ms)
//     through an in-process control plane and a real agent process with
//     its defaults (4 connections, segments from 64 MiB, checkpoints every
//     2 s): verified against the sha256 while it streams, fsynced, renamed
//     into place; the image must be READY with the right digest.
//   - curl -s -o FILE URL: one stream (target: quarry ≥ 3.5× faster).
//   - aria2c -x4 -s4: the multi-connection reference, which neither
//     verifies nor syncs (target: quarry ≤ 1.1× its time). The benchmark
//     installs the Debian package aria2 with apt-get when aria2c is
//     missing and it runs as root; otherwise that reference is skipped.
//
// Rounds interleave the variants; each runs three times and the best
// counts; every figure is printed.
func TestBenchmarkSegmentedDownload(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run (make bench-download)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: it is the reference this benchmark compares with")
	}
	aria2c := findAria2c(t)
	const (
		size    = 1 << 30
		perConn = 40 << 20
		runs    = 3
		within  = 60 * time.Second // per Quarry download; ~6.4 s expected
	)

	r := startBenchRig(t)
	o := origintest.New(t)
	f := o.Add("/bench.img", origintest.Random(size, 8))
	f.RateLimit(perConn)
	url, sum := f.URL(), f.SHA256() // computed once, before any timing

	dir := t.TempDir()
	out := filepath.Join(dir, "ref.img")
	removeOut := func() {
		for _, p := range []string{out, out + ".aria2"} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(removeOut)
	run := func(name string, args ...string) {
		if b, err := benchCommand(t, name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
	}
	checkOut := func(who string) func() {
		return func() {
			if st, err := os.Stat(out); err != nil || st.Size() != size {
				t.Fatalf("%s's file: %v, %v; want %d bytes", who, st, err, size)
			}
			removeOut()
		}
	}
	quarry := benchVariant{
		run: func() {
			j := r.download(t, url, sum, within)
			if !historyHas(j, "over up to 4 connections") {
				t.Fatalf("job history %v; want the download in segments", j.GetHistory())
			}
		},
		after: func() { r.checkAndDelete(t, sum, size) },
	}
	aria := benchVariant{after: checkOut("aria2c")}
	if aria2c != "" {
		aria.run = func() {
			run(aria2c, "-q", "-x4", "-s4", "--allow-overwrite=true", "--auto-file-renaming=false",
				"-d", dir, "-o", filepath.Base(out), url)
		}
	}
	curlRun := benchVariant{run: func() { run(curl, "-s", "-o", out, url) }, after: checkOut("curl")}

	ts := interleave(runs, quarry, aria, curlRun)
	tQuarry, tAria, tCurl := ts[0], ts[1], ts[2]
	rss := vmHWM(t, r.pid)

	bq, bc := slices.Min(tQuarry), slices.Min(tCurl)
	mibps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	fmt.Printf("segmented download of 1 GiB, origin throttled to %d MiB/s per connection:\n", perConn>>20)
	fmt.Printf("  quarry (4 connections, verified, durable) %.2fs (%.0f MiB/s); curl -o (one stream) %.2fs (%.0f MiB/s)\n",
		bq.Seconds(), mibps(bq), bc.Seconds(), mibps(bc))
	fmt.Printf("  all runs: quarry %v; curl -o %v", rounded(tQuarry), rounded(tCurl))
	if aria2c != "" {
		fmt.Printf("; aria2c -x4 %v", rounded(tAria))
	}
	fmt.Println()
	fmt.Printf("ratio curl/quarry %.2f (target >= 3.5)\n", float64(bc)/float64(bq))
	if aria2c != "" {
		ba := slices.Min(tAria)
		fmt.Printf("  aria2c -x4 %.2fs (%.0f MiB/s)\n", ba.Seconds(), mibps(ba))
		fmt.Printf("ratio quarry/aria2c %.2f (target <= 1.10)\n", float64(bq)/float64(ba))
	} else {
		fmt.Println("ratio quarry/aria2c: not measured (aria2c missing and not installable)")
	}
	fmt.Printf("agent peak RSS %.1f MiB\n", float64(rss)/(1<<20))
}

// findAria2c returns aria2c's path, installing the Debian package aria2
// when it is missing and this runs as root with apt-get; "" when it cannot.
func findAria2c(t *testing.T) string {
	if p, err := exec.LookPath("aria2c"); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		t.Log("aria2c is missing and this is not root: the aria2c reference is skipped (apt-get install aria2)")
		return ""
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Log("aria2c is missing and there is no apt-get: the aria2c reference is skipped")
		return ""
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "aria2")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Logf("apt-get install aria2 failed (%v): the aria2c reference is skipped\n%s", err, b)
		return ""
	}
	p, err := exec.LookPath("aria2c")
	if err != nil {
		t.Log("aria2 was installed but aria2c is not on PATH: the aria2c reference is skipped")
		return ""
	}
	return p
}
